"""Issue 11.7: a damaged read model is never served; it is moved aside and rebuilt from the log.

Damage is real: bytes overwritten in the middle of a data block of a stopped server's DuckDB
file, or the file cut in half. On start the server reads every column once, finds the damage,
keeps the file as `runledger.duckdb.corrupt-<time>`, replays the log from offset 0, and answers
exactly as before. At run time, a read that hits a damaged block makes the projector do the same.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import duckdb
import httpx
import pytest

from runledger.ingest.contract.events import Envelope
from runledger.ingest.topic import ensure_topic
from runledger.projector.consumer import Projector
from runledger.projector.integrity import is_corruption
from runledger.projector.store import Store
from tests.conftest import RunledgerServer
from tests.log_tools import append_events, dump_tables, without_offsets
from tests.test_replay import _answers, _populate

STREAM = "/api/runledger/v1/metrics/stream"
POINTS = 60_000


def _stream_points(server: RunledgerServer, run_id: str) -> None:
    for start in range(0, POINTS, 20_000):
        steps = list(range(start, start + 20_000))
        r = httpx.post(f"{server.url}{STREAM}", timeout=60, json={
            "run_id": run_id, "keys": ["big"] * len(steps), "values": [s / 7 for s in steps],
            "timestamps": [1_700_000_000_000 + s for s in steps], "steps": steps})
        assert r.status_code == 200, r.text


def _everything(server: RunledgerServer, exp_ids: list[str], run_ids: list[str]) -> dict[str, Any]:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=60) as api:
        out = _answers(api, exp_ids, run_ids)
        out["big"] = api.get("metrics/get-history", params={"run_id": run_ids[0], "metric_key": "big"}).text
    return out


def _wait_for(server: RunledgerServer, exp_ids: list[str], run_ids: list[str], want: dict[str, Any]) -> None:
    deadline = time.monotonic() + 90
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            got = _everything(server, exp_ids, run_ids)
        except httpx.HTTPError:
            got = {}
        if got == want:
            return
        time.sleep(0.3)
    differing = sorted(k for k in want if got.get(k) != want[k])[:5]
    raise AssertionError(f"answers differ after the rebuild: {differing}\n{server.log_tail()}")


@pytest.fixture(scope="module")
def populated(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("integrity"),
                             f"test-integrity-{uuid.uuid4().hex[:8]}")
    server.start()
    try:
        with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
            exp_ids, run_ids = _populate(api)
        _stream_points(server, run_ids[0])
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/api/runledger/v1/lag", timeout=10).json()["total_lag"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        before = _everything(server, exp_ids, run_ids)
        assert before["big"].count('"key":"big"') == POINTS
    finally:
        server.stop()
    yield server, exp_ids, run_ids, before, without_offsets(dump_tables(str(server.duckdb_path)))


def _metrics_block(path: Path) -> int:
    """File offset of the middle of a block holding metric data (a middle one of them)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        blocks = sorted({r[0] for r in con.execute(
            "SELECT block_id FROM pragma_storage_info('metrics') WHERE block_id >= 0").fetchall()})
        (block_size,) = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()  # type: ignore[misc]
    finally:
        con.close()
    assert len(blocks) >= 3, blocks
    # After the file's three 4 KiB headers, block n starts at n * block_size.
    return 3 * 4096 + blocks[len(blocks) // 2] * block_size + block_size // 2


def _restart_and_check(populated: Any) -> None:
    server, exp_ids, run_ids, before, tables = populated
    aside_before = set(server.data_dir.glob("runledger.duckdb.corrupt-*"))
    server.start()
    try:
        _wait_for(server, exp_ids, run_ids, before)
    finally:
        server.stop()
    assert len(set(server.data_dir.glob("runledger.duckdb.corrupt-*")) - aside_before) == 1
    assert "moved it aside" in server.log_tail()
    assert without_offsets(dump_tables(str(server.duckdb_path))) == tables


def test_bytes_damaged_in_the_middle_of_the_file_are_found_on_start_and_rebuilt(populated: Any,
                                                                                  tmp_path: Path) -> None:
    server = populated[0]
    offset = _metrics_block(server.duckdb_path)
    with open(server.duckdb_path, "r+b") as f:
        f.seek(offset)
        f.write(random.Random(7).randbytes(64))
    # The damage is real and DuckDB opens the file regardless: only reading the block finds it.
    copy = tmp_path / "copy.duckdb"
    shutil.copy(server.duckdb_path, copy)
    con = duckdb.connect(str(copy))
    try:
        with pytest.raises(duckdb.Error, match="Corrupt database file") as info:
            con.execute("SELECT sum(value), sum(step), max(key) FROM metrics").fetchall()
        assert is_corruption(info.value)
    finally:
        con.close()
    _restart_and_check(populated)


def test_a_truncated_file_is_rebuilt(populated: Any) -> None:
    server = populated[0]
    size = server.duckdb_path.stat().st_size
    with open(server.duckdb_path, "r+b") as f:
        f.truncate(size // 2)
    _restart_and_check(populated)


def test_a_deleted_file_is_rebuilt_from_the_log_with_identical_answers(populated: Any) -> None:
    server, exp_ids, run_ids, before, tables = populated
    for suffix in ("", ".wal"):
        Path(f"{server.duckdb_path}{suffix}").unlink(missing_ok=True)
    t0 = time.monotonic()
    server.start()
    try:
        _wait_for(server, exp_ids, run_ids, before)
        print(f"\n[deleted read model] answers identical again {time.monotonic() - t0:.1f} s after the start "
              f"({POINTS} streamed points and the populated runs replayed)")
    finally:
        server.stop()
    assert without_offsets(dump_tables(str(server.duckdb_path))) == tables


def test_a_lock_held_by_another_process_is_not_taken_for_damage(populated: Any) -> None:
    server = populated[0]
    aside = set(server.data_dir.glob("runledger.duckdb.corrupt-*"))
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                               f"c = duckdb.connect({str(server.duckdb_path)!r}); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(duckdb.Error) as info:
            Store(server.duckdb_path)
        assert "lock" in str(info.value) and not is_corruption(info.value)
    finally:
        holder.communicate(b"", timeout=30)
    assert set(server.data_dir.glob("runledger.duckdb.corrupt-*")) == aside
    assert without_offsets(dump_tables(str(server.duckdb_path))) == populated[4]


def test_a_damaged_block_found_by_a_read_at_run_time_starts_a_rebuild(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"test-integrity-live-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex
    n = 400_000  # random values: about a dozen blocks, more than the memory limit set below holds
    rng = random.Random(3)
    events = [Envelope(event_id="exp", type="ExperimentCreated", experiment_id="0", run_id=None, ingest_time=1,
                       user="", payload={"name": "Default", "artifact_location": "a", "artifact_root": "a", "tags": []}),
              Envelope(event_id="run", type="RunCreated", experiment_id="0", run_id=run_id, ingest_time=2, user="",
                       payload={"run_name": "r", "start_time": 1, "user_id": "u", "artifact_uri": "a", "tags": []})]
    for start in range(0, n, 10_000):
        events.append(Envelope(event_id=f"m{start}", type="MetricsLogged", experiment_id="0", run_id=run_id,
                               ingest_time=3, user="", payload={
                                   "keys": ["k"] * 10_000, "values": [rng.random() for _ in range(10_000)],
                                   "timestamps": list(range(start, start + 10_000)),
                                   "steps": list(range(start, start + 10_000))}))
    asyncio.run(ensure_topic(kafka_bootstrap, topic, 1))
    append_events(kafka_bootstrap, topic, events)
    path = tmp_path / "runledger.duckdb"

    def total(store: Store) -> Any:
        with store.cursor() as cur:
            return cur.execute("SELECT count(*), bit_xor(hash(value)), sum(step), sum(timestamp), bit_xor(hash(key)), "
                               "bit_xor(hash(run_id)) FROM metrics").fetchone()

    async def scenario() -> tuple[Any, Any, Any]:
        store = Store(path)
        projector = Projector(store, kafka_bootstrap, topic, lambda verdicts: None)
        await projector.start([0])
        task = asyncio.create_task(projector.run())
        try:
            await _until(lambda: projector.applied_offsets.get(0, 0) >= len(events), task)
            healthy = await asyncio.to_thread(total, store)
            with open(path, "r+b") as f:
                for offset in _live_metrics_blocks(store):
                    f.seek(offset)
                    f.write(os.urandom(64))
            # Make DuckDB drop blocks it holds, so that reads go to the file again (which ones
            # it keeps varies, hence a few tries).
            store.con.execute("SET memory_limit = '2MB'")
            damaged: Any = None
            for _ in range(5):
                try:
                    damaged = await asyncio.to_thread(total, store)
                except duckdb.Error as e:
                    damaged = e
                    assert store.report_if_corrupt(e)  # what the HTTP error handler does with it
                    break
            store.con.execute("RESET memory_limit")
            await _until(lambda: store.corruption is None and projector.applied_offsets.get(0, 0) >= len(events), task)
            return healthy, damaged, await asyncio.to_thread(total, store)
        finally:
            await projector.stop()
            await asyncio.wait_for(task, 10)
            await projector.close()
            store.close()

    healthy, damaged, rebuilt = asyncio.run(scenario())
    assert healthy[0] == n
    assert isinstance(damaged, duckdb.Error) and is_corruption(damaged), damaged
    assert rebuilt == healthy
    assert len(list(tmp_path.glob("runledger.duckdb.corrupt-*"))) == 1


def _live_metrics_blocks(store: Store) -> list[int]:
    store.con.execute("CHECKPOINT")  # the points are in blocks of the file, not only in the WAL
    with store.cursor() as cur:
        blocks = sorted({r[0] for r in cur.execute(
            "SELECT block_id FROM pragma_storage_info('metrics') WHERE block_id >= 0").fetchall()})
        (block_size,) = cur.execute("SELECT block_size FROM pragma_database_size()").fetchone()  # type: ignore[misc]
    assert len(blocks) >= 8, blocks
    return [3 * 4096 + b * block_size + block_size // 2 for b in blocks]


async def _until(done: Any, task: asyncio.Task[None], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if task.done():
            raise AssertionError(f"projector stopped: {task.exception()!r}")
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
