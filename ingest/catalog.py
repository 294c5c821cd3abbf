"""What ingest needs to read before it writes, as an interface the composition root fills in.

Ingest never imports the projector or the query side; `runledger.app` passes an object that
answers these questions from the read model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ExperimentRef:
    experiment_id: str
    lifecycle_stage: str
    artifact_location: str


@dataclass(frozen=True, slots=True)
class RunRef:
    run_id: str
    experiment_id: str
    lifecycle_stage: str             # the run's own stage
    experiment_lifecycle_stage: str  # a deleted experiment makes its runs read-only


class Catalog(Protocol):
    def experiment(self, experiment_id: str) -> ExperimentRef | None: ...

    def run(self, run_id: str) -> RunRef | None: ...

    def run_ids(self, experiment_id: str, *, lifecycle_stage: str, started_at_or_before: int | None = None,
                deleted_at_or_after: int | None = None, limit: int | None = None) -> list[str]:
        """Runs of an experiment in the given (own) lifecycle stage, oldest first."""
        ...

    def run_info(self, run_id: str) -> dict[str, Any]:
        """The MLflow RunInfo JSON of an existing run."""
        ...

    def run_json(self, run_id: str) -> dict[str, Any]:
        """The MLflow Run JSON ({info, data, inputs, outputs}) of an existing run."""
        ...


@dataclass(frozen=True, slots=True)
class ModelRef:
    model_id: str
    experiment_id: str
    lifecycle_stage: str


class ModelCatalog(Protocol):
    """What the model endpoints read before and after they write (filled in by the composition root)."""

    def logged_model(self, model_id: str) -> ModelRef | None:
        """The model, deleted or not, or None."""
        ...

    def logged_model_json(self, model_id: str) -> dict[str, Any]:
        """The MLflow LoggedModel JSON ({info, data}) of an existing model, deleted or not."""
        ...
