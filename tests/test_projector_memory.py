"""What the projector holds between commits (issue 22, docs/memory.md): its Kafka fetches are
bounded (a replay held a whole 64 MB fetch at once), yet a record larger than one fetch's bound
still reaches the fold, since the broker hands over the first record batch of a partition
whole; and the committer lets go of a batch once it is committed (an idle server kept its last
one, up to a million points of Arrow columns)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import weakref
from pathlib import Path

import pyarrow as pa

from runledger.ingest.contract import metric_table
from runledger.projector.consumer import Committer
from runledger.projector.fold import BatchChanges

from runledger.projector import consumer
from runledger.projector.store import Store
from tests.poison_records import Raw, project_all


def test_a_record_larger_than_a_fetch_is_still_folded(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"fetch-{uuid.uuid4().hex[:10]}"
    big = consumer._FETCH_PARTITION_BYTES + (1 << 20)
    assert big < consumer._FETCH_BYTES
    # Undecodable records are rejected with a reason (docs/design.md, invariant 7): each one the
    # projector read shows up as a rejection at its offset, the big one included.
    records = [Raw("small", b"k", b"not an event"), Raw("big", b"k", b"x" * big), Raw("after", b"k", b"nor this")]

    async def project() -> list[tuple[int, int]]:
        store = Store(tmp_path / "read.duckdb")
        try:
            await project_all(kafka_bootstrap, topic, records, store)
            with store.cursor() as cur:
                return cur.execute('SELECT "partition", "offset" FROM rejections ORDER BY "offset"').fetchall()
        finally:
            store.close()

    assert asyncio.run(project()) == [(0, 0), (0, 1), (0, 2)]


def test_the_committer_holds_no_batch_once_it_is_committed(tmp_path: Path) -> None:
    store = Store(tmp_path / "read.duckdb")
    committed = threading.Event()
    committer = Committer(store, "t", lambda *_: committed.set(), lambda e: None)
    try:
        changes = BatchChanges()
        steps = pa.array(range(50_000), pa.int64())
        changes.metrics.add("run-1", pa.Table.from_arrays(
            [pa.array(["loss"] * 50_000), steps.cast(pa.float64()), steps, steps], schema=metric_table.SCHEMA))
        batch = weakref.ref(changes)
        committer.submit(changes, {0: 1}, 1, 50_000)
        del changes
        assert committed.wait(30)
        deadline = time.monotonic() + 10
        while batch() is not None and time.monotonic() < deadline:   # the thread drops it right after reporting
            gc.collect()
            time.sleep(0.01)
        assert batch() is None
        assert store.con.execute("SELECT count(*) FROM metrics").fetchone() == (50_000,)
    finally:
        committer.stop()
        store.close()
