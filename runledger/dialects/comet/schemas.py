"""Models of Comet's REST v2 routes for /openapi.json (docs/openapi.md). They document; the
handlers still read their own requests (comet_ml's leniencies, the room's error messages) and
answer with the dicts of shapes.py. Answers allow extra fields and keep fields optional: a client
should rely only on what Comet itself documents."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field



def _key() -> Any:
    return Field(description="the experiment key (Runledger's run id)", examples=["3f2c9a7d1e8b4c6fa0b1c2d3e4f5a6b7"])


def _workspace(required: bool = True) -> Any:
    about = "the server's one workspace (RUNLEDGER_COMET_WORKSPACE)"
    if required:
        return Field(description=about, examples=["runledger"])
    return Field(None, description=about, examples=["runledger"])


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


# ----- errors

class CometErrorBody(_Answer):
    """Every error of the Comet routes (comet_ml shows `msg` in its exception)."""

    msg: str = Field(description="what went wrong, for a person", examples=["No experiment with key 'abc'."])
    code: int = Field(description="the HTTP status again", examples=[404])
    sdk_error_code: int = Field(description="always 0", examples=[0])
    error_code: str | None = Field(None, description="Runledger's (MLflow's) error code name",
                                   examples=["RESOURCE_DOES_NOT_EXIST"])
    request_id: str | None = Field(None, description="the request's id, as in the server log")


# ----- query strings

class CometWorkspaceQuery(BaseModel):
    workspaceName: str = _workspace()


class CometProjectQuery(BaseModel):
    workspaceName: str | None = _workspace(required=False)
    projectName: str | None = Field(None, description="the project (MLflow experiment) name; or give projectId",
                                    examples=["Default"])
    projectId: str | None = Field(None, description="the project (MLflow experiment) id", examples=["0"])


class CometProjectNameQuery(BaseModel):
    workspaceName: str = _workspace()
    projectName: str = Field(description="the project (MLflow experiment) name", examples=["Default"])


class CometExperimentsQuery(CometProjectNameQuery):
    archived: bool | None = Field(None, description="list the archived (deleted) experiments instead")
    page: int | None = Field(None, description="1-based page number (with size)", examples=[1])
    size: int | None = Field(None, description="experiments per page", examples=[50])
    sortBy: str | None = Field(None, description="startTime or endTime (when paging)", examples=["startTime"])
    sortOrder: str | None = Field(None, description="asc or desc", examples=["desc"])


class CometExperimentQuery(BaseModel):
    experimentKey: str = _key()


class CometMetricQuery(CometExperimentQuery):
    metricName: str = Field(description="the metric's name", examples=["loss"])


# ----- request bodies

class CometQueryBody(BaseModel):
    workspaceName: str | None = _workspace(required=False)
    projectName: str = Field(description="the project to search", examples=["Default"])
    predicates: list[dict[str, Any]] = Field(description="comet_ml's query predicates (groups of rules)", examples=[[
        {"source": "metrics", "query": {"condition": "AND", "rules": [
            {"id": "loss", "field": "loss", "type": "double", "operator": "less", "value": 0.5}]}}]])
    archived: bool | None = Field(None, description="search the archived (deleted) experiments", examples=[False])


class CometCreateExperimentBody(BaseModel):
    workspaceName: str = _workspace()
    projectName: str = Field(description="the project; created on first use", examples=["Default"])
    experimentName: str | None = Field(None, description="the run name (generated when absent)", examples=["baseline"])


class CometLogMetricBody(BaseModel):
    experimentKey: str = _key()
    metricName: str = Field(description="the metric's name", examples=["loss"])
    metricValue: float | str = Field(description="a number (or its text)", examples=[0.25])
    step: int | None = Field(None, description="the step (0 when absent)", examples=[4])
    epoch: int | None = Field(None, description="stored as the run's `epoch` metric at this step", examples=[1])
    timestamp: int | None = Field(None, description="milliseconds since the epoch (now when absent)",
                                  examples=[1_700_000_000_250])


class CometLogParameterBody(BaseModel):
    experimentKey: str = _key()
    parameterName: str = Field(description="the parameter's name", examples=["lr"])
    parameterValue: Any = Field(description="any value; stored as its text, once", examples=[0.01])


class CometLogOtherBody(BaseModel):
    experimentKey: str = _key()
    key: str = Field(description="the other's name (`Name` is the run name)", examples=["dataset"])
    value: Any = Field(description="any value; stored as a run tag's text", examples=["mnist"])


class CometAddTagsBody(BaseModel):
    experimentKey: str = _key()
    addedTags: list[str] = Field(description="labels (run tags with an empty value)", examples=[["baseline"]])


class CometStartEndTimeBody(BaseModel):
    experimentKey: str = _key()
    startTimeMillis: int | None = Field(None, description="the start, ms since the epoch", examples=[1_700_000_000_000])
    endTimeMillis: int | None = Field(None, description="the end, ms since the epoch", examples=[1_700_000_360_000])


class CometUpdateStatusBody(BaseModel):
    experimentKey: str = _key()
    isAlive: bool = Field(description="true: RUNNING; false: FINISHED (or FAILED with hasCrashed)", examples=[False])
    hasCrashed: bool | None = Field(None, description="with isAlive false: FAILED", examples=[False])


# ----- answers

class CometOk(_Answer):
    code: int | None = Field(None, examples=[200])
    msg: str | None = Field(None, examples=["ok"])
    data: Any = None
    sdk_error_code: int | None = Field(None, examples=[0])


class CometVersion(_Answer):
    version: str | None = Field(None, description="the Comet backend version announced", examples=["3.28.0"])


class CometWorkspaces(_Answer):
    workspaceNames: list[str] | None = None


class CometProject(_Answer):
    projectId: str | None = None
    projectName: str | None = None
    workspaceName: str | None = None
    ownerUserName: str | None = None
    projectDescription: str | None = None
    isPublic: bool | None = None
    isShared: bool | None = None
    numberOfExperiments: int | None = None
    lastUpdated: int | None = None
    createdAt: int | None = None


class CometProjects(_Answer):
    projects: list[CometProject] | None = None


class CometExperimentMetadata(_Answer):
    experimentKey: str | None = None
    experimentName: str | None = None
    optimizationId: str | None = None
    workspaceName: str | None = None
    projectName: str | None = None
    projectId: str | None = None
    archived: bool | None = None
    durationMillis: int | None = None
    startTimeMillis: int | None = None
    endTimeMillis: int | None = None
    running: bool | None = None
    hasCrashed: bool | None = None
    fileName: str | None = None
    filePath: str | None = None
    throttle: bool | None = None
    userName: str | None = None


class CometExperiments(_Answer):
    experiments: list[CometExperimentMetadata] | None = None


class CometValueSummary(_Answer):
    """A parameter, other or metric summary: values are texts, as Comet sends them."""

    name: str | None = None
    valueMax: str | None = None
    valueMin: str | None = None
    valueCurrent: str | None = None
    timestampMax: int | None = None
    timestampMin: int | None = None
    timestampCurrent: int | None = None
    stepMax: int | None = None
    stepMin: int | None = None
    stepCurrent: int | None = None
    editable: bool | None = None


class CometValues(_Answer):
    values: list[CometValueSummary] | None = None


class CometTags(_Answer):
    tags: list[str] | None = None


class CometMetricPoint(_Answer):
    metricName: str | None = None
    metricValue: str | None = Field(None, description="the value as text (NaN as \"NaN\")")
    timestamp: int | None = None
    step: int | None = None
    epoch: int | None = None
    runContext: str | None = None
    offset: int | None = None


class CometMetricPoints(_Answer):
    metrics: list[CometMetricPoint] | None = None


class CometColumn(_Answer):
    name: str | None = None
    source: str | None = Field(None, examples=["metrics"])
    type: str | None = Field(None, examples=["double"])


class CometColumns(_Answer):
    columns: list[CometColumn] | None = None


class CometExperimentKeys(_Answer):
    experimentKeys: list[str] | None = None


class CometCreatedExperiment(_Answer):
    experimentKey: str | None = None
    workspaceName: str | None = None
    projectName: str | None = None
    link: str | None = None


class CometHeartbeat(_Answer):
    isAliveBeatDurationMillis: int | None = None
    gpuMonitorIntervalMillis: int | None = None
    cpuMonitorIntervalMillis: int | None = None
