"""Row types of the read model, as the fold sees them (one frozen dataclass per table row)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int
    deleted_time: int | None


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    lifecycle_stage: str
    deleted_time: int | None
    artifact_uri: str


@dataclass(frozen=True, slots=True)
class LatestPoint:
    """The value a run shows for a metric key; `value` may be NaN."""

    value: float
    timestamp: int
    step: int


@dataclass(frozen=True, slots=True)
class LoggedModelRow:
    """An MLflow 3.x logged model; `status` is the proto enum name (LOGGED_MODEL_PENDING, ...)."""

    model_id: str
    experiment_id: str
    name: str
    artifact_uri: str
    creation_timestamp_ms: int
    last_updated_timestamp_ms: int
    status: str
    lifecycle_stage: str
    model_type: str
    source_run_id: str
    status_message: str | None
