"""What every byte store offers the artifact routes, and the staging both stores share.

Bytes never pass through Kafka (docs/design.md, invariant 13): an upload streams into a staging
file (never into memory, never where readers look), its size and SHA-256 are taken on the
way, and `commit` makes it visible at once (an atomic rename on disk, a single PUT of a
finished object on S3). A failed or abandoned upload is removed from staging and was never
visible. Keys are relative POSIX paths already checked by `artifact_store.paths`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

CHUNK = 1 << 20   # read and write in 1 MiB pieces: few syscalls and thread hops, flat memory


class NotFound(LookupError):
    """No file at that path (a folder, or nothing)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One child of a listed folder: its name, whether it is a folder, its size if a file."""

    name: str
    is_dir: bool
    size: int | None


class Staged:
    """An upload in progress: a temporary file in the staging folder, hashed as it is written.
    `publish` (given by the store) moves the finished file to its key."""

    def __init__(self, staging: Path, publish: Callable[[Path], None]) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging, prefix="upload-")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._hash = hashlib.sha256()
        self._publish = publish
        self.size = 0
        self.done = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.write_many([data])

    def write_many(self, chunks: list[bytes | bytearray | memoryview]) -> None:
        """Hash and append `chunks` (one writev; the pieces are not joined into a copy first)."""
        for c in chunks:
            self._hash.update(c)   # hashlib releases the GIL on large buffers
        fd = self._file.fileno()
        pending = [memoryview(c) for c in chunks if len(c)]
        while pending:
            done = os.writev(fd, pending)
            self.size += done
            while pending and done >= len(pending[0]):
                done -= len(pending[0])
                pending.pop(0)
            if pending and done:
                pending[0] = pending[0][done:]

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def commit(self) -> None:
        """Make the file visible at its key, all at once."""
        self.close()
        self._publish(self.path)
        self.done = True
        self.path.unlink(missing_ok=True)  # S3 uploads a copy; on disk the rename moved it already

    def abort(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.done = True


class ArtifactStore(Protocol):
    """A byte store for artifacts (local folder or S3-compatible bucket)."""

    description: str

    def begin(self, key: str) -> Staged:
        """A staged upload that `commit` publishes at `key` (replacing a file already there)."""
        ...

    def size(self, key: str) -> int:
        """The size of the file at `key`; NotFound if there is none (or it is a folder)."""
        ...

    def read(self, key: str, start: int = 0) -> Iterator[bytes]:
        """The bytes of the file at `key` in CHUNK pieces; NotFound if there is none."""
        ...

    def list(self, key: str) -> list[Entry]:
        """The children of the folder `key` ("" = the root), sorted by name; [] if it is no folder."""
        ...

    def files(self, key: str) -> list[tuple[str, int]]:
        """(key, size) of the file `key` or of every file under the folder `key`."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file `key` or the folder `key` with everything in it."""
        ...


class MultipartStaging:
    """Parts of MLflow multipart uploads, kept on local disk until the upload completes: the
    parts arrive in any order and in parallel, the finished file is assembled once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def new_upload(self, key: str) -> str:
        """A new upload to `key`; its id (128 random bits) is what lets parts be sent to it."""
        upload_id = uuid.uuid4().hex
        folder = self.folder / upload_id
        folder.mkdir(parents=True, mode=0o700)
        (folder / "target").write_text(key, encoding="utf-8")
        return upload_id

    def target(self, upload_id: str) -> str | None:
        """The key the upload `upload_id` is for, or None if there is no such upload."""
        try:
            return (self._dir(upload_id) / "target").read_text(encoding="utf-8")
        except (NotFound, OSError):
            return None

    def _dir(self, upload_id: str) -> Path:
        if len(upload_id) != 32 or not all(c in "0123456789abcdef" for c in upload_id):
            raise NotFound(upload_id)
        path = self.folder / upload_id
        if not path.is_dir():
            raise NotFound(upload_id)
        return path

    def exists(self, upload_id: str) -> bool:
        try:
            self._dir(upload_id)
            return True
        except NotFound:
            return False

    def part(self, upload_id: str, number: int) -> Staged:
        folder = self._dir(upload_id)
        final = folder / f"part-{number:05d}"
        return Staged(folder / "incoming", lambda tmp: os.replace(tmp, final))

    def parts(self, upload_id: str) -> dict[int, Path]:
        folder = self._dir(upload_id)
        return {int(p.name[5:]): p for p in folder.glob("part-*")}

    def assemble(self, upload_id: str, numbers: list[int], into: Staged) -> None:
        """Copy the parts `numbers`, in that order, into the staged upload `into`."""
        have = self.parts(upload_id)
        missing = [n for n in numbers if n not in have]
        if missing:
            raise NotFound(f"parts {missing} were never uploaded")
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        for n in numbers:
            with open(have[n], "rb", buffering=0) as f:
                while read := f.readinto(buf):
                    into.write(view[:read])

    def discard(self, upload_id: str) -> None:
        shutil.rmtree(self._dir(upload_id), ignore_errors=True)
