"""`runledger users ...` and `runledger tokens ...`: managing users and tokens without a running
server (the first admin, a lost password). Facts go straight to the log, secrets to the data
folder's vault; a running server picks up both (its projector folds the facts, the vault is
re-read when it changes). Needs the same RUNLEDGER_DATA_DIR and broker as the server."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from typing import Any

from runledger.auth import tokens
from runledger.auth.permissions import Permission
from runledger.auth.vault import SecretStore
from runledger.ingest.producer import EventLog
from runledger.ingest.writer import new_event
from runledger.settings import Settings


def add_parsers(sub: Any) -> None:
    users = sub.add_parser("users", help="manage users (authentication: docs/auth.md)")
    usub = users.add_subparsers(dest="users_command", required=True)
    add = usub.add_parser("add", help="create a user (the password is asked for, or read from stdin)")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="the user is an admin")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd = usub.add_parser("password", help="set a user's password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    grant = usub.add_parser("grant", help="grant a user a permission on an experiment")
    grant.add_argument("username")
    grant.add_argument("experiment_id")
    grant.add_argument("permission", choices=[p.name for p in Permission])
    toks = sub.add_parser("tokens", help="manage API tokens")
    tsub = toks.add_subparsers(dest="tokens_command", required=True)
    create = tsub.add_parser("create", help="create a token for a user; printed once")
    create.add_argument("username")
    create.add_argument("--name", default="")
    create.add_argument("--expires-days", type=float, default=None)
    revoke = tsub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")


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


def run(args: argparse.Namespace, settings: Settings, bootstrap: str | None) -> int:
    if bootstrap is None:
        print("runledger: no broker (set RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS or start the local one)", file=sys.stderr)
        return 1
    vault = SecretStore(settings.data_dir)
    if args.command == "users":
        if args.users_command == "add":
            password = _password(args.password_stdin)
            _append(settings, bootstrap, [("UserCreated", {"username": args.username, "is_admin": args.admin}, None)])
            vault.set_password(args.username, password)
            print(f"user {args.username} created{' (admin)' if args.admin else ''}")
        elif args.users_command == "password":
            password = _password(args.password_stdin)
            _append(settings, bootstrap, [("PasswordChanged", {"username": args.username}, None)])
            vault.set_password(args.username, password)
            print(f"password of {args.username} set")
        else:
            _append(settings, bootstrap, [("PermissionGranted", {
                "username": args.username, "experiment_id": args.experiment_id, "permission": args.permission},
                args.experiment_id)])
            print(f"{args.username}: {args.permission} on experiment {args.experiment_id}")
        return 0
    if args.tokens_command == "create":
        token_id, token, digest = tokens.new_token()
        expires = None if args.expires_days is None else int((time.time() + args.expires_days * 86400) * 1000)
        vault.set_token(token_id, digest)
        _append(settings, bootstrap, [("TokenCreated", {"token_id": token_id, "username": args.username,
                                                         "name": args.name, "expires_at": expires}, None)])
        print(token)     # shown once: only its hash is kept
        return 0
    _append(settings, bootstrap, [("TokenRevoked", {"token_id": args.token_id}, None)])
    vault.forget_token(args.token_id)
    print(f"token {args.token_id} revoked")
    return 0
