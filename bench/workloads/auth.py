"""What authentication costs (docs/auth.md): the same requests against Runledger with
authentication off, and on with HTTP Basic (MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD) and with a
Bearer token (MLFLOW_TRACKING_TOKEN), as a user holding an EDIT grant (not an admin, so every
request takes the permission check). Goals: <= 5% log-batch throughput lost, <= 0.3 ms added to
runs/get's p50.

- log-batch: 1000-point batches (10 keys) to one run, one client, back to back: points/s, and
  the server process's CPU seconds per batch (from /proc: it stays meaningful on a loaded
  machine, where the wall-clock figures do not);
- runs/get: a run of 20 params, 5 tags, 10 metric keys, read back to back: p50/p95.
Each mode has its own server, so the three see the same history (one "on" server taking both
Basic and Bearer held twice the data of the "off" one); the modes take turns, in an order
that rotates per repetition (none always runs after the same one). Medians are reported.
"""

from __future__ import annotations

import base64
import os
import time
import uuid

from common import API, T0_MS, Client, batch_body, lat_summary, median
from context import Ctx, Row

ADMIN, ADMIN_PW = "bench-admin", "bench-admin-password"


def _auth_headers(c: Client, mode: str) -> dict[str, str]:
    """A non-admin user with EDIT on a fresh experiment; its credentials for `mode`."""
    if mode == "off":
        return {}
    admin = {"Authorization": "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN_PW}".encode()).decode()}
    user = f"u{uuid.uuid4().hex[:8]}"
    r = c.http.post(API + "/users/create", json={"username": user, "password": "pw-" + user}, headers=admin)
    r.raise_for_status()
    if mode == "basic":
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:pw-{user}".encode()).decode()}
    r = c.http.post("/api/runledger/v1/tokens", json={"username": user}, headers=admin)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['token']}", "X-Bench-User": user}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(url: str, pid: int, mode: str, n_batches: int, n_gets: int) -> tuple[float, float, list[float]]:
    with Client(url) as c:
        headers = _auth_headers(c, mode)
        user = headers.pop("X-Bench-User", None)
        if mode != "off":
            admin = "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN_PW}".encode()).decode()
            c.http.headers["Authorization"] = admin
        exp = c.create_experiment("auth")
        run = c.create_run(exp)
        c.post("/runs/log-batch", {"run_id": run, "params": [{"key": f"p{i}", "value": str(i)} for i in range(20)],
                                   "tags": [{"key": f"t{i}", "value": f"v{i}"} for i in range(5)],
                                   "metrics": [{"key": f"m{k}", "value": 0.5, "timestamp": T0_MS, "step": 0}
                                               for k in range(10)]})
        if mode != "off":
            name = user or base64.b64decode(headers["Authorization"].split()[1]).decode().split(":")[0]
            c.http.post("/api/3.0/mlflow/users/permissions/grant", json={
                "username": name, "resource_type": "experiment", "resource_id": exp,
                "permission": "EDIT"}).raise_for_status()
        c.http.headers.pop("Authorization", None)
        c.http.headers.update(headers)
        bodies = [batch_body(run, 1000 + i * 100, 1000) for i in range(n_batches + 1)]
        c.post_raw(API + "/runs/log-batch", bodies[0]).raise_for_status()        # warm-up (and argon2, once)
        cpu, t = _cpu_s(pid), time.perf_counter()
        for body in bodies[1:]:
            r = c.post_raw(API + "/runs/log-batch", body)
            if r.status_code != 200:
                raise RuntimeError(f"log-batch -> {r.status_code}: {r.text[:300]}")
        rate = n_batches * 1000 / (time.perf_counter() - t)
        # the projector's commit of the last batches runs on after the answers: let it finish
        time.sleep(0.5)
        cpu_ms = (_cpu_s(pid) - cpu) / n_batches * 1000
        c.http.get(API + "/runs/get", params={"run_id": run}).raise_for_status()
        samples = []
        for _ in range(n_gets):
            t = time.perf_counter()
            r = c.http.get(API + "/runs/get", params={"run_id": run})
            samples.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"runs/get -> {r.status_code}: {r.text[:300]}")
    return rate, cpu_ms, samples


