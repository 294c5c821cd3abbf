"""Artifacts in a folder on the server's disk (by default `<RUNLEDGER_DATA_DIR>/artifacts`).

Besides the path checks every store gets (`artifact_store.paths`), a folder on disk can hold
symbolic links that someone with shell access put there; no component of a path may be one,
and files are opened with O_NOFOLLOW, so a link can never lead a read or a write outside.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Iterator

from runledger.artifact_store.base import CHUNK, Entry, NotFound, Staged
from runledger.artifact_store.paths import UnsafePath

STAGING = ".runledger-staging"   # inside the root: same file system, so publishing is a rename


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.staging = self.root / STAGING
        self.description = f"folder {self.root}"

    def _path(self, key: str) -> Path:
        """The path of `key` under the root, refusing symbolic links on the way."""
        if key.split("/", 1)[0] == STAGING:
            raise UnsafePath("that folder is reserved")
        path = self.root
        for seg in key.split("/") if key else []:
            path = path / seg
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue  # nothing further down exists either: nothing to follow
            if stat.S_ISLNK(mode):
                raise UnsafePath("the path goes through a symbolic link")
        return path

    def begin(self, key: str) -> Staged:
        target = self._path(key)

        def publish(tmp: Path) -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._path(key)  # checked again: a link may have appeared while the bytes came in
            if target.is_dir():
                raise IsADirectoryError(f"{key} is a folder")
            os.replace(tmp, target)
        return Staged(self.staging, publish)

    def _open(self, key: str) -> int:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None
        except OSError as e:
            if e.errno == 40:  # ELOOP: the last component is a link
                raise UnsafePath("the path is a symbolic link") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFound(key)
        return fd

    def size(self, key: str) -> int:
        fd = self._open(key)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def read(self, key: str, start: int = 0) -> Iterator[bytes]:
        fd = self._open(key)

        def chunks() -> Iterator[bytes]:
            try:
                if start:
                    os.lseek(fd, start, os.SEEK_SET)
                while data := os.read(fd, CHUNK):
                    yield data
            finally:
                os.close(fd)
        return chunks()

    def list(self, key: str) -> list[Entry]:
        path = self._path(key)
        if not path.is_dir() or path.is_symlink():
            return []
        out = []
        for child in sorted(os.scandir(path), key=lambda e: e.name):
            if not key and child.name == STAGING:
                continue
            if child.is_symlink():
                continue  # never shown, never followed
            if child.is_dir(follow_symlinks=False):
                out.append(Entry(child.name, True, None))
            elif child.is_file(follow_symlinks=False):
                out.append(Entry(child.name, False, child.stat(follow_symlinks=False).st_size))
        return out

    def files(self, key: str) -> list[tuple[str, int]]:
        path = self._path(key)
        if path.is_symlink():
            return []
        if path.is_file():
            return [(key, path.stat().st_size)]
        found = []
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    found.append((f"{rel}/{name}", os.lstat(full).st_size))
        return sorted(found)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
