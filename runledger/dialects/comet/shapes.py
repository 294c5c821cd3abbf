"""How Runledger's runs read as Comet's objects (docs/comet.md, "Mapping"):

one workspace (RUNLEDGER_COMET_WORKSPACE); project = MLflow experiment (projectId = experiment id);
experiment key = run id; parameters = params; metrics = metric points; Comet's "others" = run
tags (the run name also reads as the other "Name", as Comet's get_name expects); Comet's tags
(plain labels) = run tags with an empty value, the label being the key (the labels of docs/search.md; MLflow's own
`mlflow.*` tags never are); archived = deleted.
"""

from __future__ import annotations

import math
import time
from typing import Any

from runledger.query.run_summaries import ExperimentRow, MetricSummary, RunMeta

RUN_NAME_TAG = "mlflow.runName"
NAME_OTHER = "Name"   # Comet's APIExperiment.get_name() reads the other called "Name"
# The backend version announced at /clientlib/isAlive/ver. comet_ml switches features on by it:
# >= 3.20.60 reads all metrics in one call (get-all), >= 3.7.91 allows get_state/set_state;
# staying below 3.29.724 keeps delete_parameters (not served) off.
BACKEND_VERSION = "3.28.0"


def number_text(value: float | None) -> str | None:
    """A metric value as Comet sends it: a string (NaN as "NaN")."""
    if value is None:
        return None
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def metadata(m: RunMeta, workspace: str) -> dict[str, Any]:
    running = m.status == "RUNNING"
    start = m.start_time or 0
    end = m.end_time
    if end is not None:
        duration = max(end - start, 0)
    elif running and start:
        duration = max(time.time_ns() // 1_000_000 - start, 0)
    else:
        duration = 0
    return {
        "experimentKey": m.run_id, "experimentName": m.run_name, "optimizationId": None,
        "workspaceName": workspace, "projectName": m.experiment_name, "projectId": m.experiment_id,
        "archived": m.deleted, "durationMillis": duration, "startTimeMillis": m.start_time,
        "endTimeMillis": end, "running": running, "hasCrashed": m.status in ("FAILED", "KILLED"),
        "fileName": None, "filePath": None, "throttle": False, "userName": m.user_id or None,
    }


def project(e: ExperimentRow, workspace: str) -> dict[str, Any]:
    return {
        "projectId": e.experiment_id, "projectName": e.name, "workspaceName": workspace,
        "ownerUserName": None, "projectDescription": None, "isPublic": False, "isShared": False,
        "numberOfExperiments": e.run_count, "lastUpdated": e.last_update_time, "createdAt": e.creation_time,
    }


def metric_summary(s: MetricSummary) -> dict[str, Any]:
    return {
        "name": s.key,
        "valueMax": number_text(s.max_value), "valueMin": number_text(s.min_value),
        "valueCurrent": number_text(s.last_value),
        "timestampMax": s.max_timestamp, "timestampMin": s.min_timestamp, "timestampCurrent": s.last_timestamp,
        "stepMax": s.max_step, "stepMin": s.min_step, "stepCurrent": s.last_step,
        "editable": False,
    }


def single_value_summary(name: str, value: str, timestamp: int | None, editable: bool) -> dict[str, Any]:
    """A parameter or other: one value, so min = max = current."""
    return {"name": name, "valueMax": value, "valueMin": value, "valueCurrent": value,
            "timestampMax": timestamp, "timestampMin": timestamp, "timestampCurrent": timestamp,
            "stepMax": None, "stepMin": None, "stepCurrent": None, "editable": editable}


def other_name(tag_key: str) -> str:
    return NAME_OTHER if tag_key == RUN_NAME_TAG else tag_key


def tag_key_of_other(name: str) -> str:
    return RUN_NAME_TAG if name == NAME_OTHER else name


def is_label(tag_key: str, value: str) -> bool:
    return value == "" and not tag_key.startswith("mlflow.")


# One metric point as a JSON object, formatted by DuckDB (query.run_summaries.point_batches);
# rows after the first start with a comma, so batches concatenate into one JSON array.
POINT_ROW_SQL = (
    "(CASE WHEN n = 0 THEN '' ELSE ',' END) || '{\"metricName\":' || to_json(key) || ',\"metricValue\":\"' || "
    "(CASE WHEN isnan(value) THEN 'NaN' ELSE CAST(value AS VARCHAR) END) || '\",\"timestamp\":' || timestamp || "
    "',\"step\":' || step || ',\"epoch\":' || COALESCE(CAST(CAST(epoch AS BIGINT) AS VARCHAR), 'null') || "
    "',\"runContext\":null,\"offset\":' || n || '}'")
