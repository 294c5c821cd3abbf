"""How Runledger's runs read as Comet's objects (docs/comet.md, "Mapping"):

one workspace (RUNLEDGER_COMET_WORKSPACE); project = MLflow experiment (projectId = experiment id);
experiment key = run id; parameters = params; metrics = metric points; Comet's "others" = run
tags (the run name also reads as the other "Name", as Comet's get_name expects); Comet's tags
(plain labels) = run tags with an empty value, the label being the key (the labels of docs/search.md; MLflow's own
`mlflow.*` tags never are); archived = deleted.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from runledger.query.run_summaries import ExperimentRow, MetricSummary, RunMeta

RUN_NAME_TAG = "mlflow.runName"
NAME_OTHER = "Name"   # Comet's APIExperiment.get_name() reads the other called "Name"
# The backend version announced at /clientlib/isAlive/ver. comet_ml switches features on by it:
# >= 3.20.60 reads all metrics in one call (get-all), >= 3.7.91 allows get_state/set_state;
# staying below 3.29.724 keeps delete_parameters (not served) off.
BACKEND_VERSION = "3.28.0"


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


def number_texts(values: pa.Array) -> pa.Array:
    """Doubles as Comet sends metric values: strings, formatted by Arrow (shortest round-trip
    text; NaN as "NaN")."""
    text = pc.cast(values, pa.string())
    return pc.if_else(pc.is_nan(values), pa.scalar("NaN"), text)


def number_text(value: float | None) -> str | None:
    if value is None:
        return None
    return number_texts(pa.array([value], pa.float64()))[0].as_py()


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.string())


def points_json(batch: pa.RecordBatch, first_offset: int) -> bytes:
    """Rows (key, value, timestamp, step, epoch) as Comet's metric objects, each preceded by a
    comma, built by Arrow kernels (one Python call per column, not per point)."""
    n = batch.num_rows
    keys, values, timestamps, steps, epochs = (batch.column(i) for i in range(5))
    names = pc.unique(keys)
    names_json = pa.array([orjson.dumps(k).decode() for k in names.to_pylist()], pa.string())
    key_json = pc.take(names_json, pc.index_in(keys, value_set=names))
    epoch_text = pc.fill_null(pc.cast(pc.cast(epochs, pa.int64(), safe=False), pa.string()), _lit("null"))
    offsets = pc.cast(pa.array(range(first_offset, first_offset + n), pa.int64()), pa.string())
    rows = pc.binary_join_element_wise(
        _lit(',{"metricName":'), key_json, _lit(',"metricValue":"'), number_texts(values),
        _lit('","timestamp":'), pc.cast(timestamps, pa.string()), _lit(',"step":'), pc.cast(steps, pa.string()),
        _lit(',"epoch":'), epoch_text, _lit(',"runContext":null,"offset":'), offsets, _lit("}"), _lit(""))
    return _concat(rows)


def _concat(column: pa.Array) -> bytes:
    """The strings of `column`, concatenated, straight from its buffers."""
    column = column.cast(pa.large_string())
    if not len(column):
        return b""
    offsets = column.buffers()[1]
    lo = int.from_bytes(offsets[column.offset * 8:column.offset * 8 + 8], "little")
    end = (column.offset + len(column)) * 8
    hi = int.from_bytes(offsets[end:end + 8], "little")
    return column.buffers()[2][lo:hi].to_pybytes()
