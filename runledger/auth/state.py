"""Who exists, who is an admin, who may do what on which experiment, which tokens are live:
a pure fold of the log's authentication facts (ingest.contract.events, AUTH_EVENTS).

The same facts folded in the same order give the same answers, which is what makes a replay of
the log reproduce every permission decision (tests/test_auth_replay.py). Secrets are not here:
a token id is only half a token (runledger.auth.secrets holds the hashes).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from runledger.auth.permissions import Permission


@dataclass
class User:
    username: str
    user_id: int          # MLflow's user objects carry a number: the order of creation
    is_admin: bool = False


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    username: str
    name: str
    created_at: int
    expires_at: int | None


@dataclass
class AuthState:
    users: dict[str, User] = field(default_factory=dict)
    grants: dict[tuple[str, str], Permission] = field(default_factory=dict)   # (username, experiment) -> level
    tokens: dict[str, TokenInfo] = field(default_factory=dict)                 # live tokens only
    next_user_id: int = 1
    version: int = 0      # bumps on every applied fact: caches keyed on it stay correct

    def apply(self, type_: str, payload: dict[str, Any], ingest_time: int = 0) -> None:
        """Fold one accepted fact. Facts are idempotent and never refused here: the routes
        check before appending, and two racing requests converge on the same state."""
        self.version += 1
        name = payload.get("username")
        if type_ == "UserCreated":
            if name not in self.users:
                self.users[name] = User(name, self.next_user_id, bool(payload.get("is_admin")))
                self.next_user_id += 1
        elif type_ == "UserDeleted":
            self.users.pop(name, None)
            for key in [k for k in self.grants if k[0] == name]:
                del self.grants[key]
            for tid in [t for t, info in self.tokens.items() if info.username == name]:
                del self.tokens[tid]
        elif type_ == "UserAdminSet":
            if name in self.users:
                self.users[name].is_admin = bool(payload.get("is_admin"))
        elif type_ == "PermissionGranted":
            if name in self.users:
                self.grants[(name, str(payload["experiment_id"]))] = Permission.parse(payload["permission"])
        elif type_ == "PermissionRevoked":
            self.grants.pop((name, str(payload["experiment_id"])), None)
        elif type_ == "TokenCreated":
            if name in self.users:
                tid = payload["token_id"]
                self.tokens[tid] = TokenInfo(tid, name, payload.get("name") or "", ingest_time,
                                             payload.get("expires_at"))
        elif type_ == "TokenRevoked":
            self.tokens.pop(payload["token_id"], None)
        # PasswordChanged: an audited fact; the hash itself lives in the secrets file.

    def permission(self, username: str, experiment_id: str, default: Permission) -> Permission:
        return self.grants.get((username, experiment_id), default)

    def grants_of(self, username: str) -> dict[str, Permission]:
        return {exp: p for (user, exp), p in self.grants.items() if user == username}


class SharedAuthState:
    """The state behind a lock: the projector's thread applies facts while request handlers read."""

    def __init__(self) -> None:
        self.state = AuthState()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def apply_all(self, facts: Iterable[tuple[str, dict[str, Any], int]]) -> None:
        with self.lock:
            for type_, payload, time in facts:
                self.state.apply(type_, payload, time)
            self.changed.notify_all()
