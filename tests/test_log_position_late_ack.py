"""Issue 21: every successful write answer carries X-Runledger-Log-Position (docs/replicas.md),
also one confirmed from the log rather than by the producer's acknowledgement (the writer's
"late ack" path, docs/kafka-outages.md).

In process, with the real broker and a real DuckDB file: the app's own event log really appends
the record, then reports the acknowledgement as lost until the write's deadline passes, which is
what a broker that took a record but whose answer never came back looks like to the writer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from runledger.app import create_app
from runledger.ingest.errors import LogUnavailable
from runledger.settings import Settings

pytestmark = pytest.mark.kafka

MLFLOW = "/api/2.0/mlflow"
HEADER = "X-Runledger-Log-Position"


def _lose_acks(app: Any) -> list[int]:
    """From now on the event log appends each record but answers as if its ack was lost.
    Returns a list counting the appends that really happened."""
    log = app.state.services.writer.log
    real = log.append_stamped
    appended: list[int] = []

    async def ack_lost(events: list[Any], timeout: float | None = None) -> list[tuple[int, int, int | None]]:
        if not appended:                      # the record gets there once; only its ack is lost
            appended.append(len(await real(events, timeout)))
        raise LogUnavailable("The event log (Kafka) did not acknowledge the write: ack lost (test).")

    log.append_stamped = ack_lost
    return appended


def test_a_write_confirmed_from_the_log_answers_with_its_log_position(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(bootstrap_servers=kafka_bootstrap, data_dir=tmp_path / "data",
                        topic=f"test-late-ack-{uuid.uuid4().hex[:10]}", kafka_timeout=1.0, clock_margin_ms=200)
    app = create_app(settings)

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60) as client:
                exp = await client.post(f"{MLFLOW}/experiments/create", json={"name": "late-ack"})
                assert exp.status_code == 200, exp.text
                assert HEADER in exp.headers          # the ordinary path, acknowledged by Kafka
                appended = _lose_acks(app)
                t0 = time.monotonic()
                run = await client.post(f"{MLFLOW}/runs/create", json={"experiment_id": exp.json()["experiment_id"]})
                took = time.monotonic() - t0
                assert run.status_code == 200, run.text
                assert appended == [1] and took >= 1.0, "the write did not go through the late-ack path"
                position = json.loads(run.headers[HEADER])
                before = json.loads(exp.headers[HEADER])
                assert position and all(isinstance(o, int) for o in position.values())
                # at or past the experiment's own record: the run's record was appended after it
                assert all(position.get(p, 0) >= o for p, o in before.items())
                assert sum(position.values()) > sum(before.values())
                # and a read passing it back sees the run
                got = await client.get(f"{MLFLOW}/runs/get", params={"run_id": run.json()["run"]["info"]["run_id"]},
                                       headers={HEADER: run.headers[HEADER]})
                assert got.status_code == 200, got.text

    asyncio.run(scenario())
