"""Credentials -> principal. Reads HTTP Basic (user:password; a token in the password place also
works) and Bearer tokens by default; a dialect whose clients send keys otherwise registers a
reader for its path prefix (`register_key_reader`, docs/auth.md). Verified passwords are
remembered (keyed by a keyed hash of the credential, never the password) so that the MLflow
client's Basic header on every request costs one argon2 verification, not one per request.
Repeated failures from one client address are slowed down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from starlette.datastructures import Headers

from runledger.auth import tokens
from runledger.auth.state import SharedAuthState
from runledger.auth.vault import SecretStore, verify_password


@dataclass(frozen=True, slots=True)
class Principal:
    username: str
    is_admin: bool
    via: str          # "password" | "token"


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presented: a user and password, or a token (`username` None)."""
    username: str | None
    secret: str


class Unauthenticated(Exception):
    """No credentials, or wrong ones; the message never repeats what was sent."""


# ----- reading credentials from a request

KeyReader = Callable[[Headers], "Credential | None"]


def basic_or_bearer(headers: Headers) -> Credential | None:
    """MLflow's client: Basic (MLFLOW_TRACKING_USERNAME/PASSWORD) or Bearer (MLFLOW_TRACKING_TOKEN)."""
    auth = headers.get("authorization")
    if not auth:
        return None
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer":
        return Credential(None, value.strip())
    if scheme.lower() == "basic":
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return Credential("", "")      # malformed: fails like a wrong password
        return Credential(user, password) if sep else Credential("", "")
    return Credential("", "")


def bare_key(headers: Headers) -> Credential | None:
    """`Authorization: <key>` with no scheme (Comet's clients), else what basic_or_bearer reads."""
    auth = (headers.get("authorization") or "").strip()
    if auth and " " not in auth:
        return Credential(None, auth)
    return basic_or_bearer(headers)


def basic_api_key(headers: Headers) -> Credential | None:
    """Basic `api:<key>` (the wandb client): the password is the token, the user name is ignored."""
    found = basic_or_bearer(headers)
    if found is not None and found.username is not None and tokens.looks_like_token(found.secret):
        return Credential(None, found.secret)
    return found


_KEY_READERS: dict[str, KeyReader] = {}


def register_key_reader(path_prefix: str, reader: KeyReader) -> None:
    """The one-line hook for a dialect: requests under `path_prefix` present keys as `reader` reads them."""
    _KEY_READERS[path_prefix] = reader


def key_reader(path: str) -> KeyReader:
    for prefix, reader in _KEY_READERS.items():
        if path.startswith(prefix):
            return reader
    return basic_or_bearer


# ----- slowing down repeated failures

class FailureThrottle:
    """After `free` failures within `window` seconds from one client, each further attempt waits
    `base` seconds, doubling per failure up to `cap`. A success clears the client's count."""

    def __init__(self, free: int = 5, window: float = 60.0, base: float = 0.25, cap: float = 5.0,
                 max_clients: int = 10_000) -> None:
        self.free, self.window, self.base, self.cap = free, window, base, cap
        self.max_clients = max_clients
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def delay(self, client: str) -> float:
        with self._lock:
            count, since = self._failures.get(client, (0, 0.0))
        if count < self.free or time.monotonic() - since > self.window:
            return 0.0
        return min(self.cap, self.base * 2 ** (count - self.free))

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            count, since = self._failures.pop(client, (0, now))
            if now - since > self.window:
                count, since = 0, now
            self._failures[client] = (count + 1, since)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


# ----- verifying

class Authenticator:
    def __init__(self, state: SharedAuthState, vault: SecretStore, cache_size: int = 4096) -> None:
        self.state = state
        self.vault = vault
        self.throttle = FailureThrottle()
        self._key = os.urandom(32)      # keys the verified-credential cache; never leaves the process
        self._verified: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def authenticate(self, credential: Credential | None, now_ms: int) -> Principal:
        if credential is None:
            raise Unauthenticated("Authentication required: send HTTP Basic credentials or a Bearer token.")
        if credential.username is None or tokens.looks_like_token(credential.secret):
            found = self._by_token(credential.secret, now_ms)
            if found is not None and credential.username not in (None, "", found.username, "api", "token"):
                found = None      # a token presented under another user's name
        else:
            found = self._by_password(credential.username, credential.secret)
        if found is None:
            raise Unauthenticated("Invalid credentials (unknown user, wrong password, or a revoked or expired token).")
        return found

    def _by_token(self, token: str, now_ms: int) -> Principal | None:
        parts = tokens.split(token)
        if parts is None:
            return None
        token_id, secret = parts
        info = self.state.state.tokens.get(token_id)
        stored = self.vault.token_hash(token_id)
        # compared even when the id is unknown, so timing does not tell ids apart
        good = hmac.compare_digest(tokens.secret_hash(secret), stored or "0" * 64)
        if not good or info is None or stored is None:
            return None
        if info.expires_at is not None and info.expires_at <= now_ms:
            return None
        user = self.state.state.users.get(info.username)
        return None if user is None else Principal(user.username, user.is_admin, "token")

    def remembered(self, credential: Credential) -> Principal | None:
        """A password verified before (and unchanged since): no argon2 run, so callers may ask
        on the event loop before handing a miss to a thread."""
        if credential.username is None:
            return None
        user = self.state.state.users.get(credential.username)
        if user is None:
            return None
        cache_key = hmac.new(self._key, f"{credential.username}\0{credential.secret}".encode(), hashlib.sha256).digest()
        with self._lock:
            hit = self._verified.get(cache_key)
        if hit is not None and hit == (credential.username, self.vault.password_hash(credential.username)):
            return Principal(user.username, user.is_admin, "password")
        return None

    def _by_password(self, username: str, password: str) -> Principal | None:
        user = self.state.state.users.get(username)
        stored = self.vault.password_hash(username) if user is not None else None
        cache_key = hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            hit = self._verified.get(cache_key)
        if hit is not None and user is not None and hit == (username, stored):
            return Principal(username, user.is_admin, "password")
        if not verify_password(stored, password) or user is None:
            return None
        with self._lock:
            self._verified[cache_key] = (username, stored or "")
            while len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return Principal(username, user.is_admin, "password")
