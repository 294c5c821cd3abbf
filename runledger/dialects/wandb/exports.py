"""A finished run's history as a Parquet file, for `parquetHistory` (docs/wandb.md).

W&B's client (since 0.27) scans a run's history in its Go helper: it first asks `parquetHistory`
for the URLs of the run's exported history files, downloads them and reads them with its own
Parquet reader; only steps it was told are "live" (not exported yet) are fetched as GraphQL
`history` pages of 1,000 steps. Reading a local file is far cheaper for the client and for us
than a thousand GraphQL pages, so a finished run is exported.

Why only runs that are not RUNNING: the helper keeps downloaded files in its cache folder under
a name made of entity, project, run and the file's position in the list, and (by default) reuses
them without asking again. A run still being logged would then be read from a stale copy; a
running run is served through live pages as before, which are always current.

Files are content-addressed: the name carries a fingerprint of the run's points (count and an
XOR of their hashes; points are stored as a set, so this changes whenever the history does)
and of its start time, so a changed run gets a new file and a stale one is never served under
the new name. At most `MAX_FILES` runs' exports are kept on disk; the least recently used go first.
For the same reason (the helper's cache), a run whose history changed after this process first
handed out its export gets no export any more, only live pages: the helper may hold the first
export under the very name a second one would get (`handed_out`).

The URLs are signed like a bucket's presigned URLs, because the helper downloads them with a bare
HTTP client (no Authorization header): the signature covers run, fingerprint, the user the URL
was issued to and an expiry. Fetching re-checks that this user still has READ on the run's
experiment, so revoking a grant also revokes the URLs already handed out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import duckdb

from runledger.query import step_history

MAX_FILES = 32
MAX_REMEMBERED = 100_000     # runs whose first handed-out version is remembered
URL_TTL_S = 3600
ROUTE = "/wandb/history-exports/{run_id}/{version}/{part}.parquet"


@dataclass(frozen=True)
class Signed:
    """What a verified URL names."""
    run_id: str
    version: str
    user: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Exports:
    """Parquet exports of run histories in one folder, and the signing of their URLs."""

    def __init__(self, folder: Path, key: bytes | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        # Replicas behind one address must share the key (RUNLEDGER_WANDB_URL_KEY): the helper's
        # download may reach another replica than the one that answered parquetHistory.
        self._key = key or os.urandom(32)
        self._lock = threading.Lock()
        self._run_locks: dict[str, threading.Lock] = {}
        self._files: OrderedDict[tuple[str, str], list[Path]] = OrderedDict()   # [] = not exported
        self._first: OrderedDict[str, str] = OrderedDict()     # run id -> first version handed out
        for stale in self.folder.glob("*.parquet*"):   # left by an earlier process: unknown provenance
            stale.unlink(missing_ok=True)

    # ----- files

    @staticmethod
    def version(cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None) -> str | None:
        return step_history.history_fingerprint(cur, run_id, start_time)

    def kept(self, run_id: str, version: str) -> list[Path] | None:
        """The export of the run at `version` if it is on disk."""
        with self._lock:
            found = self._files.get((run_id, version))
            if found is not None and all(p.exists() for p in found):
                self._files.move_to_end((run_id, version))
                return found
        return None

    def path(self, cur: duckdb.DuckDBPyConnection, run_id: str, start_time: int | None,
             version: str) -> list[Path] | None:
        """The files of the run's export at `version` (the caller read it with `version()` on
        this cursor), written on first use; None when the run is not exported (see
        step_history.export_parquet)."""
        found = self.kept(run_id, version)
        if found is not None:
            return found
        with self._lock:
            run_lock = self._run_locks.setdefault(run_id, threading.Lock())
        with run_lock:   # two scans of one run at once write it once
            found = self.kept(run_id, version)
            if found is not None:
                return found
            target = self.folder / f"{hashlib.sha256(run_id.encode()).hexdigest()[:32]}-{version}.parquet"
            files = step_history.export_parquet(cur, run_id, start_time, target) or []
            with self._lock:
                self._files[(run_id, version)] = files
                self._files.move_to_end((run_id, version))
                dropped = [self._files.popitem(last=False)[1] for _ in range(max(len(self._files) - MAX_FILES, 0))]
                dropped += [self._files.pop(k) for k in [k for k in self._files if k[0] == run_id and k[1] != version]]
                self._run_locks.pop(run_id, None)
        for old in dropped:
            for p in old:
                p.unlink(missing_ok=True)
        return files or None

    def handed_out(self, run_id: str, version: str) -> bool:
        """Record that the run's export at `version` is handed out; False when another version
        of it was handed out before (the run changed: serve it as live pages)."""
        with self._lock:
            first = self._first.setdefault(run_id, version)
            self._first.move_to_end(run_id)
            while len(self._first) > MAX_REMEMBERED:
                self._first.popitem(last=False)
        return first == version

    # ----- URLs

    def _mac(self, run_id: str, version: str, user: str, expires: int) -> str:
        text = f"{run_id}\0{version}\0{user}\0{expires}".encode()
        return _b64(hmac.new(self._key, text, hashlib.sha256).digest())

    def url(self, base_url: str, run_id: str, version: str, part: int, user: str, now: float | None = None) -> str:
        from urllib.parse import quote, urlencode

        expires = int((now if now is not None else time.time()) + URL_TTL_S)
        query = urlencode({"user": user, "expires": expires, "sig": self._mac(run_id, version, user, expires)})
        path = ROUTE.format(run_id=quote(run_id, safe=""), version=version, part=part)
        return f"{base_url.rstrip('/')}{path}?{query}"

    def verify(self, run_id: str, version: str, user: str, expires: str, sig: str,
               now: float | None = None) -> Signed | None:
        """The URL's claims when its signature holds and it has not expired, else None."""
        if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
            return None
        if not hmac.compare_digest(self._mac(run_id, version, user, int(expires)), sig):
            return None
        return Signed(run_id, version, user)
