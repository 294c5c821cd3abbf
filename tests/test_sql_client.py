"""`runledger.client.sql()` and `runledger sql` against a real server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runledger.client import SqlQueryError, sql
from tests.conftest import RunledgerServer

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def run_id(server: RunledgerServer) -> str:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": f"cli-{uuid.uuid4().hex}"}).json()["experiment_id"]
        run = api.post("runs/create", json={"experiment_id": exp, "run_name": "cli-run"}).json()["run"]["info"]["run_id"]
        points = [{"key": "loss", "value": 1 / (s + 1), "timestamp": 1_700_000_000_000 + s, "step": s} for s in range(300)]
        assert api.post("runs/log-batch", json={"run_id": run, "metrics": points}).status_code == 200
    return run


def test_client_sql_returns_an_arrow_table(server: RunledgerServer, run_id: str) -> None:
    table = sql(f"SELECT step, value FROM metrics WHERE run_id = '{run_id}' ORDER BY step", server.url)
    assert isinstance(table, pa.Table)
    assert table.schema.names == ["step", "value"] and table.schema.field("step").type == pa.int64()
    assert table.column("step").to_pylist() == list(range(300))
    assert table.column("value").to_pylist() == [1 / (s + 1) for s in range(300)]


def test_client_sql_warns_when_truncated(server: RunledgerServer, run_id: str) -> None:
    with pytest.warns(UserWarning, match="max_rows=10"):
        table = sql(f"SELECT step FROM metrics WHERE run_id = '{run_id}' ORDER BY step", server.url, max_rows=10)
    assert table.num_rows == 10 and b"runledger.truncated" in table.schema.metadata


def test_client_sql_raises_the_servers_error(server: RunledgerServer) -> None:
    with pytest.raises(SqlQueryError) as err:
        sql("SELECT * FROM read_csv('/etc/passwd')", server.url)
    assert err.value.status_code == 400 and err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "read_csv" in err.value.message


def cli(*args: str, url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "runledger.cli", "sql", *args, "--url", url],
                          capture_output=True, timeout=120)


def test_cli_formats(server: RunledgerServer, run_id: str, tmp_path: Path) -> None:
    q = f"SELECT step, value FROM metrics WHERE run_id = '{run_id}' AND step < 3 ORDER BY step"
    csv = cli(q, url=server.url)   # not a terminal: CSV
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.decode().split() == ['"step","value"', "0,1", "1,0.5", "2,0.3333333333333333"]
    doc = json.loads(cli(q, "--format", "json", url=server.url).stdout)
    assert doc["rows"] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]
    out = tmp_path / "answer.parquet"
    assert cli(q, "-o", str(out), url=server.url).returncode == 0
    assert pq.read_table(out).column("step").to_pylist() == [0, 1, 2]
    arrow = cli(q, "--format", "arrow", url=server.url).stdout
    assert pa.ipc.open_stream(io.BytesIO(arrow)).read_all().num_rows == 3


def test_cli_table_is_aligned(server: RunledgerServer, run_id: str) -> None:
    r = cli(f"SELECT run_name, step, value FROM metrics JOIN runs USING (run_id) WHERE run_id = '{run_id}' "
            "ORDER BY step", "--format", "table", "--max-rows", "12", url=server.url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["run_name", "step", "value"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    rows = lines[2:-1]
    assert len(rows) == 12 and rows[0].split() == ["cli-run", "0", "1.0"]
    # numbers right-aligned under their header: every row ends at the same column
    assert len({len(line) for line in rows[:10]}) == 1
    assert lines[-1].startswith("(12 rows") and "truncated" in lines[-1]


def test_cli_reports_refusals(server: RunledgerServer) -> None:
    r = cli("DROP TABLE runs", url=server.url)
    assert r.returncode == 1
    assert b"INVALID_PARAMETER_VALUE" in r.stderr and b"DROP" in r.stderr
