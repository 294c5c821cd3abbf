"""One server per data folder: an advisory lock on `<data dir>/runledger.lock`.

Taken by `runledger up` and `runledger serve` before anything else starts (broker, DuckDB), so a
second instance on the same folder stops at once with a clear message instead of failing on
DuckDB's file lock after it has touched the first instance's broker. The operating system
releases the lock when the process dies, however it dies, so a stale file never blocks a start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirInUse(RuntimeError):
    """Another process holds the data folder's lock; the message says which and what to do."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "runledger.lock"
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"another Runledger (pid {holder}) is already using the data folder {self.path.parent.resolve()}; "
                f"stop it first, or give this one its own folder with --data-dir / RUNLEDGER_DATA_DIR") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
