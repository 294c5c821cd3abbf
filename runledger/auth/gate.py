"""The ASGI middleware that enforces authentication and the rooms' rules on every request
(docs/auth.md). Innermost of the middlewares, so request ids, the Host check and body timeouts
apply to its refusals too; errors are rendered in the URL prefix's dialect shape.

Per request: find the route (as the router will), look up its rule (none: refused, to everyone),
authenticate (401), then check the rule: admins pass; a located experiment needs the rule's
level (403); listings have unreadable items taken out of the request (`filters`). A body needed
to locate the experiment is read once, here, and replayed to the route, which reuses the parsed
JSON (runledger.dialects.request.json_body).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runledger.auth import rules
from runledger.auth.access import SCOPE_KEY, Access
from runledger.auth.authenticator import Authenticator, Principal, Unauthenticated, key_reader
from runledger.auth.permissions import Permission
from runledger.auth.rules import Need, Rule, Where
from runledger.ingest import provenance
from runledger.ingest.errors import PermissionDenied, RunledgerError, Unauthenticated as UnauthenticatedError
from runledger.ingest.limits import MAX_REQUEST_BYTES

log = logging.getLogger(__name__)

JSON_KEY = "runledger.json"       # the parsed body, for json_body to reuse
_LEVELS = {Need.READ: Permission.READ, Need.EDIT: Permission.EDIT, Need.MANAGE: Permission.MANAGE}


class Located(Exception):
    """Internal: the request names nothing the rule can check (the route answers its own 400/404)."""


class AuthGate:
    def __init__(self, app: ASGIApp, *, routes: Callable[[], list[Any]], authenticator: Callable[[], Authenticator],
                 resolver: Callable[[Scope], "Resolver"], default: Permission,
                 render: Callable[[Request, RunledgerError], Any]) -> None:
        self.app = app
        self.routes = routes
        self.authenticator = authenticator
        self.resolver = resolver
        self.default = default
        self.render = render
        self._static: dict[str, list[Any]] | None = None
        self._dynamic: list[Any] = []

    # ----- routing: the app's route table, matched as the router will
    def _index(self) -> None:
        static: dict[str, list[_Compiled]] = {}
        for entry in rules.route_table(self.routes()):
            compiled = _Compiled(entry)
            if "{" not in entry.path and entry.methods is not None:
                static.setdefault(entry.path, []).append(compiled)
            else:
                self._dynamic.append(compiled)
        self._static = static

    def match(self, scope: Scope) -> tuple["_Compiled", dict[str, Any], bool] | None:
        """(route, path parameters, whether the method matches), or None for no route."""
        if self._static is None:
            self._index()
        assert self._static is not None
        partial = None
        for route in [*self._static.get(scope["path"], ()), *self._dynamic]:
            params = route.params(scope["path"])
            if params is None:
                continue
            if route.entry.methods is None or scope["method"] in route.entry.methods or \
                    (scope["method"] == "HEAD" and "GET" in route.entry.methods):
                return route, params, True
            if partial is None:
                partial = (route, params, False)
        return partial

    # ----- the request
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        matched = self.match(scope)
        rule: Rule | None = None
        if matched is not None:
            route, method = matched[0], scope["method"]
            if not matched[2]:
                rule = rules.Rule(Need.AUTHENTICATED)         # the app answers 405, once signed in
            else:
                rule = (rules.rule_for(method, route.entry.path)
                        or (rules.rule_for("GET", route.entry.path) if method == "HEAD" else None))
        if rule is not None and rule.need is Need.PUBLIC:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._authenticate(scope)
            access = Access(principal, self.authenticator().state, self.default)
            scope.setdefault("state", {})[SCOPE_KEY] = access
            if matched is None:
                rule = rules.Rule(Need.AUTHENTICATED)             # the app answers 404, once signed in
            if rule is None:
                raise PermissionDenied(f"No access rule is declared for {scope['method']} {scope['path']}; "
                                       "refused until one is (docs/auth.md).")
            receive = await self._check(scope, receive, rule, access, matched[1] if matched else {})
            scope["state"][rules.SCOPE_RULE_KEY] = (rule, matched[1] if matched else {})
        except (UnauthenticatedError, PermissionDenied) as e:
            await self._refuse(scope, receive, send, e)
            return
        current = provenance.current()
        token = provenance.bind(provenance.Provenance(
            current.request_id if current else None, current.api if current else provenance.API_RUNLEDGER,
            principal.username))
        try:
            await self.app(scope, receive, send)
        finally:
            provenance.unbind(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket route needs a rule keyed "WS /path" and valid credentials; an experiment
        it serves is checked by its handler (access(websocket)). Otherwise closed (1008)."""
        rule = rules.rule_for("WS", scope["path"])
        try:
            if rule is None:
                raise PermissionDenied("no access rule for this websocket")
            if rule.need is not Need.PUBLIC:
                principal = await self._authenticate(scope)
                access = Access(principal, self.authenticator().state, self.default)
                if rule.need is Need.ADMIN and not access.unrestricted:
                    raise PermissionDenied("admins only")
                scope.setdefault("state", {})[SCOPE_KEY] = access
        except (UnauthenticatedError, PermissionDenied):
            await receive()                     # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Principal:
        auth = self.authenticator()
        client = (scope.get("client") or ("?", 0))[0]
        wait = auth.throttle.delay(client)
        if wait:
            await asyncio.sleep(wait)
        headers = Headers(scope=scope)
        credential = key_reader(scope["path"])(headers)
        now_ms = time.time_ns() // 1_000_000
        try:
            found = auth.remembered(credential) if credential is not None else None
            if found is not None:
                principal = found
            elif credential is not None and credential.username is not None and not credential.secret.startswith("rl_"):
                # argon2 takes milliseconds: off the event loop
                principal = await asyncio.to_thread(auth.authenticate, credential, now_ms)
            else:
                principal = auth.authenticate(credential, now_ms)
        except Unauthenticated as e:
            if credential is not None:
                auth.throttle.failed(client)
            raise UnauthenticatedError(str(e)) from None
        auth.throttle.succeeded(client)
        return principal

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: RunledgerError) -> None:
        response = self.render(Request(scope, receive), error)
        if isinstance(error, UnauthenticatedError):
            response.headers["WWW-Authenticate"] = 'Basic realm="runledger"'
        await response(scope, receive, send)

    # ----- rules
    async def _check(self, scope: Scope, receive: Receive, rule: Rule, access: Access,
                     path_params: dict[str, Any]) -> Receive:
        need, where = rule.need, rule.where
        if need is Need.ADMIN:
            if not access.unrestricted:
                raise PermissionDenied(f"Permission denied: only admins may call {scope['method']} {scope['path']}.")
            return receive
        if need is Need.AUTHENTICATED or access.unrestricted or where is None or where.source == "handler":
            return receive
        doc: dict[str, Any] | None = None
        if where.source == "body":
            receive, doc = await _read_json(scope, receive)
        if need is Need.SELF_OR_ADMIN:
            name = _value(scope, doc, path_params, where)
            if name != access.username:
                raise PermissionDenied(f"Permission denied: only '{name}' themselves or an admin may do this.")
            return receive
        level = _LEVELS[need]
        resolve = self.resolver(scope)
        if where.kind == "experiment_filter":
            _restrict_experiment_filter(scope, doc, where, access)
            return receive
        if where.many:
            values = _values(scope, doc, where)
            kept = [v for v in values if _allowed(resolve, where.kind, v, access, level)]
            if len(kept) != len(values):
                if not rule.filters:
                    raise PermissionDenied(f"Permission denied: user '{access.username}' needs {level.name} on every "
                                           f"experiment named by '{where.field}'.")
                _replace(scope, doc, where.field, kept)
            return receive
        value = _value(scope, doc, path_params, where)
        if not isinstance(value, str) or not value:
            return receive           # the route answers its own 400
        exp = resolve(where.kind, value)
        if exp is None:
            return receive           # the route answers its own 404
        access.require(exp, level)
        return receive


