"""The caller's rights for one request, for handlers that check or filter themselves (the stream
endpoint, SQL, the audit trail, token management). The gate (runledger.auth.gate) puts it in the
request's scope; with authentication off every request gets the unrestricted `OPEN` access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

from runledger.auth.authenticator import Principal
from runledger.auth.permissions import Permission
from runledger.auth.state import SharedAuthState
from runledger.ingest.errors import PermissionDenied

SCOPE_KEY = "runledger.access"


@dataclass(frozen=True, slots=True)
class ReadScope:
    """Which experiments a caller may read: all; only `ids` ("allow"); all but `ids` ("deny")."""
    mode: Literal["all", "allow", "deny"]
    ids: tuple[str, ...] = ()

    def allows(self, experiment_id: str | None) -> bool:
        if self.mode == "all":
            return True
        if experiment_id is None:
            return False      # facts about no experiment (users, tokens): admins only
        return (experiment_id in self.ids) == (self.mode == "allow")


ALL = ReadScope("all")


@dataclass(frozen=True, slots=True)
class Access:
    principal: Principal | None          # None: authentication is off
    shared: SharedAuthState | None = None
    default: Permission = Permission.READ

    @property
    def unrestricted(self) -> bool:
        return self.principal is None or self.principal.is_admin

    @property
    def username(self) -> str | None:
        return None if self.principal is None else self.principal.username

    def permission(self, experiment_id: str) -> Permission:
        if self.unrestricted:
            return Permission.MANAGE
        assert self.shared is not None and self.principal is not None
        return self.shared.state.permission(self.principal.username, experiment_id, self.default)

    def require(self, experiment_id: str, level: Permission) -> None:
        if self.permission(experiment_id) < level:
            raise PermissionDenied(
                f"Permission denied: user '{self.username}' needs {level.name} on experiment {experiment_id}.")

    def read_scope(self) -> ReadScope:
        if self.unrestricted:
            return ALL
        assert self.shared is not None and self.principal is not None
        grants = self.shared.state.grants_of(self.principal.username)
        if self.default >= Permission.READ:
            return ReadScope("deny", tuple(sorted(e for e, p in grants.items() if p < Permission.READ)))
        return ReadScope("allow", tuple(sorted(e for e, p in grants.items() if p >= Permission.READ)))


OPEN = Access(None)


def access(conn: HTTPConnection) -> Access:
    found = conn.scope.get("state", {}).get(SCOPE_KEY)
    if found is not None:
        return found
    if getattr(conn.app.state.settings, "auth", False):
        # fail closed: with authentication on, only the gate hands out access
        raise PermissionDenied("Permission denied: this request was not authorised.")
    return OPEN
