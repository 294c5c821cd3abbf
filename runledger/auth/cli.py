"""`runledger users ...` and `runledger tokens ...`: managing users and tokens without a running
server (the first admin, a lost password). Facts go straight to the log, secrets to the data
folder's vault; a running server picks up both (its projector folds the facts, the vault is
re-read when it changes). Needs the same RUNLEDGER_DATA_DIR and broker as the server."""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from typing import Any

from runledger.auth import tokens
from runledger.auth.vault import SecretStore
from runledger.ingest.producer import EventLog
from runledger.ingest.writer import new_event
from runledger.settings import Settings, SettingsError


def _password(from_stdin: bool) -> str:
    password = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass("Password: ")
    if not password:
        raise SystemExit("runledger: the password must not be empty")
    return password


def _append(settings: Settings, bootstrap: str, facts: list[tuple[str, dict[str, Any], str | None]]) -> None:
    async def go() -> None:
        log = EventLog(bootstrap, settings.topic, send_timeout=settings.kafka_timeout)
        await log.start()
        try:
            await log.append([new_event(t, p, user="runledger-cli", experiment_id=e) for t, p, e in facts])
        finally:
            await log.stop()
    asyncio.run(go())


def _broker(bootstrap: str | None) -> str:
    if bootstrap is None:
        raise SettingsError("no broker: set RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS or start the local one")
    return bootstrap


def add_user(settings: Settings, bootstrap: str | None, username: str, admin: bool, from_stdin: bool) -> int:
    # As MLflow's users/create answers RESOURCE_ALREADY_EXISTS: adding a name that already has a
    # password would silently replace it (the fold ignores a second UserCreated, the vault would
    # not). Changing a password is its own, explicit command.
    if SecretStore(settings.data_dir).password_hash(username) is not None:
        raise SystemExit(f"runledger: user '{username}' already exists (RESOURCE_ALREADY_EXISTS); nothing was "
                         f"changed. To set a new password: runledger users password {username}")
    password = _password(from_stdin)
    _append(settings, _broker(bootstrap), [("UserCreated", {"username": username, "is_admin": admin}, None)])
    SecretStore(settings.data_dir).set_password(username, password)
    print(f"user {username} created{' (admin)' if admin else ''}")
    return 0


def set_password(settings: Settings, bootstrap: str | None, username: str, from_stdin: bool) -> int:
    password = _password(from_stdin)
    _append(settings, _broker(bootstrap), [("PasswordChanged", {"username": username}, None)])
    SecretStore(settings.data_dir).set_password(username, password)
    print(f"password of {username} set")
    return 0


def grant(settings: Settings, bootstrap: str | None, username: str, experiment_id: str, permission: str) -> int:
    _append(settings, _broker(bootstrap), [("PermissionGranted", {
        "username": username, "experiment_id": experiment_id, "permission": permission}, experiment_id)])
    print(f"{username}: {permission} on experiment {experiment_id}")
    return 0


def create_token(settings: Settings, bootstrap: str | None, username: str, name: str,
                 expires_days: float | None) -> int:
    token_id, token, digest = tokens.new_token()
    expires = None if expires_days is None else int((time.time() + expires_days * 86400) * 1000)
    SecretStore(settings.data_dir).set_token(token_id, digest)
    _append(settings, _broker(bootstrap), [("TokenCreated", {"token_id": token_id, "username": username,
                                                              "name": name, "expires_at": expires}, None)])
    print(token)     # shown once: only its hash is kept
    return 0


def revoke_token(settings: Settings, bootstrap: str | None, token_id: str) -> int:
    _append(settings, _broker(bootstrap), [("TokenRevoked", {"token_id": token_id}, None)])
    SecretStore(settings.data_dir).forget_token(token_id)
    print(f"token {token_id} revoked")
    return 0
