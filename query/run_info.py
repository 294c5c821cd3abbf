"""A run's MLflow `RunInfo` JSON from its row (the read model's and the fold cache's shape)."""

from __future__ import annotations

from typing import Any

from projector.rows import RunRow


def run_info_json(row: RunRow, lifecycle_stage: str) -> dict[str, Any]:
    """`lifecycle_stage` is the effective one: 'deleted' if the run or its experiment is."""
    info = {"run_id": row.run_id, "run_uuid": row.run_id, "run_name": row.run_name,
            "experiment_id": row.experiment_id, "user_id": row.user_id or "", "status": row.status,
            "start_time": row.start_time, "end_time": row.end_time, "artifact_uri": row.artifact_uri,
            "lifecycle_stage": lifecycle_stage}
    return {k: v for k, v in info.items() if v is not None}
