"""First pages of runs/search kept until the next write: a dashboard that re-runs the same
search every few seconds, on an experiment nobody is writing to, gets the page it got last time
without DuckDB matching, ordering and rendering it again.

Honesty: an entry is served only while nothing has been committed to the read model since it
was computed. Every commit drops runs from the rendered-run cache (`RunCache.drop_changed`)
before it counts as visible, and each drop advances `RunCache.token()`; an entry remembers the
token taken *before* its search read DuckDB and is served only while the token is still the
same. A reader waits for every write already answered before it looks here (`ReadService.cursor`),
so a search right after a write always misses and reads afresh: read-your-writes holds exactly as
for an uncached search (tests/test_search_cache.py). Any commit, to any experiment, ends every
entry: the cache helps read-mostly traffic and costs a dictionary look-up otherwise.

What is kept is the answer's content: the ordered ids of every matching run (the snapshot later
pages read) and the first page's rendered runs. A hit makes a fresh page-token snapshot from the
kept ids (query.search_cursors), so a hit's next page behaves as a fresh search's would.

Off when the rendered-run cache is off (`RUNLEDGER_RUN_CACHE_MB=0`): that setting is what "no
cached reads" means to an operator and to the benchmark's "run cache off" rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable

from runledger.query.run_cache import RunCache

__all__ = ["SearchCache", "CachedSearch"]

# Entries kept at most, and their size bound as a share of the rendered-run cache's bytes
# (an id costs ~64 bytes as a Python string or ~40 in an Arrow array; a rendered run its JSON).
_MAX_ENTRIES = 128
_SHARE = 4
_ID_BYTES = 64


@dataclass(frozen=True, slots=True)
class CachedSearch:
    ids: Any                   # every matching run id in order: a list or an Arrow array
    experiment_ids: list[str]  # the searched experiments (the snapshot later pages need)
    page: list[bytes]          # the first page's runs, rendered (their MLflow JSON)
    size: int


class SearchCache:
    def __init__(self, run_cache: RunCache, max_entries: int = _MAX_ENTRIES) -> None:
        self._runs = run_cache
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[int, CachedSearch]] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self._runs.max_bytes > 0 and self._max_entries > 0

    def token(self) -> int:
        """Take before the search reads DuckDB; give it to `put`."""
        return self._runs.token()

    def get(self, key: Hashable) -> CachedSearch | None:
        if not self.enabled:
            return None
        generation = self._runs.token()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] != generation:
                self._pop(key)   # a commit landed since: never valid again
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, token: int, ids: Any, experiment_ids: list[str], page: list[bytes]) -> None:
        """Keep a search computed from a read that began after `token` was taken; nothing is
        kept if a commit landed since (the answer may already be stale)."""
        if not self.enabled:
            return
        size = len(ids) * _ID_BYTES + sum(len(b) for b in page)
        budget = max(self._runs.max_bytes // _SHARE, 1)
        if size > budget:
            return
        with self._lock:
            if token != self._runs.token():
                return
            # Entries of an older generation can never be served again: clear them all at once.
            stale = [k for k, (g, _) in self._entries.items() if g != token]
            for k in stale:
                self._pop(k)
            self._pop(key)
            self._entries[key] = (token, CachedSearch(ids, list(experiment_ids), page, size))
            self._bytes += size
            while self._entries and (len(self._entries) > self._max_entries or self._bytes > budget):
                self._pop(next(iter(self._entries)))

    def _pop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1].size

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
