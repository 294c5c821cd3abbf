"""The reader as the dialect rooms see it: cursors on the read model that see every write already
answered, the configured latest-metric rule, the rendered-run cache, paged-search snapshots and
the projector's progress. Dialects never touch the projector or its DuckDB store directly."""

from __future__ import annotations

import contextlib
from typing import Iterator

import duckdb

from runledger.ingest.errors import InternalError

from runledger.projector.consumer import Projector
from runledger.projector.store import ReadModelDamaged, Store
from runledger.query.history_buckets import BucketCache
from runledger.query.run_cache import RunCache
from runledger.query.search_cursors import SearchCursors


class ReadService:
    def __init__(self, store: Store, projector: Projector, *, latest_table: str, run_cache: RunCache,
                 search_cursors: SearchCursors, bucket_cache: BucketCache | None = None) -> None:
        self._store = store
        self._projector = projector
        self.latest_table = latest_table
        self.run_cache = run_cache
        self.search_cursors = search_cursors
        self.bucket_cache = bucket_cache if bucket_cache is not None else BucketCache()   # answers of metrics/history-buckets

    @contextlib.contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor that sees every write whose verdict was already given out (read-your-writes).

        DuckDB's errors stop here: a query failing on the read model is our fault, never the
        caller's input (readers validate that first), so it becomes an InternalError whose text
        is logged, not sent."""
        cur = self._store.cursor()
        try:
            yield cur
        except duckdb.Error as e:
            if self._store.report_if_corrupt(e):  # the projector moves the file aside and rebuilds it
                raise ReadModelDamaged("The read model is damaged and is being rebuilt from the log; "
                                       "retry shortly.") from e
            raise InternalError(f"read model query failed: {type(e).__name__}") from e
        finally:
            cur.close()

    def open_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for a streamed answer, which outlives the handler: the caller closes it."""
        return self._store.cursor()

    def streamed_read_failed(self, exc: BaseException) -> None:
        """A streamed answer failed after its status was sent: if the file is damaged, this
        still starts the rebuild that `cursor` would have started."""
        self._store.report_if_corrupt(exc)

    async def lag(self) -> dict[int, tuple[int, int]]:
        """Per partition: (log end offset, next offset the projector will apply)."""
        return await self._projector.lag()
