"""The tracking entities' fixed vocabulary, stated once for every part that needs it: run
statuses, the run-name tag, and the wording of "not found" / "not active" answers (MLflow's,
which scripts match on). The fold's verdicts and the dialects' early checks use the same text,
so a caller gets the same message whichever of them refuses first."""

from __future__ import annotations

# MLflow's RunStatus enum: number -> name (the REST API accepts either).
RUN_STATUS_NUMBERS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
RUN_STATUSES = frozenset(RUN_STATUS_NUMBERS.values())
# The tag that mirrors a run's name, as MLflow keeps it.
RUN_NAME_TAG = "mlflow.runName"


def run_not_found(run_id: str | None) -> str:
    return f"Run with id={run_id} not found"


def experiment_not_found(experiment_id: str | None) -> str:
    return f"No Experiment with id={experiment_id} exists"


def model_not_found(model_id: str) -> str:
    return f"Logged model with ID '{model_id}' not found."


def run_not_active(run_id: str, stage: str) -> str:
    return f"The run {run_id} must be in the 'active' state. Current state is {stage}."


def experiment_not_active(experiment_id: str, stage: str) -> str:
    return f"The experiment {experiment_id} must be in the 'active' state. Current state is {stage}."
