"""Pure-ASGI guards in front of every route: a request id on every answer, a Host allow-list,
and a deadline on reading request bodies.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which buffers streamed responses and
runs the app in a separate task; these only look at the scope and wrap `receive` and `send`.
"""

from __future__ import annotations

import asyncio
import re
from typing import Callable, Iterable

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runledger.ingest import provenance
from runledger.ingest.provenance import REQUEST_ID_HEADER

# Host header syntax (RFC 9110): a name or IPv4 address, or a bracketed IPv6 literal, then an optional port.
_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")


def request_id(scope: Scope) -> str:
    """The id of the request `scope` belongs to ('' outside `RequestContext`)."""
    return str(scope.get("state", {}).get("request_id", ""))


async def _send_json(send: Send, status: int, body: dict[str, str], scope: Scope) -> None:
    raw = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
               (b"connection", b"close")]
    if request_id(scope):
        headers.append((REQUEST_ID_HEADER.lower().encode(), request_id(scope).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


class RequestContext:
    """Every HTTP request gets a request id (the caller's X-Request-Id if sane, else a fresh
    one: ingest.provenance.request_id), kept in `request.state.request_id` for logs and error
    answers (runledger.dialects.errors), returned in the response's X-Request-Id header, and
    bound with the API the request came through for the events it appends (ingest.provenance).
    Outermost, so the guards' own refusals carry the id too. Plain ASGI: the endpoint runs in
    the context it binds, and streamed responses are not buffered."""

    def __init__(self, app: ASGIApp, api_of: Callable[[str], str]) -> None:
        self.app = app
        self.api_of = api_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = provenance.request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = rid
        header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*(h for h in message.get("headers") or [] if h[0].lower() != header[0]),
                                      header]
            await send(message)

        token = provenance.bind(provenance.Provenance(rid, self.api_of(scope.get("path", ""))))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            provenance.unbind(token)


def default_allowed_hosts(bound_host: str) -> list[str]:
    """Loopback names plus the address the server listens on (a wildcard address is not a name
    a browser can be sent to, so it adds nothing)."""
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    bound = bound_host.strip().lower()
    if bound and bound not in ("0.0.0.0", "::", "[::]"):
        hosts.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound)
    return hosts


class AllowedHostsMiddleware:
    """Refuses requests whose Host header is not allow-listed (400, JSON). Without it a web page
    on any site could reach a loopback-bound API through DNS rebinding: its own name resolving
    to 127.0.0.1 makes the browser's same-origin check pass, but the Host header still carries
    that name. `*` allows any host; `*.example.com` allows subdomains."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = [h.strip().lower() for h in allowed_hosts if h.strip()]
        self.allow_any = "*" in self.allowed

    def allows(self, host_header: str | None) -> bool:
        if self.allow_any:
            return True
        match = _HOST.fullmatch(host_header or "")
        if match is None:
            return False
        host = match["host"].lower().rstrip(".")
        return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allows(Headers(scope=scope).get("host")):
            await self.app(scope, receive, send)
            return
        await _send_json(send, 400, {
            "error_code": "BAD_REQUEST",
            "message": "Host header not allowed; add the name clients use to RUNLEDGER_ALLOWED_HOSTS."}, scope)


class BodyReadTimeout(Exception):
    """The client stopped sending its request body."""


class BodyTimeoutMiddleware:
    """Cuts off a client that stops sending its request body: each wait for the next body chunk
    is bounded by `timeout` seconds, and then the request is answered 408 and the connection
    closed. Once the body is complete, waits on `receive` (a streamed response listening for a
    disconnect) are left unbounded."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                # asyncio.timeout, not wait_for: no task per chunk (a 1 GiB upload is ~16k chunks)
                async with asyncio.timeout(self.timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyReadTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyReadTimeout:
            if started:
                raise
            await _send_json(send, 408, {
                "error_code": "BAD_REQUEST",
                "message": f"The request body did not arrive within {self.timeout:g} seconds."}, scope)
