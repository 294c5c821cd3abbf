"""The MLflow tracking API's request and response bodies, as pydantic models for /openapi.json.

They document (runledger/dialects/openapi.py); the handlers parse requests themselves with
MLflow's rules (docs/api.md): int64 fields also accept numeric strings, unknown fields are
ignored, and MLflow's own messages are returned. Responses omit what MLflow omits, so most
fields are optional. Names carry the `Mlflow` prefix: other rooms have their own `Run`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Int64 = int | str     # protobuf JSON: a number, or the same number as a string
Double = float | str | None   # a number, or "NaN" / "Infinity" / "-Infinity"
RunStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
ViewType = Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]

RUN_ID = "6f3c7e5d2b1a4c0e9f8d7c6b5a493827"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


# ----- entities -----

class MlflowTag(_Model):
    key: str = Field(examples=["mlflow.runName"])
    value: str | None = Field(None, examples=["baseline"])


class MlflowParam(_Model):
    key: str = Field(examples=["lr"])
    value: str | None = Field(None, examples=["0.001"])


class MlflowMetric(_Model):
    key: str = Field(examples=["loss"])
    value: float | str | None = Field(description="a number, or \"NaN\"/\"Infinity\"/\"-Infinity\"", examples=[0.25])
    timestamp: int | None = Field(None, description="Unix ms", examples=[1733561200000])
    step: int | None = Field(0, examples=[10])
    dataset_name: str | None = None
    dataset_digest: str | None = None
    model_id: str | None = None
    run_id: str | None = None


class MlflowExperiment(_Model):
    experiment_id: str = Field(examples=["1"])
    name: str = Field(examples=["my-experiment"])
    artifact_location: str | None = Field(None, examples=["file:///data/artifacts/1"])
    lifecycle_stage: Literal["active", "deleted"] | None = None
    last_update_time: int | None = None
    creation_time: int | None = None
    tags: list[MlflowTag] | None = None


class MlflowRunInfo(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = Field(None, description="the same as run_id (older clients read it)")
    run_name: str | None = Field(None, examples=["baseline"])
    experiment_id: str = Field(examples=["1"])
    user_id: str | None = None
    status: RunStatus | None = None
    start_time: int | None = None
    end_time: int | None = None
    artifact_uri: str | None = None
    lifecycle_stage: Literal["active", "deleted"] | None = None


class MlflowDataset(_Model):
    name: str
    digest: str
    source_type: str | None = None
    source: str | None = None
    schema_: str | None = Field(None, alias="schema")
    profile: str | None = None


class MlflowDatasetInput(_Model):
    tags: list[MlflowTag] | None = None
    dataset: MlflowDataset


class MlflowModelInput(_Model):
    model_id: str


class MlflowModelOutput(_Model):
    model_id: str
    step: int | None = None


class MlflowRunData(_Model):
    metrics: list[MlflowMetric] | None = None
    params: list[MlflowParam] | None = None
    tags: list[MlflowTag] | None = None


class MlflowRunInputs(_Model):
    dataset_inputs: list[MlflowDatasetInput] | None = None
    model_inputs: list[MlflowModelInput] | None = None


class MlflowRunOutputs(_Model):
    model_outputs: list[MlflowModelOutput] | None = None


class MlflowRun(_Model):
    info: MlflowRunInfo
    data: MlflowRunData | None = None
    inputs: MlflowRunInputs | None = None
    outputs: MlflowRunOutputs | None = None


class MlflowLoggedModelInfo(_Model):
    model_id: str
    experiment_id: str
    name: str | None = None
    artifact_uri: str | None = None
    creation_timestamp_ms: int | None = None
    last_updated_timestamp_ms: int | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    status: str | None = None
    status_message: str | None = None
    tags: list[MlflowTag] | None = None


class MlflowLoggedModelData(_Model):
    params: list[MlflowParam] | None = None
    metrics: list[MlflowMetric] | None = None


class MlflowLoggedModel(_Model):
    info: MlflowLoggedModelInfo
    data: MlflowLoggedModelData | None = None


# ----- requests -----

class ExperimentIdBody(_Model):
    experiment_id: str = Field(examples=["1"])


class CreateExperimentBody(_Model):
    name: str = Field(examples=["my-experiment"])
    artifact_location: str | None = Field(None, description="default: the server's artifact root / <id>")
    tags: list[MlflowTag] | None = None


class UpdateExperimentBody(_Model):
    experiment_id: str = Field(examples=["1"])
    new_name: str = Field(examples=["renamed"])


class ExperimentTagBody(_Model):
    experiment_id: str = Field(examples=["1"])
    key: str = Field(examples=["team"])
    value: str = Field(examples=["vision"])


class DeleteExperimentTagBody(_Model):
    experiment_id: str = Field(examples=["1"])
    key: str = Field(examples=["team"])


class CreateRunBody(_Model):
    experiment_id: str | None = Field(None, description="default: \"0\" (Default)", examples=["1"])
    user_id: str | None = None
    run_name: str | None = Field(None, examples=["baseline"])
    start_time: Int64 | None = Field(None, description="Unix ms; default: now")
    tags: list[MlflowTag] | None = None


class UpdateRunBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = Field(None, description="older clients' name for run_id")
    status: RunStatus | None = None
    end_time: Int64 | None = None
    run_name: str | None = None


class RunIdBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = Field(None, description="older clients' name for run_id")


class LogMetricBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = None
    key: str = Field(examples=["loss"])
    value: Double = Field(examples=[0.25])
    timestamp: Int64 = Field(description="Unix ms", examples=[1733561200000])
    step: Int64 | None = Field(0, examples=[10])
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class LogParamBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = None
    key: str = Field(examples=["lr"])
    value: str = Field(examples=["0.001"])


class SetTagBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = None
    key: str = Field(examples=["stage"])
    value: str = Field(examples=["tuning"])


class DeleteTagBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    key: str = Field(examples=["stage"])


class LogBatchBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    metrics: list[MlflowMetric] | None = Field(None, description="at most 1000")
    params: list[MlflowParam] | None = Field(None, description="at most 100")
    tags: list[MlflowTag] | None = Field(None, description="at most 100")


class BulkRunsBody(_Model):
    experiment_id: str = Field(examples=["1"])
    max_timestamp_millis: Int64 | None = Field(None, description="delete-runs: runs created up to this time")
    min_timestamp_millis: Int64 | None = Field(None, description="restore-runs: runs deleted from this time")
    max_runs: Int64 | None = None


class SearchExperimentsBody(_Model):
    max_results: Int64 | None = Field(None, examples=[100])
    page_token: str | None = None
    filter: str | None = Field(None, examples=["name LIKE 'my-%'"])
    order_by: list[str] | None = Field(None, examples=[["last_update_time DESC"]])
    view_type: ViewType | None = None


class OrderBy(_Model):
    field_name: str | None = None
    ascending: bool | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class SearchRunsBody(_Model):
    experiment_ids: list[str] = Field(examples=[["1"]])
    filter: str | None = Field(None, examples=["metrics.loss < 0.3 and params.lr = '0.001'"])
    run_view_type: ViewType | None = None
    max_results: Int64 | None = Field(None, examples=[100])
    order_by: list[str] | None = Field(None, examples=[["metrics.loss ASC"]])
    page_token: str | None = None


class InputDatasetBody(_Model):
    tags: list[MlflowTag] | None = None
    dataset: MlflowDataset


class LogInputsBody(_Model):
    run_id: str = Field(examples=[RUN_ID])
    datasets: list[InputDatasetBody] | None = None
    models: list[MlflowModelInput] | None = None


class CreateLoggedModelBody(_Model):
    experiment_id: str = Field(examples=["1"])
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[MlflowParam] | None = None
    tags: list[MlflowTag] | None = None


class FinalizeLoggedModelBody(_Model):
    model_id: str | None = Field(None, description="the same as the path's")
    status: Literal["LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED", "LOGGED_MODEL_PENDING"] = Field(
        "LOGGED_MODEL_READY", examples=["LOGGED_MODEL_READY"])


class LoggedModelTagsBody(_Model):
    tags: list[MlflowTag] = Field(examples=[[{"key": "framework", "value": "torch"}]])


class LoggedModelParamsBody(_Model):
    params: list[MlflowParam] = Field(examples=[[{"key": "layers", "value": "12"}]])


class SearchLoggedModelsBody(_Model):
    experiment_ids: list[str] = Field(examples=[["1"]])
    filter: str | None = Field(None, examples=["metrics.accuracy > 0.9"])
    datasets: list[dict[str, Any]] | None = None
    max_results: Int64 | None = None
    order_by: list[OrderBy] | None = None
    page_token: str | None = None


class SearchDatasetsBody(_Model):
    experiment_ids: list[str] = Field(examples=[["1"]])


# ----- query strings (GET) -----

class ExperimentIdQuery(_Model):
    experiment_id: str = Field(examples=["1"])


class ExperimentNameQuery(_Model):
    experiment_name: str = Field(examples=["my-experiment"])


class SearchExperimentsQuery(_Model):
    max_results: int | None = None
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] | None = Field(None, description="repeat the parameter for several")
    view_type: ViewType | None = None


class RunIdQuery(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = Field(None, description="older clients' name for run_id")


class MetricHistoryQuery(_Model):
    run_id: str = Field(examples=[RUN_ID])
    run_uuid: str | None = None
    metric_key: str = Field(examples=["loss"])
    page_token: str | None = None
    max_results: int | None = None
    as_of: str | None = Field(None, description="Unix ms or ISO 8601: the history as it was then (Runledger's)")
    as_of_position: str | None = Field(None, description="'<partition>:<offset>': as of a log position")


class HistoryBulkIntervalQuery(_Model):
    run_ids: list[str] = Field(description="repeat for several runs (at most 100)")
    metric_key: str
    start_step: int | None = None
    end_step: int | None = None
    max_results: int | None = Field(None, description="points per run (sampled evenly)")


class HistoryBulkQuery(_Model):
    run_id: list[str] = Field(description="repeat for several runs")
    metric_key: str
    max_results: int | None = None


# ----- responses -----

class ExperimentIdAnswer(_Model):
    experiment_id: str = Field(examples=["1"])


class ExperimentAnswer(_Model):
    experiment: MlflowExperiment


class SearchExperimentsAnswer(_Model):
    experiments: list[MlflowExperiment] | None = None
    next_page_token: str | None = None


class RunAnswer(_Model):
    run: MlflowRun


class RunInfoAnswer(_Model):
    run_info: MlflowRunInfo


class SearchRunsAnswer(_Model):
    runs: list[MlflowRun] | None = None
    next_page_token: str | None = None


class MetricsAnswer(_Model):
    metrics: list[MlflowMetric] | None = None
    next_page_token: str | None = None


class RunsDeletedAnswer(_Model):
    runs_deleted: int


class RunsRestoredAnswer(_Model):
    runs_restored: int


class LoggedModelAnswer(_Model):
    model: MlflowLoggedModel


class SearchLoggedModelsAnswer(_Model):
    models: list[MlflowLoggedModel] | None = None
    next_page_token: str | None = None


class DatasetSummary(_Model):
    experiment_id: str
    name: str
    digest: str
    context: str | None = None


class SearchDatasetsAnswer(_Model):
    dataset_summaries: list[DatasetSummary] | None = None