def gate_cpu_ms(n: int = 300, reps: int = 5) -> dict[str, float]:
    """The auth gate alone, in process: thread CPU per 1000-point log-batch request through
    the gate (Basic, Bearer; a non-admin with an EDIT grant) to an endpoint that reads the body
    as the route does, against the same endpoint without the gate ("off"). Median of `reps`
    rounds; independent of the machine's load, unlike the wall-clock figures."""
    import asyncio
    import tempfile
    from pathlib import Path

    from starlette.requests import Request

    from runledger.app import create_app
    from runledger.auth import tokens
    from runledger.auth.authenticator import Authenticator
    from runledger.auth.gate import AuthGate
    from runledger.auth.permissions import Permission
    from runledger.auth.state import SharedAuthState
    from runledger.auth.vault import SecretStore
    from runledger.dialects.request import json_body
    from runledger.settings import Settings

    app = create_app(Settings(auth=True))
    shared, vault = SharedAuthState(), SecretStore(Path(tempfile.mkdtemp(prefix="bench-gate-")))
    token_id, token, digest = tokens.new_token()
    shared.apply_all([("UserCreated", {"username": "u", "is_admin": False}, 0),
                      ("PermissionGranted", {"username": "u", "experiment_id": "1", "permission": "EDIT"}, 0),
                      ("TokenCreated", {"token_id": token_id, "username": "u", "name": "", "expires_at": None}, 0)])
    vault.set_password("u", "pw")
    vault.set_token(token_id, digest)
    authenticator = Authenticator(shared, vault)
    body = batch_body("r" * 32, 0, 1000)

    async def route(scope, receive, send):  # type: ignore[no-untyped-def]
        if len((await json_body(Request(scope, receive)))["metrics"]) != 1000:
            raise AssertionError("the body did not reach the route whole")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def refuse(request, error):  # type: ignore[no-untyped-def]
        raise AssertionError(f"the gate refused: {error}")

    gate = AuthGate(route, routes=lambda: app.routes, authenticator=lambda: authenticator,
                    resolver=lambda scope: (lambda kind, value: "1"), default=Permission.READ, render=refuse)
    cases = {"off": (route, None), "basic": (gate, b"Basic " + base64.b64encode(b"u:pw")),
             "bearer": (gate, b"Bearer " + token.encode())}

    async def request(asgi, authorization) -> None:  # type: ignore[no-untyped-def]
        headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if authorization:
            headers.append((b"authorization", authorization))
        scope = {"type": "http", "method": "POST", "path": API + "/runs/log-batch", "query_string": b"",
                 "headers": headers, "client": ("127.0.0.1", 1), "app": app, "state": {}}
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive() -> dict:
            return pending.pop() if pending else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
        await asgi(scope, receive, send)
        if sent[0]["status"] != 200:
            raise AssertionError(sent)

    async def measure() -> dict[str, float]:
        for asgi, authorization in cases.values():
            for _ in range(20):          # warm-up (argon2 once for Basic)
                await request(asgi, authorization)
        rounds: dict[str, list[float]] = {m: [] for m in cases}
        for _ in range(reps):
            for mode, (asgi, authorization) in cases.items():
                t = time.thread_time()
                for _ in range(n):
                    await request(asgi, authorization)
                rounds[mode].append((time.thread_time() - t) / n * 1000)
        return {m: median(v) for m, v in rounds.items()}

    return asyncio.run(measure())


MODES = ("off", "basic", "bearer")


def run(ctx: Ctx) -> list[Row]:
    n_batches, n_gets = ctx.size(20, 100), ctx.size(100, 500)
    on = {"RUNLEDGER_AUTH": "on", "RUNLEDGER_ADMIN_USER": ADMIN, "RUNLEDGER_ADMIN_PASSWORD": ADMIN_PW}
    servers = {mode: ctx.runledger() if mode == "off" else ctx.runledger(**on) for mode in MODES}
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}
    gets: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for rep in range(ctx.reps):
            for i in range(len(MODES)):
                mode = MODES[(rep + i) % len(MODES)]
                server = servers[mode]
                rate, cpu_ms, samples = _measure(server.url, server.proc.pid, mode, n_batches, n_gets)
                rates[mode].append(rate)
                cpus[mode].append(cpu_ms)
                gets[mode].extend(samples)
                ctx.log(f"auth rep {rep} {mode}: log-batch {rate:,.0f} points/s, server CPU {cpu_ms:.2f} ms/batch, "
                        f"runs/get {lat_summary(samples)}")
    finally:
        for s in servers.values():
            ctx.stop(s, "auth")
    gate = gate_cpu_ms(n=ctx.size(100, 300))
    ctx.log("auth gate alone, in process: " + ", ".join(f"{m} {v:.3f} ms CPU/request" for m, v in gate.items()))
    rate = {m: median(v) for m, v in rates.items()}
    cpu = {m: median(v) for m, v in cpus.items()}
    lat = {m: lat_summary(v) for m, v in gets.items()}
    ctx.details["auth"] = {"points_per_s": rate, "points_per_s_all": rates, "server_cpu_ms_per_batch": cpu,
                           "server_cpu_ms_per_batch_all": cpus, "gate_alone_cpu_ms_per_request": gate, "runs_get": lat, "batches": n_batches, "gets": n_gets}
    rows = []
    for mode in ("basic", "bearer"):
        lost = 1 - rate[mode] / rate["off"]
        rows.append(Row("authentication", f"log-batch, auth {mode} vs off", f"{n_batches} x 1000 points x {ctx.reps}",
                        "points/s", None, rate[mode], True, "<= 5% lost", lost <= 0.05,
                        note=f"auth off: {rate['off']:,.0f} points/s; lost {lost:.1%}; server CPU per batch "
                             f"{cpu[mode]:.2f} ms vs {cpu['off']:.2f} ms off ({cpu[mode] / cpu['off'] - 1:+.1%}); "
                             f"the gate alone (in process) {gate[mode] - gate['off']:+.3f} ms CPU per batch"))
        added = lat[mode]["p50_ms"] - lat["off"]["p50_ms"]
        rows.append(Row("authentication", f"runs/get, auth {mode} vs off", f"{n_gets} x {ctx.reps}", "ms",
                        None, lat[mode], False, "<= 0.3 ms p50 added", added <= 0.3,
                        note=f"auth off p50 {lat['off']['p50_ms']:.2f} ms; added {added:+.2f} ms"))
    return rows
