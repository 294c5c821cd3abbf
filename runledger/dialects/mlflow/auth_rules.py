"""What each MLflow tracking route needs (runledger.auth.rules; docs/auth.md), as MLflow's auth
app has it: reads need READ, writes EDIT, deletions MANAGE; listings leave out what the caller
may not read. Keys are relative to the MLflow prefixes (/api/2.0/mlflow, /ajax-api/2.0/mlflow)."""

from __future__ import annotations

from runledger.auth import rules
from runledger.auth.rules import AUTHENTICATED, EDIT, EXPERIMENT, EXPERIMENT_NAME, MANAGE, MODEL, READ, RUN, Rule

_RUN_BODY = rules.body("run_id", RUN, alias="run_uuid")
_RUN_QUERY = rules.query("run_id", RUN, alias="run_uuid")
_EXP_BODY = rules.body("experiment_id", EXPERIMENT)
_MODEL = rules.path("model_id", MODEL)

RULES: dict[str, Rule] = {
    # experiments
    "POST /experiments/create": Rule(AUTHENTICATED),           # the creator gets MANAGE
    "POST /experiments/update": Rule(MANAGE, _EXP_BODY),
    "POST /experiments/delete": Rule(MANAGE, _EXP_BODY),
    "POST /experiments/restore": Rule(MANAGE, _EXP_BODY),
    "POST /experiments/set-experiment-tag": Rule(EDIT, _EXP_BODY),
    "POST /experiments/delete-experiment-tag": Rule(EDIT, _EXP_BODY),
    "GET /experiments/get": Rule(READ, rules.query("experiment_id", EXPERIMENT)),
    "GET /experiments/get-by-name": Rule(READ, rules.query("experiment_name", EXPERIMENT_NAME)),
    "GET /experiments/search": Rule(READ, rules.SEARCH_FILTER_QUERY, filters=True),
    "POST /experiments/search": Rule(READ, rules.SEARCH_FILTER_BODY, filters=True),
    "POST /experiments/search-datasets": Rule(READ, rules.body_list("experiment_ids", EXPERIMENT), filters=True),
    # runs
    "POST /runs/create": Rule(EDIT, _EXP_BODY),
    "POST /runs/update": Rule(EDIT, _RUN_BODY),
    "POST /runs/delete": Rule(MANAGE, _RUN_BODY),
    "POST /runs/restore": Rule(MANAGE, _RUN_BODY),
    "POST /runs/log-metric": Rule(EDIT, _RUN_BODY),
    "POST /runs/log-parameter": Rule(EDIT, _RUN_BODY),
    "POST /runs/set-tag": Rule(EDIT, _RUN_BODY),
    "POST /runs/delete-tag": Rule(EDIT, _RUN_BODY),
    "POST /runs/log-batch": Rule(EDIT, _RUN_BODY),
    "POST /runs/log-inputs": Rule(EDIT, _RUN_BODY),
    "POST /databricks/runs/delete-runs": Rule(MANAGE, _EXP_BODY),
    "POST /databricks/runs/restore-runs": Rule(MANAGE, _EXP_BODY),
    "GET /runs/get": Rule(READ, _RUN_QUERY),
    "POST /runs/search": Rule(READ, rules.body_list("experiment_ids", EXPERIMENT), filters=True),
    # metric history
    "GET /metrics/get-history": Rule(READ, _RUN_QUERY),
    "GET /metrics/get-history-bulk-interval": Rule(READ, rules.query_list("run_ids", RUN), filters=True),
    "GET /metrics/get-history-bulk": Rule(READ, rules.query_list("run_id", RUN), filters=True),
    # logged models (MLflow 3.x)
    "POST /logged-models": Rule(EDIT, _EXP_BODY),
    "GET /logged-models/{model_id}": Rule(READ, _MODEL),
    "PATCH /logged-models/{model_id}": Rule(EDIT, _MODEL),
    "DELETE /logged-models/{model_id}": Rule(MANAGE, _MODEL),
    "PATCH /logged-models/{model_id}/tags": Rule(EDIT, _MODEL),
    "DELETE /logged-models/{model_id}/tags/{tag_key:path}": Rule(EDIT, _MODEL),
    "POST /logged-models/{model_id}/params": Rule(EDIT, _MODEL),
    "POST /logged-models/search": Rule(READ, rules.body_list("experiment_ids", EXPERIMENT), filters=True),
}
