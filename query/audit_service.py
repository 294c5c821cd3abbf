"""What the audit room (runledger.dialects.native.audit) reads through: the trail, the past
folded again from the log, the live tail and the read model's checksums. Dialects never touch
the projector, its store or Kafka directly; this service holds them."""

from __future__ import annotations

import asyncio
from typing import Any

from runledger.projector import replay
from runledger.projector.log_reader import LogReader
from runledger.projector.store import Store
from runledger.query import as_of, audit_trail, reader
from runledger.query.checkpoints import Checkpointer
from runledger.query.read_service import ReadService
from runledger.query.tail import TailHub


class AuditService:
    def __init__(self, store: Store, reads: ReadService, tail_hub: TailHub, bootstrap_servers: str,
                 topic: str, checkpointer: Checkpointer | None = None) -> None:
        self._store = store
        self.reads = reads
        self.tail_hub = tail_hub
        self.topic = topic
        # Started here, stopped in close(): it writes to the store, which closes after us.
        self.checkpointer = checkpointer
        if checkpointer is not None:
            checkpointer.start()
        # Its own consumer, started on first use: as-of reads and diffs read records back by position.
        self._log = LogReader(bootstrap_servers, topic)

    async def close(self) -> None:
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)
        await self._log.close()

    def trail(self, **kwargs: Any) -> dict[str, Any]:
        with self.reads.cursor() as cur:
            return audit_trail.trail(cur, **kwargs)

    def entries_after(self, cursor: dict[int, int], *, run_id: str | None, experiment_id: str | None,
                      limit: int) -> list[dict[str, Any]]:
        with self.reads.cursor() as cur:
            return audit_trail.entries_after(cur, cursor, run_id=run_id, experiment_id=experiment_id, limit=limit)

    def run_now(self, run_id: str) -> dict[str, Any] | None:
        with self.reads.cursor() as cur:
            found = reader.get_run(cur, run_id, self.reads.latest_table)
        return found if isinstance(found, dict) or found is None else None

    async def run_as_of(self, run_id: str, moment: as_of.Moment, *, shortcuts: bool = True,
                        basis: dict[str, Any] | None = None) -> dict[str, Any]:
        return await as_of.run_as_of(self._store, self._log, run_id, moment, self.reads.latest_table,
                                     shortcuts=shortcuts, basis=basis)

    async def metric_history_as_of(self, run_id: str, key: str, moment: as_of.Moment, max_results: int | None,
                                   page_token: str | None) -> dict[str, Any]:
        return await as_of.metric_history_as_of(self._store, self._log, run_id, key, moment, max_results,
                                                page_token)

    def artifacts_now(self, run_id: str) -> list[dict[str, Any]]:
        with self.reads.cursor() as cur:
            return as_of.run_artifacts(cur, run_id)

    async def artifacts_as_of(self, run_id: str, moment: as_of.Moment) -> list[dict[str, Any]]:
        return await as_of.artifacts_as_of(self._store, self._log, run_id, moment)

    async def run_diff(self, run_id: str, start: as_of.Moment, end: as_of.Moment) -> dict[str, Any]:
        return await as_of.run_diff(self._store, self._log, run_id, start, end, self.reads.latest_table)

    def checksums(self) -> dict[str, Any]:
        """Every table's row count and checksum with the offsets they reflect, in one snapshot."""
        with self.reads.cursor() as cur:
            return replay.snapshot(cur, self.topic)
