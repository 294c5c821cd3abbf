"""Password hashes (argon2id, argon2-cffi) and token hashes, in one file of the data folder
(`auth-secrets.json`, mode 0600), never in the log, the read model or any answer (docs/auth.md).

Written whole to a temporary file and renamed, so a reader never sees half a file; re-read when
its modification time changes, so `runledger users add` run next to a live server takes effect.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

FILE_NAME = "auth-secrets.json"
# argon2id at OWASP's recommended minimum (19 MiB, 2 passes): a verification is a few ms of one
# core, and the gate remembers verified credentials, so MLflow's Basic header on every request
# costs one verification per process, not one per request.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the user does not exist, so an unknown name costs what a wrong password does.
_DUMMY_HASH = _hasher.hash("runledger-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant in the password (argon2 compares in constant time); an unknown user costs the same."""
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class SecretStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._doc: dict[str, dict[str, str]] = {"passwords": {}, "tokens": {}}

    def _fresh(self) -> dict[str, dict[str, str]]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self._doc
        if mtime != self._mtime:
            with self._lock:
                doc = json.loads(self.path.read_text())
                self._doc = {"passwords": dict(doc.get("passwords", {})), "tokens": dict(doc.get("tokens", {}))}
                self._mtime = mtime
        return self._doc

    def password_hash(self, username: str) -> str | None:
        return self._fresh()["passwords"].get(username)

    def token_hash(self, token_id: str) -> str | None:
        return self._fresh()["tokens"].get(token_id)

    def set_password(self, username: str, password: str) -> None:
        digest = hash_password(password)
        self._update(lambda doc: doc["passwords"].__setitem__(username, digest))

    def set_token(self, token_id: str, digest: str) -> None:
        self._update(lambda doc: doc["tokens"].__setitem__(token_id, digest))

    def forget_user(self, username: str) -> None:
        self._update(lambda doc: doc["passwords"].pop(username, None))

    def forget_token(self, token_id: str) -> None:
        self._update(lambda doc: doc["tokens"].pop(token_id, None))

    def _update(self, change: Any) -> None:
        self._fresh()
        with self._lock:
            doc = {"passwords": dict(self._doc["passwords"]), "tokens": dict(self._doc["tokens"])}
            change(doc)
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._doc = doc
            self._mtime = self.path.stat().st_mtime_ns
