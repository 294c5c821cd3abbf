"""POST|GET /api/runledger/v1/sql against a real server: answer shapes, formats, caps and limits,
and that a long SQL query leaves the projector and the MLflow endpoints working."""

from __future__ import annotations

import io
import statistics
import threading
import time
import uuid
from typing import Any, Iterator

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import RunledgerServer

pytestmark = pytest.mark.kafka

# Work DuckDB cannot shortcut: 10^12 pairs through a filter (minutes on any machine).
RUNAWAY = "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE (a.range * 7 + b.range) % 1009 = 3"


def _seed(url: str, runs: int = 3, steps: int = 10) -> list[str]:
    with httpx.Client(base_url=f"{url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": f"sql-{uuid.uuid4().hex}"}).json()["experiment_id"]
        ids = []
        for r in range(runs):
            run = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
            points = [{"key": "loss", "value": (r + 1) / (s + 1), "timestamp": 1_700_000_000_000 + s, "step": s}
                      for s in range(steps)]
            body = {"run_id": run, "metrics": points, "params": [{"key": "lr", "value": str(r)}]}
            assert api.post("runs/log-batch", json=body).status_code == 200
            ids.append(run)
    return ids


@pytest.fixture(scope="module")
def rl(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/runledger/v1", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def runs(server: RunledgerServer) -> list[str]:
    return _seed(server.url)


def _in(runs: list[str]) -> str:
    return "(" + ", ".join(f"'{r}'" for r in runs) + ")"


def test_json_answer_shape(rl: httpx.Client, runs: list[str]) -> None:
    r = rl.post("sql", json={"query": f"SELECT run_id, max(value) AS worst, count(*) AS n FROM metrics "
                                      f"WHERE run_id IN {_in(runs)} GROUP BY run_id ORDER BY worst"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == [{"name": "run_id", "type": "VARCHAR"}, {"name": "worst", "type": "DOUBLE"},
                               {"name": "n", "type": "BIGINT"}]
    assert body["rows"] == [[runs[0], 1.0, 10], [runs[1], 2.0, 10], [runs[2], 3.0, 10]]
    assert body["row_count"] == 3 and body["truncated"] is False and body["elapsed_ms"] > 0
    positions = body["log_position"]
    # every partition of the topic (4 by default), even one nothing was applied from yet
    assert sorted(positions) == ["0", "1", "2", "3"]
    assert all(isinstance(v, int) and v >= 0 for v in positions.values()) and sum(positions.values()) > 0
    # The position and the rows come from one snapshot: every event before the offsets, and no
    # other, is in the `events` view of the same answer.
    counted = rl.post("sql", json={"query": "SELECT count(*) FROM events"}).json()
    assert sum(counted["log_position"].values()) == counted["rows"][0][0]


def test_json_row_cap_sets_truncated(rl: httpx.Client, runs: list[str]) -> None:
    q = f"SELECT * FROM metrics WHERE run_id IN {_in(runs)} ORDER BY run_id, step"
    r = rl.post("sql", json={"query": q, "max_rows": 7}).json()
    assert r["row_count"] == 7 and r["truncated"] is True
    exact = rl.post("sql", json={"query": q, "max_rows": 30}).json()
    assert exact["row_count"] == 30 and exact["truncated"] is False


def test_nan_and_timestamps_in_json(rl: httpx.Client) -> None:
    r = rl.post("sql", json={"query": "SELECT 'nan'::DOUBLE AS x, 'inf'::DOUBLE AS y, "
                                      "make_timestamp(1700000000000000) AS t"}).json()
    assert r["rows"] == [["NaN", "Infinity", "2023-11-14T22:13:20"]]
    assert [c["type"] for c in r["columns"]] == ["DOUBLE", "DOUBLE", "TIMESTAMP"]


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "arrow", "parquet"])
def test_streamed_formats_carry_the_same_rows(rl: httpx.Client, runs: list[str], fmt: str) -> None:
    q = f"SELECT run_id, step, value FROM metrics WHERE run_id IN {_in(runs)} ORDER BY run_id, step"
    expected = rl.post("sql", json={"query": q}).json()["rows"]
    r = rl.post("sql", json={"query": q, "format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["x-runledger-log-position"].startswith("{")
    if fmt == "csv":
        lines = r.text.strip().split("\n")
        assert lines[0] == '"run_id","step","value"'
        got = [[a.strip('"'), int(b), float(c)] for a, b, c in (line.split(",") for line in lines[1:])]
    elif fmt == "ndjson":
        import orjson
        got = [list(orjson.loads(line).values()) for line in r.content.splitlines()]
    elif fmt == "arrow":
        got = [list(row.values()) for row in pa.ipc.open_stream(r.content).read_all().to_pylist()]
    else:
        got = [list(row.values()) for row in pq.read_table(io.BytesIO(r.content)).to_pylist()]
    assert got == expected


def test_get_downloads_csv_and_parquet(rl: httpx.Client, runs: list[str]) -> None:
    q = f"SELECT run_id FROM runs WHERE run_id IN {_in(runs)} ORDER BY run_id"
    csv = rl.get("sql", params={"query": q, "format": "csv"})
    assert csv.headers["content-disposition"] == 'attachment; filename="runledger-query.csv"'
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.split() == ['"run_id"', *[f'"{r}"' for r in sorted(runs)]]
    parquet = rl.get("sql", params={"query": q, "format": "parquet"})
    assert parquet.headers["content-disposition"].endswith('.parquet"')
    assert pq.read_table(io.BytesIO(parquet.content)).column("run_id").to_pylist() == sorted(runs)


def test_bad_requests(rl: httpx.Client) -> None:
    for body, word in (({"query": "SELECT 1", "format": "xml"}, "format"), ({}, "query"),
                       ({"query": "SELECT 1", "max_rows": 0}, "max_rows"),
                       ({"query": "SELECT nope FROM runs"}, "nope")):
        r = rl.post("sql", json=body)
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
        assert word in r.json()["message"]


def test_openapi_documents_the_endpoint(server: RunledgerServer) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    post = doc["paths"]["/api/runledger/v1/sql"]["post"]
    assert post["requestBody"]["content"]["application/json"]["examples"]
    assert "application/vnd.apache.arrow.stream" in post["responses"]["200"]["content"]
    assert "get" in doc["paths"]["/api/runledger/v1/sql"]


# ----- limits, on servers of their own

def test_byte_cap_truncates_streams(make_server) -> None:
    s = make_server(RUNLEDGER_SQL_MAX_MB="1")
    with httpx.Client(base_url=f"{s.url}/api/runledger/v1", timeout=60) as rl:
        q = "SELECT range AS n, 'padding-' || range AS s FROM range(2000000)"
        arrow = rl.post("sql", json={"query": q, "format": "arrow"})
        reader = pa.ipc.open_stream(arrow.content)
        batches = []
        metadata = None
        while True:
            try:
                batch, metadata = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            batches.append(batch)
        rows = sum(b.num_rows for b in batches)
        assert 0 < rows < 2_000_000
        assert metadata is not None and b"byte limit" in metadata[b"runledger.truncated"]
        csv = rl.post("sql", json={"query": q, "format": "csv"})
        assert csv.text.rstrip("\n").split("\n")[-1].startswith("# runledger.truncated:")
        # a small answer is complete, with no marker
        small = rl.post("sql", json={"query": "SELECT * FROM range(3)", "format": "csv"}).text
        assert "truncated" not in small and small.split() == ['"range"', "0", "1", "2"]


def test_runaway_query_is_stopped_and_the_server_keeps_serving(make_server) -> None:
    s = make_server(RUNLEDGER_SQL_TIME_LIMIT_MS="1500")
    with httpx.Client(base_url=f"{s.url}/api/runledger/v1", timeout=60) as rl:
        t0 = time.monotonic()
        r = rl.post("sql", json={"query": RUNAWAY})
        took = time.monotonic() - t0
        assert r.status_code == 400 and r.json()["error_code"] == "QUERY_TIMEOUT", r.text
        assert "1500 ms" in r.json()["message"]
        assert took < 10, took
        # a tighter per-request limit is honoured too
        r = rl.post("sql", json={"query": RUNAWAY, "timeout_ms": 300, "format": "parquet"})
        assert r.json()["error_code"] == "QUERY_TIMEOUT" and "300 ms" in r.json()["message"]
        assert rl.post("sql", json={"query": "SELECT 42"}).json()["rows"] == [[42]]
    assert _seed(s.url, runs=1, steps=2)


def test_concurrency_cap_and_disconnect_cancels(make_server) -> None:
    s = make_server(RUNLEDGER_SQL_MAX_CONCURRENT="1", RUNLEDGER_SQL_TIME_LIMIT_MS="120000")
    url = f"{s.url}/api/runledger/v1/sql"
    # A client that gives up after 1 s: its query must be interrupted, freeing the only slot.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"query": RUNAWAY}, timeout=httpx.Timeout(30, read=1.0))
    deadline = time.monotonic() + 15
    while True:
        r = httpx.post(url, json={"query": "SELECT 1"}, timeout=30)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, "the abandoned query kept its slot: it was not cancelled"
    # With one query running, a second is refused with 429.
    holder = threading.Thread(target=lambda: httpx.post(url, json={"query": RUNAWAY, "timeout_ms": 6000}, timeout=60))
    holder.start()
    time.sleep(1.0)
    busy = httpx.post(url, json={"query": "SELECT 1"}, timeout=30)
    holder.join()
    assert busy.status_code == 429 and busy.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED", busy.text
    # the streamed path gives its slot back when the client goes away mid-stream
    with httpx.stream("POST", url, json={"query": "SELECT * FROM range(100000000)", "format": "csv"},
                      timeout=30) as stream:
        next(stream.iter_bytes())
    deadline = time.monotonic() + 15
    while httpx.post(url, json={"query": "SELECT 1"}, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the abandoned stream kept its slot"
        time.sleep(0.2)


def test_long_sql_query_leaves_projector_and_mlflow_writes_working(make_server) -> None:
    s = make_server(RUNLEDGER_SQL_TIME_LIMIT_MS="8000")
    with httpx.Client(base_url=f"{s.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": "busy"}).json()["experiment_id"]
        run = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]

        def write(i: int) -> float:
            t0 = time.monotonic()
            r = api.post("runs/log-metric", json={"run_id": run, "key": "m", "value": i, "timestamp": i, "step": i})
            assert r.status_code == 200, r.text
            return time.monotonic() - t0

        before = [write(i) for i in range(20)]
        result: dict[str, Any] = {}

        def long_query() -> None:
            t0 = time.monotonic()
            result["r"] = httpx.post(f"{s.url}/api/runledger/v1/sql", json={"query": RUNAWAY}, timeout=60)
            result["t"] = time.monotonic() - t0

        t = threading.Thread(target=long_query)
        t.start()
        time.sleep(0.5)
        during = []
        while t.is_alive() and len(during) < 200:
            during.append(write(100 + len(during)))
        t.join()
        assert result["r"].json()["error_code"] == "QUERY_TIMEOUT" and result["t"] > 7
        assert len(during) >= 20, "too few writes overlapped the SQL query"
        # Each write was synchronous: answered only after the projector applied it, so the
        # projector kept applying throughout. Their latency stays in the usual range.
        med_before, med_during = statistics.median(before), statistics.median(during)
        print(f"log-metric median before {med_before * 1000:.1f} ms, during a long SQL query "
              f"{med_during * 1000:.1f} ms ({len(during)} writes)")
        assert med_during < max(5 * med_before, 0.25)
        history = api.get("metrics/get-history", params={"run_id": run, "metric_key": "m"}).json()["metrics"]
        assert len(history) == 20 + len(during)


def test_query_over_the_memory_limit_fails_cleanly_and_writes_keep_working(make_server) -> None:
    # string_agg's state cannot spill: without the guard this one query holds ~800 MB.
    hog = "SELECT length(string_agg(CAST(range AS VARCHAR), ',')) FROM range(30000000)"
    s = make_server(RUNLEDGER_SQL_MEMORY_MB="64", RUNLEDGER_SQL_TIME_LIMIT_MS="60000")
    with httpx.Client(base_url=f"{s.url}/api/runledger/v1", timeout=90) as rl:
        r = rl.post("sql", json={"query": hog})
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "QUERY_OUT_OF_MEMORY"
        assert "RUNLEDGER_SQL_MEMORY_MB" in r.json()["message"]
        # the same through a streamed format, and the server still answers SQL afterwards
        r = rl.post("sql", json={"query": hog, "format": "parquet"})
        assert r.status_code == 400 and r.json()["error_code"] == "QUERY_OUT_OF_MEMORY", r.text
        assert rl.post("sql", json={"query": "SELECT 42"}).json()["rows"] == [[42]]
        # work that fits in the limit (spilling what it can) still answers
        ok = rl.post("sql", json={"query": "SELECT count(*) FROM (SELECT range % 1000 AS g, sum(range) "
                                           "FROM range(3000000) GROUP BY g)"})
        assert ok.status_code == 200 and ok.json()["rows"] == [[1000]], ok.text
    assert _seed(s.url, runs=1, steps=2)
