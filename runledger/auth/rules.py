"""What each route needs, declared by its room as a small table (docs/auth.md):

    RULES = {
        "POST /runs/log-batch": Rule(EDIT, body("run_id", RUN)),
        "POST /runs/search":    Rule(READ, body_list("experiment_ids", EXPERIMENT), filters=True),
        "GET /health":          PUBLIC_RULE,
    }

and registered under the room's prefix by the composition root (`register(prefix, RULES)`). A
route without a rule is refused to everyone (runledger.auth.gate), and the route-table test
(tests/test_auth_matrix.py) fails for it, so a new room cannot ship unguarded.

A rule names the level it needs and where the request names its experiment: a body or query
field holding an experiment id, run id, logged-model id or experiment name, or a path parameter.
`filters=True` makes a listing silently leave out what the caller may not read instead of
refusing the request. `IN_HANDLER` marks a route whose handler checks for itself (the stream
endpoint finds its run in a body too large to read twice; SQL scopes its views).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from starlette.requests import Request


class Need(enum.Enum):
    PUBLIC = "public"                  # no credentials needed (health, version, API docs)
    AUTHENTICATED = "authenticated"    # any signed-in user (the handler narrows what is seen)
    SELF_OR_ADMIN = "self_or_admin"    # the named user themselves, or an admin
    ADMIN = "admin"
    READ = "READ"
    EDIT = "EDIT"
    MANAGE = "MANAGE"


PUBLIC, AUTHENTICATED, SELF_OR_ADMIN, ADMIN = Need.PUBLIC, Need.AUTHENTICATED, Need.SELF_OR_ADMIN, Need.ADMIN
READ, EDIT, MANAGE = Need.READ, Need.EDIT, Need.MANAGE

# What a located value is.
EXPERIMENT, RUN, MODEL, EXPERIMENT_NAME, USERNAME = "experiment", "run", "model", "experiment_name", "username"


@dataclass(frozen=True)
class Where:
    source: str        # "body" | "query" | "path" | "handler"
    field: str
    kind: str
    many: bool = False
    alias: str | None = None     # a second accepted field name (MLflow's run_uuid)


def body(field: str, kind: str, alias: str | None = None) -> Where:
    return Where("body", field, kind, alias=alias)


def query(field: str, kind: str, alias: str | None = None) -> Where:
    return Where("query", field, kind, alias=alias)


def path(field: str, kind: str) -> Where:
    return Where("path", field, kind)


def body_list(field: str, kind: str) -> Where:
    return Where("body", field, kind, many=True)


def query_list(field: str, kind: str) -> Where:
    return Where("query", field, kind, many=True)


IN_HANDLER = Where("handler", "", "")


def in_handler(field: str, kind: str) -> Where:
    """The handler checks for itself, finding the experiment through `field` (a hint for tests)."""
    return Where("handler", field, kind)
# experiments/search: the caller's filter gets a clause leaving out unreadable experiments.
SEARCH_FILTER_BODY = Where("body", "filter", "experiment_filter")
SEARCH_FILTER_QUERY = Where("query", "filter", "experiment_filter")


@dataclass(frozen=True)
class Rule:
    need: Need
    where: Where | None = None
    filters: bool = False          # leave out unreadable items instead of refusing
    # For a route whose handler checks for itself: that same check, run before a read waits for a
    # log position (runledger.log_position), True when the caller is refused already. Without it a
    # caller lacking the permission would hold the request for the wait before the handler refuses.
    # (request, path parameters) -> refused; it must not raise for what the handler reports itself.
    refused_now: "Callable[[Request, Mapping[str, Any]], bool] | None" = field(default=None, compare=False)
    # For a handler-checked route whose check needs the request body (the stream endpoint's body
    # is too large to read twice): the log-position wait is left to the handler, which runs its
    # own check first and then calls runledger.log_position.reach_position(request).
    waits_in_handler: bool = False


PUBLIC_RULE = Rule(PUBLIC)

# Where the gate leaves the rule it applied and the route's path parameters, (Rule, dict), for
# the log-position wait that runs after it.
SCOPE_RULE_KEY = "runledger.rule"

# (method, full path template) -> rule; Mounts (static files) use method "*".
_RULES: dict[tuple[str, str], Rule] = {}


def register(prefix: str, rules: dict[str, Rule]) -> None:
    """Rules of a room mounted at `prefix`; keys are "METHOD /path" as the room's router spells them."""
    for key, rule in rules.items():
        method, _, route_path = key.partition(" ")
        _RULES[(method.upper(), prefix + route_path)] = rule


def rule_for(method: str, full_path: str) -> Rule | None:
    return _RULES.get((method, full_path)) or _RULES.get(("*", full_path))


@dataclass(frozen=True)
class RouteEntry:
    """One route of the app as the gate and the route-table test see it: its full path template
    and methods (None for a Mount, which answers every method)."""
    path: str
    methods: frozenset[str] | None


def route_table(routes: list[Any]) -> list[RouteEntry]:
    """Every route of an app, flattened: FastAPI (>= 0.16x) keeps included routers as lazy
    branches, so their routes are read through the branch with their full paths."""
    out: list[RouteEntry] = []
    for route in routes:
        if hasattr(route, "effective_candidates"):
            for c in route.effective_candidates():
                if hasattr(c, "effective_candidates"):
                    out.extend(route_table([c]))
                    continue
                inner = c.starlette_route or c.original_route
                full = c.path or getattr(inner, "path", "")
                methods = getattr(c.original_route, "methods", None) if c.starlette_route is None else \
                    getattr(inner, "methods", None)
                out.append(RouteEntry(full, frozenset(methods) if methods else None))
            continue
        methods = getattr(route, "methods", None)
        out.append(RouteEntry(getattr(route, "path", ""), frozenset(methods) if methods else None))
    return out
