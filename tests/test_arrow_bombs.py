"""Issue 11.3: a compressed Arrow body on the stream endpoint is bounded by what it decompresses to.

Each bomb is a ~35 KB body whose one column (each of the used ones, and one the endpoint does not
use) claims 1 GiB of zstd-compressed zeros. The server must answer a clear 400 and its memory
must not grow; a legitimately compressed body is still accepted.
"""

from __future__ import annotations

from typing import Any

import httpx
import pyarrow as pa
import pytest

from tests.arrow_bombs import BOMB_COLUMNS, bomb_stream
from tests.conftest import RunledgerServer
from tests.test_poison_records import rss_mb

STREAM = "/api/runledger/v1/metrics/stream"
ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}


@pytest.fixture(scope="module")
def run_id(server: RunledgerServer) -> str:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": "bombs"}).json()["experiment_id"]
        return str(api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"])


def _post(server: RunledgerServer, run_id: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}{STREAM}", params={"run_id": run_id}, content=body, headers=ARROW, timeout=60)


def test_a_compressed_body_within_the_limit_is_accepted(server: RunledgerServer, run_id: str) -> None:
    n = 5000
    table = pa.table({"key": ["loss"] * n, "value": [1.0 / (i + 1) for i in range(n)],
                      "timestamp": list(range(n)), "step": list(range(n)), "note": ["unused"] * n})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    r = _post(server, run_id, sink.getvalue().to_pybytes())
    assert r.status_code == 200, r.text
    assert r.json()["points"] == n


@pytest.mark.parametrize("column", BOMB_COLUMNS)
def test_a_decompression_bomb_in_any_column_is_a_400_and_costs_no_memory(
        server: RunledgerServer, run_id: str, column: str) -> None:
    body = bomb_stream(column, 1 << 30)
    assert len(body) < 64 * 1024
    _post(server, run_id, bomb_stream(column, 1 << 10))  # warm up the code path before measuring
    before = rss_mb(server)
    for _ in range(3):
        r = _post(server, run_id, body)
        assert r.status_code == 400, r.text
        err: dict[str, Any] = r.json()
        assert err["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "more than 33554432 bytes decompressed" in err["message"], err
    grown = rss_mb(server) - before
    assert grown < 50, f"RSS grew by {grown:.0f} MB"


def test_a_small_bomb_is_still_a_real_stream(server: RunledgerServer, run_id: str) -> None:
    # The crafted body is a valid stream: below the limit, the endpoint reads it (1 MiB of zero
    # values in a 10-row column is fine), so the 400s above come from the size bound alone.
    r = _post(server, run_id, bomb_stream("value", 1 << 20))
    assert r.status_code == 200, r.text
    assert r.json()["points"] == 10
