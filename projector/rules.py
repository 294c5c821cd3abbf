"""MLflow's tracking rules that need more than a line, each stated once."""

from __future__ import annotations

import math

from projector.rows import LatestPoint

RUN_NAME_TAG = "mlflow.runName"
RUN_STATUSES = frozenset({"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"})


def newer(rule: str, new: LatestPoint, old: LatestPoint) -> bool:
    """Whether `new` replaces `old` as a run's latest value of a metric key.

    rule "timestamp" (the API reference's contract): greater timestamp wins, ties go to the
    greater value. rule "step" (MLflow's OSS SQL store): compare (step, timestamp, value).

    NaN, as MLflow's SQL store behaves: it sanitizes a NaN to value 0 (with an is_nan flag)
    before comparing, for the incoming point and the stored latest alike. So on a tie of the
    other fields a NaN beats a negative value and loses to a positive one, and a point equal
    to the latest does not replace it. Deciding this from the stored form keeps the result
    independent of how the log is cut into batches.
    """
    if rule == "step":
        new_key, old_key = (new.step, new.timestamp), (old.step, old.timestamp)
    else:
        new_key, old_key = (new.timestamp,), (old.timestamp,)
    if new_key != old_key:
        return new_key > old_key
    new_value = 0.0 if math.isnan(new.value) else new.value
    old_value = 0.0 if math.isnan(old.value) else old.value
    return new_value > old_value


def param_conflict_message(run_id: str, key: str, old: str, new: str) -> str:
    return (f"Changing param values is not allowed. Param with key='{key}' was already logged "
            f"with value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'.")
