"""The projector's Kafka fetches are bounded (issue 22, docs/memory.md: a replay held a whole
64 MB fetch at once), yet a record larger than one fetch's bound still reaches the fold: the
broker hands over the first record batch of a partition whole, whatever its size."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from runledger.ingest.topic import ensure_topic
from runledger.projector import consumer
from runledger.projector.consumer import Projector
from runledger.projector.store import Store
from tests.poison_records import Raw, produce


def test_a_record_larger_than_a_fetch_is_still_folded(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"fetch-{uuid.uuid4().hex[:10]}"
    big = consumer._FETCH_PARTITION_BYTES + (1 << 20)
    assert big < consumer._FETCH_BYTES
    # Undecodable records are rejected with a reason (docs/design.md, invariant 7): each one the
    # projector read shows up as a rejection at its offset, the big one included.
    records = [Raw("small", b"k", b"not an event"), Raw("big", b"k", b"x" * big), Raw("after", b"k", b"nor this")]

    async def project() -> list[tuple[int, int]]:
        partitions = await ensure_topic(kafka_bootstrap, topic, 1)
        await produce(kafka_bootstrap, topic, records)
        store = Store(tmp_path / "read.duckdb")
        projector = Projector(store, kafka_bootstrap, topic, lambda verdicts: None)
        await projector.start(partitions)
        task = asyncio.create_task(projector.run())
        try:
            deadline = time.monotonic() + 30
            while projector.applied_offsets.get(0, 0) < len(records):
                assert time.monotonic() < deadline and not task.done(), task.done() and task.exception()
                await asyncio.sleep(0.05)
            with store.cursor() as cur:
                return cur.execute('SELECT "partition", "offset" FROM rejections ORDER BY "offset"').fetchall()
        finally:
            await projector.stop()
            await asyncio.wait_for(task, 10)
            await projector.close()
            store.close()

    assert asyncio.run(project()) == [(0, 0), (0, 1), (0, 2)]
