"""Attacks and oversized inputs against a real server (issue 11): each refusal is tried.

Request ids and opaque 500s, name and user limits, values echoed into errors, the Host
allow-list (DNS rebinding), stalled request bodies (slowloris), artifact locations outside the
root, file permissions of the data folder, and runs/create without an experiment.
"""

from __future__ import annotations

import asyncio
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from runledger.app import create_app
from runledger.settings import Settings
from tests.conftest import RunledgerServer

pytestmark = pytest.mark.kafka

TS = 1_700_000_000_000
MB = 1024 * 1024


def error(resp: httpx.Response, status: int, code: str, *fragments: str) -> str:
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:300]}"
    body = resp.json()
    assert body["error_code"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], f"{fragment!r} not in {body['message'][:300]!r}"
    return body["message"]


@pytest.fixture(scope="module")
def api(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def exp_id(api: httpx.Client) -> str:
    return api.post("experiments/create", json={"name": f"holes-{uuid.uuid4().hex}"}).json()["experiment_id"]


@pytest.fixture(scope="module")
def artifact_root(api: httpx.Client, exp_id: str) -> str:
    """The server's artifact root (an experiment created without a location sits right under it)."""
    location = api.get("experiments/get", params={"experiment_id": exp_id}).json()["experiment"]["artifact_location"]
    return location.rsplit("/", 1)[0]


def _new_run(api: httpx.Client, exp_id: str) -> str:
    return api.post("runs/create", json={"experiment_id": exp_id, "start_time": TS}).json()["run"]["info"]["run_id"]


# ----- request ids and 500s

def test_every_answer_carries_a_request_id(api: httpx.Client) -> None:
    ok = api.get("experiments/get", params={"experiment_id": "0"})
    missing = api.get("experiments/get", params={"experiment_id": "424242"})
    assert ok.status_code == 200 and missing.status_code == 404
    ids = {ok.headers["x-request-id"], missing.headers["x-request-id"]}
    assert len(ids) == 2 and all(len(i) >= 16 for i in ids)


def test_a_sane_incoming_request_id_is_kept_and_junk_is_replaced(api: httpx.Client) -> None:
    assert api.get("experiments/get", params={"experiment_id": "0"},
                   headers={"X-Request-Id": "trace-42.abc"}).headers["x-request-id"] == "trace-42.abc"
    for junk in (b"x" * 500, b"a b", b"<script>", b"\xe9t\xe9", b""):
        rid = api.get("experiments/get", params={"experiment_id": "0"},
                      headers={"X-Request-Id": junk}).headers["x-request-id"]
        assert rid.encode() != junk and len(rid) == 32


def test_a_500_says_only_the_request_id_and_logs_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """In process: a real 500 needs a route that fails, and no shipped route should."""
    app = create_app(Settings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("SELECT secret FROM internals LIMIT 9223372036854775808")

    # In process through httpx's ASGI transport, which runs no lifespan: no Kafka or DuckDB needed.
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/boom", headers={"X-Request-Id": "req-123"})

    resp = asyncio.run(call())
    assert resp.status_code == 500
    assert resp.json()["error_code"] == "INTERNAL_ERROR"
    assert resp.json()["message"].startswith("Internal error; request id req-123")
    assert resp.headers["x-request-id"] == "req-123"
    assert "secret" not in resp.text
    logged = [r for r in caplog.records if "req-123" in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "secret" in str(logged[0].exc_info[1])


# ----- length limits and echoed values

def test_run_name_and_user_id_have_mlflow_column_limits(api: httpx.Client, exp_id: str) -> None:
    error(api.post("runs/create", json={"experiment_id": exp_id, "run_name": "n" * 251}),
          400, "INVALID_PARAMETER_VALUE", "'run_name'", "250")
    error(api.post("runs/create", json={"experiment_id": exp_id, "run_name": "n" * (7 * MB)}),
          400, "INVALID_PARAMETER_VALUE", "'run_name'")
    error(api.post("runs/create", json={"experiment_id": exp_id, "user_id": "u" * 257}),
          400, "INVALID_PARAMETER_VALUE", "'user_id'", "256")
    error(api.post("runs/create", json={"experiment_id": exp_id, "user_id": "u" * MB}),
          400, "INVALID_PARAMETER_VALUE", "'user_id'")
    error(api.post("runs/create", json={"experiment_id": exp_id, "tags": [{"key": "mlflow.runName", "value": "n" * 251}]}),
          400, "INVALID_PARAMETER_VALUE", "'tags[0].value'", "250")
    run = api.post("runs/create", json={"experiment_id": exp_id, "run_name": "n" * 250, "user_id": "u" * 256})
    assert run.status_code == 200
    info = run.json()["run"]["info"]
    assert (len(info["run_name"]), len(info["user_id"])) == (250, 256)
    error(api.post("runs/update", json={"run_id": info["run_id"], "run_name": "n" * 251}),
          400, "INVALID_PARAMETER_VALUE", "'run_name'")
    error(api.post("runs/set-tag", json={"run_id": info["run_id"], "key": "mlflow.runName", "value": "n" * 251}),
          400, "INVALID_PARAMETER_VALUE", "250")
    assert api.get("runs/get", params={"run_id": info["run_id"]}).json()["run"]["info"]["run_name"] == "n" * 250


@pytest.mark.parametrize("request_", [
    ("POST", "runs/create", {"experiment_id": "!" * MB}),
    ("POST", "runs/log-metric", {"run_id": "!" * MB, "key": "k", "value": 1, "timestamp": 1}),
    ("POST", "experiments/create", {"name": "n", "tags": [{"key": "!" * MB, "value": "v"}]}),
    ("POST", "runs/search", {"experiment_ids": ["0"], "run_view_type": "V" * MB}),
    ("POST", "runs/search", {"experiment_ids": ["0"], "page_token": "t" * MB}),
    ("POST", "runs/search", {"experiment_ids": ["0"], "filter": "attributes.x = '" + "f" * MB}),
    ("POST", "logged-models/search", {"experiment_ids": ["0"], "filter": "(" + "f" * MB}),
    ("POST", "experiments/create", {"name": "n", "artifact_location": "file:///etc/" + "a" * 2000}),
], ids=["experiment-id", "run-id", "tag-key", "view-type", "page-token", "filter", "model-filter", "location"])
def test_an_invalid_megabyte_is_not_echoed_back(api: httpx.Client, request_: tuple[str, str, dict[str, Any]]) -> None:
    method, path, body = request_
    resp = api.request(method, path, json=body)
    assert resp.status_code == 400, resp.text[:300]
    message = resp.json()["message"]
    assert len(message) < 2100, len(message)


# ----- Host allow-list (DNS rebinding)

def _raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_unknown_host_header_is_refused(server: RunledgerServer) -> None:
    url = f"{server.url}/api/2.0/mlflow/experiments/get?experiment_id=0"
    for host in ("evil.example", "evil.example:5000", "127.0.0.1.evil.example", "localhost.evil.example",
                 "[::2]", "attacker.localhost"):
        resp = httpx.get(url, headers={"Host": host})
        error(resp, 400, "BAD_REQUEST", "RUNLEDGER_ALLOWED_HOSTS")
        assert resp.headers["x-request-id"]
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}", "LOCALHOST",
                 "localhost."):
        assert httpx.get(url, headers={"Host": host}).status_code == 200, host
    # HTTP/1.0 without any Host header is refused too
    raw = _raw_request(server.port, b"GET /api/2.0/mlflow/experiments/get?experiment_id=0 HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400") and b"RUNLEDGER_ALLOWED_HOSTS" in raw


def test_allowed_hosts_setting_replaces_the_defaults(make_server: Any) -> None:
    # 127.0.0.1 stays listed: the fixture polls /health through it to see the server is up
    s = make_server(RUNLEDGER_ALLOWED_HOSTS="127.0.0.1, tracking.example.com,*.corp.example")
    url = f"{s.url}/health"
    assert httpx.get(url, headers={"Host": "tracking.example.com"}).status_code == 200
    assert httpx.get(url, headers={"Host": "ml.corp.example:443"}).status_code == 200
    assert httpx.get(url, headers={"Host": "localhost"}).status_code == 400
    assert httpx.get(url, headers={"Host": "corp.example.evil"}).status_code == 400


# ----- slowloris: stalled bodies and idle connections

def test_a_stalled_body_is_cut_off_within_the_timeout(make_server: Any) -> None:
    s = make_server(RUNLEDGER_BODY_TIMEOUT="2", RUNLEDGER_KEEP_ALIVE_TIMEOUT="1")
    head = (f"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\":").encode()
    stalled = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=15)
        sock.sendall(head)
        stalled.append(sock)
    t0 = time.monotonic()
    try:
        for sock in stalled:
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"error_code":"BAD_REQUEST"' in answer and b"x-request-id" in answer.lower()
        elapsed = time.monotonic() - t0
        assert elapsed < 8, f"stalled bodies held {elapsed:.1f}s with a 2 s timeout"
    finally:
        for sock in stalled:
            sock.close()
    # the server still answers, and a slow but steady body still goes through
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        body = b'{"name": "slow-but-steady"}'
        sock.sendall((f"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode())
        for i in range(0, len(body), 9):
            time.sleep(1)
            sock.sendall(body[i:i + 9])
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
    # an idle keep-alive connection is closed after RUNLEDGER_KEEP_ALIVE_TIMEOUT
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode())
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert sock.recv(65536) == b""
        assert time.monotonic() - t0 < 5


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_silent_and_byte_a_time_headers_are_cut_off(make_server: Any) -> None:
    s = make_server(RUNLEDGER_HEADER_TIMEOUT="2")
    silent = [socket.create_connection(("127.0.0.1", s.port), timeout=15) for _ in range(20)]
    dribbling = [socket.create_connection(("127.0.0.1", s.port), timeout=15) for _ in range(20)]
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nX-Slow: ".encode()
    socks = silent + dribbling
    t0 = time.monotonic()
    try:
        for sock in dribbling:
            sock.sendall(head)
        still_open = set(range(len(socks)))
        while still_open and time.monotonic() - t0 < 10:
            time.sleep(0.5)
            for i in list(still_open):
                if i >= len(silent):  # a byte every half second, never the end of the headers
                    try:
                        socks[i].sendall(b"a")
                    except OSError:
                        still_open.discard(i)
                        continue
                if _closed_by_peer(socks[i]):
                    still_open.discard(i)
        elapsed = time.monotonic() - t0
        assert not still_open, f"{len(still_open)} connections still open after {elapsed:.1f}s"
        assert elapsed < 8, f"headers held {elapsed:.1f}s with a 2 s deadline"
    finally:
        for sock in socks:
            sock.close()
    # a request whose headers arrive in time is answered, and its connection then stays open
    # for further requests until the keep-alive timeout
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        for _ in range(2):
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode())
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(1)


