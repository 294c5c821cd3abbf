"""A run's MLflow `RunInfo` JSON from its row (the read model's and the fold cache's shape)."""

from __future__ import annotations

from typing import Any

from runledger.projector.rows import RunRow


def run_info_json(row: RunRow, lifecycle_stage: str) -> dict[str, Any]:
    """`lifecycle_stage` is the effective one: 'deleted' if the run or its experiment is."""
    return info_json(row.run_id, row.run_name, row.experiment_id, row.user_id, row.status, row.start_time,
                     row.end_time, row.artifact_uri, lifecycle_stage)


def info_json(run_id: str, run_name: str | None, experiment_id: str | None, user_id: str | None,
              status: str | None, start_time: int | None, end_time: int | None, artifact_uri: str | None,
              lifecycle_stage: str) -> dict[str, Any]:
    """MLflow's RunInfo: unset fields omitted, except user_id, which is "" when unknown."""
    info = {"run_id": run_id, "run_uuid": run_id, "run_name": run_name, "experiment_id": experiment_id,
            "user_id": user_id, "status": status, "start_time": start_time, "end_time": end_time,
            "artifact_uri": artifact_uri, "lifecycle_stage": lifecycle_stage}
    out = {k: v for k, v in info.items() if v is not None}
    out.setdefault("user_id", "")
    return out
