"""A deadline on request headers, which uvicorn does not have.

uvicorn closes idle keep-alive connections, and `http_guards.BodyTimeoutMiddleware` cuts off
stalled bodies, but a client that opens a connection and then sends nothing, or its headers a
byte at a time (slowloris), is held open forever: the app is only called once the headers are
complete. This protocol closes such a connection when its headers are not complete within
`header_timeout` seconds of the connection opening or of the request's first byte.

It extends uvicorn's httptools protocol through its parser callbacks (connection_made,
on_message_begin, on_headers_complete, connection_lost); without httptools the server runs
uvicorn's default protocol, without this deadline.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from runledger.request_timing import ARRIVED_KEY

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency; this keeps the server usable without it
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def protocol_with_header_deadline(header_timeout: float) -> Any:
    """uvicorn's `http=` argument: the httptools protocol with a header deadline, or "auto"."""
    if HttpToolsProtocol is None:
        return "auto"

    class HeaderDeadlineProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # when the request's first byte was parsed: runledger.request_timing's `queued` phase
            self.scope[ARRIVED_KEY] = perf_counter()  # type: ignore[literal-required]
            if self._header_timer is None:  # a further request on a kept-alive connection
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol
