"""`runledger replay` and `runledger verify` against a real broker and real servers: a rebuild
answers as the live server did (rewinds included), `--until` gives the world as it was, and
verify passes on an honest read model and fails on one altered behind its back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from tests.conftest import ROOT, RunledgerServer

NATIVE = "/api/runledger/v1"


def _cli(server: RunledgerServer, *args: str, data_dir: Path | None = None, **more_env: str
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS": server.bootstrap, "RUNLEDGER_TOPIC": server.topic,
           "RUNLEDGER_DATA_DIR": str(data_dir or server.data_dir), "RUNLEDGER_PORT": str(server.port), **more_env}
    return subprocess.run([sys.executable, "-m", "runledger.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _reads(url: str, run_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=60) as c:
        mlflow = "/api/2.0/mlflow"
        return {
            "run": c.get(f"{mlflow}/runs/get", params={"run_id": run_id}).json(),
            "loss": c.get(f"{mlflow}/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"}).json(),
            "trail": c.get(f"{NATIVE}/runs/{run_id}/events").json(),
        }


def test_replay_and_verify(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    api = httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=60)
    exp = api.post("/experiments/create", json={"name": "replayed"}).json()["experiment_id"]
    run_id = api.post("/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    api.post("/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.1"})
    api.post("/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.9"})  # rejected
    api.post("/runs/log-batch", json={"run_id": run_id, "metrics": [
        {"key": "loss", "value": 1.0 / (s + 1), "timestamp": 1000 + s, "step": s} for s in range(100)]})
    time.sleep(0.01)
    before_rewind = time.time_ns() // 1_000_000
    time.sleep(0.01)
    rewound = httpx.post(f"{server.url}{NATIVE}/runs/{run_id}/rewind", json={"step": 49})
    assert rewound.status_code == 200, rewound.text
    api.post("/runs/log-batch", json={"run_id": run_id, "metrics": [
        {"key": "loss", "value": 2.0, "timestamp": 900 + s, "step": s} for s in range(50, 60)]})
    api.post("/runs/set-tag", json={"run_id": run_id, "key": "done", "value": "yes"})
    live = _reads(server.url, run_id)
    assert [m["step"] for m in live["loss"]["metrics"]] == sorted(list(range(60)), key=lambda s: (
        1000 + s if s < 50 else 900 + s, s))
    diff_params = {"from": before_rewind, "to": time.time_ns() // 1_000_000 + 1}
    live_diff = httpx.get(f"{server.url}{NATIVE}/runs/{run_id}/diff", params=diff_params).json()

    # verify while the server runs (it answers the checksums of one snapshot).
    online = _cli(server, "verify")
    assert online.returncode == 0, online.stdout + online.stderr
    assert "verify passed" in online.stdout and "metrics" in online.stdout
    # ... and says where its time went, phase by phase (the bench shows this line).
    [split] = [line for line in online.stdout.splitlines() if line.startswith("time ")]
    assert all(f" {phase} " in split for phase in ("start-up", "imports", "replay", "checksums", "tear-down"))
    server.stop()

    # A full replay into a new folder, served: every read answers as before, rewind included.
    rebuilt_dir = tmp_path / "rebuilt"
    replayed = _cli(server, "replay", "--to", str(rebuilt_dir))
    assert replayed.returncode == 0, replayed.stderr
    assert "events/s" not in replayed.stdout and "/s)" in replayed.stderr and "ETA" in replayed.stderr
    again = _cli(server, "replay", "--to", str(rebuilt_dir))
    assert again.returncode == 2 and "exists" in again.stderr
    rebuilt = make_server(topic=server.topic, data_dir=rebuilt_dir)
    assert _reads(rebuilt.url, run_id) == live
    assert httpx.get(f"{rebuilt.url}{NATIVE}/runs/{run_id}/diff", params=diff_params).json() == live_diff
    rebuilt.stop()

    # --until: the world before the rewind.
    past_dir = tmp_path / "past"
    assert _cli(server, "replay", "--to", str(past_dir), "--until", str(before_rewind)).returncode == 0
    with duckdb.connect(str(past_dir / "runledger.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), max(step) FROM metrics WHERE run_id = ?", [run_id]).fetchone() == (100, 99)
        assert con.execute("SELECT count(*) FROM tags WHERE key = 'done'").fetchone() == (0,)
    position_dir = tmp_path / "position"
    trail = live["trail"]["events"]
    at = _cli(server, "replay", "--to", str(position_dir), "--until-position", trail[1]["position"])
    assert at.returncode == 0, at.stderr
    with duckdb.connect(str(position_dir / "runledger.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM params WHERE run_id = ?", [run_id]).fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM metrics WHERE run_id = ?", [run_id]).fetchone() == (0,)

    # verify from the file (server stopped): passes, then fails once a row is altered behind its back.
    offline = _cli(server, "verify")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    with duckdb.connect(str(server.duckdb_path)) as con:
        con.execute("UPDATE params SET value = 'tampered' WHERE run_id = ?", [run_id])
    tampered = _cli(server, "verify")
    assert tampered.returncode == 1, tampered.stdout
    lines = {line.split()[0]: line for line in tampered.stdout.splitlines() if line.strip()}
    assert "DIFFERENT" in lines["params"] and "DIFFERENT" not in lines["metrics"]
    assert "verify FAILED: 1 table(s) differ from the log: params" in tampered.stdout
    assert "rebuilt in memory" in tampered.stdout
    # A read model too large for the memory limit is rebuilt in a file: the same verdict.
    in_a_file = _cli(server, "verify", RUNLEDGER_DUCKDB_MEMORY_LIMIT="64KiB")
    assert in_a_file.returncode == 1 and "rebuilt in a file" in in_a_file.stdout, in_a_file.stdout
    assert "verify FAILED: 1 table(s) differ from the log: params" in in_a_file.stdout


def test_verify_and_replay_processes_keep_pandas_and_numpy_out_and_arrow_still_works() -> None:
    # The replay and verify commands never use pandas or NumPy (runledger.tool_process):
    # importing either fails at once, and pyarrow and DuckDB work without them.
    code = ("import sys; from runledger import tool_process; tool_process.lean()\n"
            "import duckdb, pyarrow as pa, pyarrow.compute as pc\n"
            "t = pa.table({'a': [1.0, float('nan')]})\n"
            "assert t.num_rows == 2 and pc.sum(pc.fill_null(t['a'], 0)).is_valid\n"
            "assert duckdb.connect().execute('SELECT count(*) FROM t').fetchone() == (2,)\n"
            "for name in ('pandas', 'numpy'):\n"
            "    try:\n        __import__(name)\n    except ModuleNotFoundError:\n"
            "        print('absent', name in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["absent False", "absent False"]


def test_checksums_of_all_tables_in_one_statement_equal_each_tables_own_and_see_a_changed_row() -> None:
    from runledger.projector.replay import checksums

    con = duckdb.connect()
    con.execute("CREATE TABLE a (k VARCHAR, v DOUBLE)")
    con.execute("CREATE TABLE b (n BIGINT)")
    con.execute("CREATE TABLE empty (x INT)")
    con.execute("INSERT INTO a VALUES ('x', 1.5), ('y', 'NaN'), (NULL, NULL)")
    con.execute("INSERT INTO b SELECT range FROM range(1000)")
    own = {name: con.execute(f'SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM "{name}" t').fetchone()
           for name in ("a", "b", "empty")}
    assert checksums(con) == {name: (int(r), int(c)) for name, (r, c) in own.items()}
    before = checksums(con)
    con.execute("UPDATE b SET n = n + 1 WHERE n = 7")
    after = checksums(con)
    assert after["b"] != before["b"] and after["a"] == before["a"] and after["empty"] == (0, 0)


def test_a_topics_partitions_come_from_one_request_and_a_missing_topic_is_none(kafka_bootstrap: str) -> None:
    import asyncio
    import uuid

    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    from runledger.ingest.topic import ensure_topic, partitions_of

    async def check() -> None:
        topic, missing = f"test-parts-{uuid.uuid4().hex[:8]}", f"test-missing-{uuid.uuid4().hex[:8]}"
        await ensure_topic(kafka_bootstrap, topic, 3)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            assert await partitions_of(consumer, topic) == [0, 1, 2]
            assert await partitions_of(consumer, missing) is None
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            assert missing not in await admin.list_topics()  # asking did not create it
        finally:
            await admin.close()
    asyncio.run(check())
