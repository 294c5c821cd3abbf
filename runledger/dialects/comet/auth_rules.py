"""What each Comet route needs (runledger.auth.rules; docs/auth.md). Projects are named by
workspace and project name, experiments by their key (a run id); creating an experiment checks
in its handler (the project may not exist yet: then any signed-in user may create it, as
experiments/create allows, and gets MANAGE on it)."""

from __future__ import annotations

from runledger.auth import rules
from runledger.auth.rules import AUTHENTICATED, EDIT, EXPERIMENT_NAME, PUBLIC_RULE, READ, RUN, Rule
from runledger.dialects.comet.reads import project_id_refused

_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
_READ_RUN = Rule(READ, rules.query("experimentKey", RUN))
_EDIT_RUN = Rule(EDIT, rules.body("experimentKey", RUN))

REST_RULES: dict[str, Rule] = {
    "GET /workspaces": Rule(AUTHENTICATED),
    "GET /projects": Rule(AUTHENTICATED),           # the handler lists only readable projects
    # a projectId: checked in the handler (and before a log-position wait, by the same check)
    "GET /project": Rule(READ, rules.query("projectName", EXPERIMENT_NAME), refused_now=project_id_refused),
    "GET /experiments": Rule(READ, rules.query("projectName", EXPERIMENT_NAME)),
    "GET /project/column-names": Rule(READ, rules.query("projectName", EXPERIMENT_NAME)),
    "POST /project/query": Rule(READ, rules.body("projectName", EXPERIMENT_NAME)),
    **{f"GET /experiment/{p}": _READ_RUN for p in (
        "metadata", "parameters", "metrics/summary", "metrics/get-metric", "metrics/get-all", "tags", "log-other")},
    # the handler checks (the project may be new), then waits for a log position the caller passed
    "POST /write/experiment/create": Rule(EDIT, rules.in_handler("projectName", EXPERIMENT_NAME),
                                          waits_in_handler=True),
    **{f"POST /write/experiment/{p}": _EDIT_RUN for p in (
        "metric", "parameter", "log-other", "tags", "set-start-end-time", "update-status")},
    "GET /write/experiment/set-status": Rule(EDIT, rules.query("experimentKey", RUN)),
    # everything else answers 501 (runledger.dialects.comet.service)
    **{f"{m} /{{rest:path}}": Rule(AUTHENTICATED) for m in _METHODS},
}

CLIENTLIB_RULES: dict[str, Rule] = {
    "GET /isAlive/ver": PUBLIC_RULE,
    **{f"{m} /{{rest:path}}": Rule(AUTHENTICATED) for m in _METHODS},
}