# ----- artifact locations

@pytest.mark.parametrize("location", [
    "file:///etc", "/etc", "file:///etc/passwd", "../..", "../../etc", "relative/path",
    "\\\\server\\share\\x", "//server/share/x", "file://server/share/x", "file:////server/share",
    "s3://someone-else/bucket", "mlflow-artifacts:/../../etc", "mlflow-artifacts:/a/%2e%2e/%2e%2e/b",
])
def test_artifact_location_outside_the_root_is_400(api: httpx.Client, location: str) -> None:
    resp = api.post("experiments/create", json={"name": f"loc-{uuid.uuid4().hex}", "artifact_location": location})
    error(resp, 400, "INVALID_PARAMETER_VALUE", "'artifact_location'")


def test_artifact_location_traversal_out_of_the_root_is_400(api: httpx.Client, artifact_root: str) -> None:
    for location in (f"{artifact_root}/../outside", f"{artifact_root}/a/../../outside", f"{artifact_root}/%2E%2E/x",
                     f"{artifact_root}-sibling/x", f"{artifact_root}/a\\..\\..\\x", f"{artifact_root}/./x"):
        resp = api.post("experiments/create", json={"name": f"loc-{uuid.uuid4().hex}", "artifact_location": location})
        error(resp, 400, "INVALID_PARAMETER_VALUE", "'artifact_location'")


