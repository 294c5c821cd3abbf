"""Users, grants and tokens as commands: each checks against the folded state, appends one fact
to the log (ingest.contract.events, AUTH_EVENTS) and returns once the projector applied it; the
fold of those facts (runledger.auth.state) is fed from the projector's commits and, at start,
from the read model's event log, so a replay of the log gives the same answers.

Secrets go to the vault (runledger.auth.vault) only after their fact is accepted."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import orjson

from runledger.auth import tokens
from runledger.auth.authenticator import Authenticator
from runledger.auth.permissions import Permission
from runledger.auth.state import SharedAuthState, TokenInfo, User
from runledger.auth.vault import SecretStore
from runledger.ingest.contract.events import AUTH_EVENTS
from runledger.ingest.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from runledger.ingest.writer import Writer, new_event

MAX_USERNAME = 256


def load_facts(con: Any) -> list[tuple[str, dict[str, Any], int]]:
    """The accepted authentication facts in log order, from the read model's event log."""
    types = sorted(AUTH_EVENTS)
    rows = con.execute(
        f"SELECT type, payload, ingest_time FROM main.event_log WHERE error_code IS NULL AND type IN "
        f"({', '.join('?' for _ in types)}) ORDER BY \"partition\", \"offset\"", types).fetchall()
    return [(t, orjson.loads(p) if isinstance(p, (str, bytes)) else dict(p or {}), it or 0) for t, p, it in rows]


class AuthService:
    def __init__(self, writer: Writer, shared: SharedAuthState, vault: SecretStore,
                 default: Permission = Permission.READ, visible: Callable[[], None] | None = None,
                 free_failures: int = 5) -> None:
        # `visible` blocks until every answered event is committed (and so folded here): the
        # verdict comes before the commit, and a command's caller must see its effect next.
        self.visible = visible
        self.writer = writer
        self.shared = shared
        self.vault = vault
        self.default = default
        self.authenticator = Authenticator(shared, vault)
        self.authenticator.throttle.free = free_failures

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.shared.state

    # ----- feeding the fold
    def committed(self, changes: Any) -> None:
        """A store apply listener: fold the batch's accepted authentication facts."""
        facts = [(e.type, e.payload or {}, e.ingest_time or 0) for e in changes.log
                 if e.type in AUTH_EVENTS and e.error_code is None]
        if facts:
            self.shared.apply_all(facts)

    # ----- users
    def user(self, username: str) -> User:
        found = self.state.users.get(username)
        if found is None:
            raise ResourceDoesNotExist(f"User with username={username} not found")
        return found

    async def _fact(self, type_: str, payload: dict[str, Any], experiment_id: str | None = None,
                    event_id: str | None = None) -> None:
        await self.writer.commit(new_event(type_, payload, user="", experiment_id=experiment_id, event_id=event_id))
        if self.visible is not None:
            await asyncio.to_thread(self.visible)

    async def create_user(self, username: str, password: str, is_admin: bool = False,
                          event_id: str | None = None) -> User:
        if not username or len(username) > MAX_USERNAME or ":" in username:
            raise InvalidParameterValue("A username must be 1 to 256 characters, without ':'.")
        if not password:
            raise InvalidParameterValue("A password must not be empty.")
        if username in self.state.users:
            raise ResourceAlreadyExists(f"User '{username}' already exists")
        await self._fact("UserCreated", {"username": username, "is_admin": is_admin}, event_id=event_id)
        self.vault.set_password(username, password)
        return self.user(username)

    async def update_password(self, username: str, password: str) -> None:
        self.user(username)
        if not password:
            raise InvalidParameterValue("A password must not be empty.")
        await self._fact("PasswordChanged", {"username": username})
        self.vault.set_password(username, password)

    async def set_admin(self, username: str, is_admin: bool) -> None:
        self.user(username)
        await self._fact("UserAdminSet", {"username": username, "is_admin": is_admin})

    async def delete_user(self, username: str) -> None:
        self.user(username)
        owned = [t for t, info in self.state.tokens.items() if info.username == username]
        await self._fact("UserDeleted", {"username": username})
        self.vault.forget_user(username)
        for token_id in owned:
            self.vault.forget_token(token_id)

    # ----- grants
    async def grant(self, username: str, experiment_id: str, permission: str) -> None:
        self.user(username)
        try:
            level = Permission.parse(permission)
        except ValueError as e:
            raise InvalidParameterValue(str(e)) from None
        await self._fact("PermissionGranted", {"username": username, "experiment_id": experiment_id,
                                               "permission": level.name}, experiment_id=experiment_id)

    async def revoke(self, username: str, experiment_id: str) -> None:
        self.user(username)
        if (username, experiment_id) not in self.state.grants:
            raise ResourceDoesNotExist(f"No permission for user '{username}' on experiment {experiment_id}")
        await self._fact("PermissionRevoked", {"username": username, "experiment_id": experiment_id},
                         experiment_id=experiment_id)

    def effective(self, username: str, experiment_id: str) -> Permission:
        user = self.user(username)
        return Permission.MANAGE if user.is_admin else self.state.permission(username, experiment_id, self.default)

    # ----- tokens
    async def create_token(self, username: str, name: str = "", expires_at: int | None = None) -> tuple[TokenInfo, str]:
        self.user(username)
        if expires_at is not None and expires_at <= time.time_ns() // 1_000_000:
            raise InvalidParameterValue("A token's expiry must be in the future.")
        token_id, token, digest = tokens.new_token()
        self.vault.set_token(token_id, digest)    # a hash without its fact authenticates nothing
        await self._fact("TokenCreated", {"token_id": token_id, "username": username, "name": name,
                                          "expires_at": expires_at})
        return self.state.tokens[token_id], token

    async def revoke_token(self, token_id: str) -> None:
        if token_id not in self.state.tokens:
            raise ResourceDoesNotExist(f"No live token with id {token_id}")
        await self._fact("TokenRevoked", {"token_id": token_id})
        self.vault.forget_token(token_id)
