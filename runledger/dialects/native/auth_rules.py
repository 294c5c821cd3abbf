"""What each route of Runledger's own API needs (runledger.auth.rules; docs/auth.md). Keys are
relative to /api/runledger/v1."""

from __future__ import annotations

from starlette.requests import Request

from runledger.auth import rules
from runledger.auth.access import access
from runledger.auth.rules import ADMIN, AUTHENTICATED, EDIT, EXPERIMENT, READ, RUN, Rule
from runledger.dialects.studies import study_refused



def _others_tokens(request: Request) -> bool:
    """The tokens handler's own check (only admins list other users' tokens), for Rule.refused_now."""
    me, named = access(request), request.query_params.get("username")
    return bool(named) and named != me.username and not me.unrestricted


RULES: dict[str, Rule] = {
    # streaming ingest: the handler checks EDIT on the run's experiment before appending, and
    # before it waits for a log position the caller passed (the run id is in the body)
    "POST /metrics/stream": Rule(EDIT, rules.in_handler("run_id", RUN), waits_in_handler=True),
    # operations: the rejection list spans every experiment
    "GET /rejections": Rule(ADMIN),
    "GET /lag": Rule(AUTHENTICATED),
    "GET /read-paths": Rule(AUTHENTICATED),   # counts of read ways, no tracked data
    "GET /request-timings": Rule(ADMIN),      # every caller's request paths and ids
    "GET /verify/checksums": Rule(ADMIN),
    # SQL: every view answers only rows of readable experiments (query.sql.views)
    "POST /sql": Rule(READ, rules.IN_HANDLER),
    "GET /sql": Rule(READ, rules.IN_HANDLER),
    # audit and time travel
    "GET /events": Rule(READ, rules.IN_HANDLER),      # the trail leaves out unreadable experiments
    "GET /runs/{run_id}/events": Rule(READ, rules.path("run_id", RUN)),
    "GET /experiments/{experiment_id}/events": Rule(READ, rules.path("experiment_id", EXPERIMENT)),
    "GET /runs/{run_id}/diff": Rule(READ, rules.path("run_id", RUN)),
    "POST /runs/{run_id}/rewind": Rule(EDIT, rules.path("run_id", RUN)),
    "GET /runs/{run_id}/tail": Rule(READ, rules.path("run_id", RUN)),
    "GET /experiments/{experiment_id}/tail": Rule(READ, rules.path("experiment_id", EXPERIMENT)),
    "GET /metrics/get-history": Rule(READ, rules.query("run_id", RUN, alias="run_uuid")),
    "GET /runs/{run_id}/artifacts": Rule(READ, rules.path("run_id", RUN)),
    "GET /runs/{run_id}": Rule(READ, rules.path("run_id", RUN)),
    # runs/search with AND/OR/NOT filter trees; bucketed history
    "POST /runs/search": Rule(READ, rules.body_list("experiment_ids", EXPERIMENT), filters=True),
    "GET /metrics/history-buckets": Rule(READ, rules.query("run_id", RUN, alias="run_uuid")),
    # tokens: the handlers let users manage their own, admins anyone's
    "POST /tokens": Rule(AUTHENTICATED),
    "GET /tokens": Rule(AUTHENTICATED, refused_now=lambda request, _: _others_tokens(request)),
    "POST /tokens/revoke": Rule(AUTHENTICATED),
    # a hyper-parameter search: READ on its experiment, checked by the handler (parent run or experiment id)
    "GET /hpo/{study_id}": Rule(READ, rules.in_handler("study_id", EXPERIMENT), refused_now=study_refused("study_id")),
}
