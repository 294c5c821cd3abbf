"""Ingest's pre-write questions (ingest.catalog.Catalog) answered from the read model."""

from __future__ import annotations

from typing import Any

from runledger.ingest.catalog import ExperimentRef, RunRef
from runledger.projector.fold_cache import FoldCache
from runledger.projector.store import Store
from runledger.query import reader
from runledger.query.run_info import run_info_json


class ReadModelCatalog:
    """Answers ingest's pre-write questions: from the projector's fold cache when it holds the
    answer (the latest folded state, no query), else from the DuckDB read model."""

    def __init__(self, store: Store, latest_table: str, cache: FoldCache | None = None) -> None:
        self.store = store
        self.latest_table = latest_table
        self.cache = cache

    def experiment(self, experiment_id: str) -> ExperimentRef | None:
        if self.cache is not None and self.cache.experiments is not None:
            exp = self.cache.experiments.get(experiment_id)
            return None if exp is None else ExperimentRef(exp.experiment_id, exp.lifecycle_stage,
                                                          exp.artifact_location)
        with self.store.cursor() as cur:
            row = cur.execute("SELECT experiment_id, lifecycle_stage, artifact_location FROM experiments "
                              "WHERE experiment_id = ?", [experiment_id]).fetchone()
        return None if row is None else ExperimentRef(*row)

    def run(self, run_id: str) -> RunRef | None:
        entry = self.cache.runs.get(run_id) if self.cache is not None else None
        if entry is not None:
            exp = self.experiment(entry.row.experiment_id) if entry.row is not None else None
            if entry.row is None or exp is None:
                return None
            return RunRef(run_id, entry.row.experiment_id, entry.row.lifecycle_stage, exp.lifecycle_stage)
        with self.store.cursor() as cur:
            ref = reader.run_ref(cur, run_id)
        return None if ref is None else RunRef(run_id, *ref)

    def run_info(self, run_id: str) -> dict[str, Any]:
        entry = self.cache.runs.get(run_id) if self.cache is not None else None
        if entry is not None and entry.row is not None:
            exp = self.experiment(entry.row.experiment_id)
            deleted = entry.row.lifecycle_stage == "deleted" or (exp is not None and exp.lifecycle_stage == "deleted")
            return run_info_json(entry.row, "deleted" if deleted else "active")
        return self.run_json(run_id)["info"]

    def run_ids(self, experiment_id: str, *, lifecycle_stage: str, started_at_or_before: int | None = None,
                deleted_at_or_after: int | None = None, limit: int | None = None) -> list[str]:
        sql = "SELECT run_id FROM runs WHERE experiment_id = ? AND lifecycle_stage = ?"
        params: list[Any] = [experiment_id, lifecycle_stage]
        if started_at_or_before is not None:
            sql, params = sql + " AND start_time <= ?", [*params, started_at_or_before]
        if deleted_at_or_after is not None:
            sql, params = sql + " AND deleted_time >= ?", [*params, deleted_at_or_after]
        sql += " ORDER BY start_time, run_id"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        with self.store.cursor() as cur:
            return [r[0] for r in cur.execute(sql, params).fetchall()]

    def run_json(self, run_id: str) -> dict[str, Any]:
        with self.store.cursor() as cur:
            run = reader.get_run(cur, run_id, self.latest_table)
        assert run is not None, f"run {run_id} was applied but is not readable"
        return run
