"""Result snapshots for paged searches: every page of one search comes from the id list the
first page computed, so runs created, deleted or re-ranked while a client pages are neither
repeated nor skipped. Bounded: the oldest snapshots are dropped past `max_cursors` or `ttl`.
A snapshot is whatever the search keeps (query.reader: the ordered ids, a list or an Arrow
array, and the searched experiment ids)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Any


class SearchCursors:
    def __init__(self, max_cursors: int = 256, ttl_seconds: float = 900.0) -> None:
        self._max = max_cursors
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def put(self, ids: Any, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        cursor = secrets.token_hex(8)
        with self._lock:
            self._items[cursor] = (now, ids)
            self._evict(now)
        return cursor

    def get(self, cursor: str, now: float | None = None) -> Any:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._evict(now)
            item = self._items.get(cursor)
            return None if item is None else item[1]

    def _evict(self, now: float) -> None:
        while self._items and (len(self._items) > self._max or next(iter(self._items.values()))[0] < now - self._ttl):
            self._items.popitem(last=False)