def test_artifact_location_under_the_root_or_mlflow_artifacts_is_accepted(api: httpx.Client, artifact_root: str) -> None:
    for location in (f"{artifact_root}/team-a/exp", "mlflow-artifacts:/team-a/exp", artifact_root,
                     artifact_root.replace("file://", "")):
        resp = api.post("experiments/create", json={"name": f"loc-{uuid.uuid4().hex}", "artifact_location": location})
        assert resp.status_code == 200, f"{location}: {resp.text[:300]}"
        exp = api.get("experiments/get", params={"experiment_id": resp.json()["experiment_id"]}).json()
        assert exp["experiment"]["artifact_location"] == location


# ----- data file permissions

def test_data_folder_and_duckdb_files_are_private(make_server: Any, tmp_path: Path) -> None:
    (tmp_path / "fresh").mkdir()
    data = tmp_path / "fresh" / "data"  # created by the server itself
    s = make_server(data_dir=data)
    api = httpx.Client(base_url=f"{s.url}/api/2.0/mlflow", timeout=30)
    api.post("experiments/create", json={"name": "perm"}).raise_for_status()
    s.stop()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "runledger.duckdb" for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, f"{p} is {oct(p.stat().st_mode)}"


# ----- runs/create without an experiment

@pytest.mark.parametrize("body", [b"", b"{}", b'{"experiment_id": ""}', b'{"run_name": "r"}'],
                         ids=["empty", "object", "empty-id", "no-id"])
def test_runs_create_without_experiment_id_is_400_and_creates_nothing(api: httpx.Client, body: bytes) -> None:
    def default_runs() -> int:
        found = api.post("runs/search", json={"experiment_ids": ["0"], "max_results": 1000}).json()
        return len(found.get("runs", []))

    before = default_runs()
    resp = api.post("runs/create", content=body, headers={"content-type": "application/json"})
    error(resp, 400, "BAD_REQUEST", "experiment_id")
    assert default_runs() == before