Resolver = Callable[[str, str], "str | None"]


class _Compiled:
    def __init__(self, entry: rules.RouteEntry) -> None:
        from starlette.routing import compile_path

        self.entry = entry
        template = entry.path if entry.methods is not None else entry.path.rstrip("/") + "/{path:path}"
        self.regex, _, self.convertors = compile_path(template)
        self.mount_root = entry.path.rstrip("/") if entry.methods is None else None

    def params(self, path: str) -> dict[str, Any] | None:
        m = self.regex.match(path)
        if m is None:
            return None if self.mount_root is None or path != self.mount_root else {}
        return {k: self.convertors[k].convert(v) for k, v in m.groupdict().items()}


def _allowed(resolve: Resolver, kind: str, value: Any, access: Access, level: Permission) -> bool:
    if not isinstance(value, str):
        return True                  # the route refuses it
    exp = resolve(kind, value)
    return exp is None or access.permission(exp) >= level


async def _read_json(scope: Scope, receive: Receive) -> tuple[Receive, dict[str, Any] | None]:
    state = scope.setdefault("state", {})
    if JSON_KEY in state:
        return receive, state[JSON_KEY]
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        more = message.get("more_body", False)
        if size > MAX_REQUEST_BYTES:
            break
    raw = b"".join(chunks)
    pending: list[Message] = [{"type": "http.request", "body": raw, "more_body": more}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    doc = None
    content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    if not more and content_type == "application/json":
        try:
            parsed = orjson.loads(raw) if raw.strip() else {}
            if isinstance(parsed, str):
                parsed = orjson.loads(parsed)
            if isinstance(parsed, dict):
                doc = parsed
                state[JSON_KEY] = doc
        except orjson.JSONDecodeError:
            pass
    return replay, doc


def _value(scope: Scope, doc: dict[str, Any] | None, path_params: dict[str, Any], where: Where) -> Any:
    if where.source == "path":
        return path_params.get(where.field)
    if where.source == "query":
        q = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        return q.get(where.field) or (q.get(where.alias) if where.alias else None)
    if doc is None:
        return None
    return doc.get(where.field) or (doc.get(where.alias) if where.alias else None)


def _values(scope: Scope, doc: dict[str, Any] | None, where: Where) -> list[Any]:
    if where.source == "query":
        return [v for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
                if k == where.field]
    found = (doc or {}).get(where.field)
    if isinstance(found, str):
        return [found]
    return list(found) if isinstance(found, list) else []


def _replace(scope: Scope, doc: dict[str, Any] | None, field: str, kept: list[Any]) -> None:
    if doc is not None:
        doc[field] = kept
        return
    pairs = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
             if k != field]
    # an emptied list keeps one impossible value, so "no runs named" stays distinct from "none readable"
    pairs += [(field, v) for v in kept] if kept else [(field, "runledger-none-readable")]
    scope["query_string"] = urlencode(pairs).encode("latin-1")


def _restrict_experiment_filter(scope: Scope, doc: dict[str, Any] | None, where: Where, access: Access) -> None:
    """experiments/search: the caller's filter AND a clause over the experiments they may read."""
    read = access.read_scope()
    if read.mode == "all":
        return
    ids = ", ".join("'" + i.replace("'", "") + "'" for i in read.ids) or "'runledger-none'"
    clause = f"experiment_id {'IN' if read.mode == 'allow' else 'NOT IN'} ({ids})"
    if read.mode == "deny" and not read.ids:
        return
    if where.source == "body" and doc is None:
        return                       # not JSON: the route answers its own 400
    current = _value(scope, doc, {}, where)
    combined = f"{current} AND {clause}" if isinstance(current, str) and current.strip() else clause
    if doc is not None:
        doc[where.field] = combined
        return
    pairs = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
             if k != where.field] + [(where.field, combined)]
    scope["query_string"] = urlencode(pairs).encode("latin-1")
