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


def latest_candidates(keys: list[str], values: list[float], timestamps: list[int],
                      steps: list[int]) -> dict[str, dict[str, int]]:
    """For each rule, the index of each key's best point among these points: the first point
    with the greatest sort key ((timestamp, value) or (step, timestamp, value), NaN as 0).

    Folding points one by one with `newer` keeps exactly this point (strictly greater wins, so
    the first of equal points stays), which is why comparing only it with the stored latest is
    the same as comparing every point: one `newer` call per key instead of one per point.
    """
    by_ts: dict[str, int] = {}
    by_step: dict[str, int] = {}
    ts_key: dict[str, tuple[int, float]] = {}
    step_key: dict[str, tuple[int, int, float]] = {}
    for i, (k, v, t, s) in enumerate(zip(keys, values, timestamps, steps)):
        v0 = 0.0 if v != v else v  # NaN compares as 0
        a = (t, v0)
        cur = ts_key.get(k)
        if cur is None or a > cur:
            ts_key[k] = a
            by_ts[k] = i
        b = (s, t, v0)
        cur_b = step_key.get(k)
        if cur_b is None or b > cur_b:
            step_key[k] = b
            by_step[k] = i
    return {"timestamp": by_ts, "step": by_step}


def param_conflict_message(run_id: str, key: str, old: str, new: str) -> str:
    return (f"Changing param values is not allowed. Param with key='{key}' was already logged "
            f"with value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'.")
