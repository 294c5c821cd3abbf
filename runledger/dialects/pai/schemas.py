"""Models of PAI's HPO routes for /openapi.json (docs/openapi.md, docs/pai.md). They document; the
handlers in routes.py answer with their own dicts. Answers allow extra fields and keep fields
optional, as PAI's own answers grow fields over versions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class PaiErrorBody(_Answer):
    """Every error of the PAI routes (PAI's shape, plus Runledger's error code name)."""

    RequestId: str = Field(description="the request's id, as in the server log", examples=["5f0c2e9a4b1d"])
    Code: str = Field(description="the error code", examples=["RESOURCE_DOES_NOT_EXIST"])
    Message: str = Field(description="what went wrong, for a person",
                         examples=["No HPO experiment 'abc': give a parent run id or an experiment id."])
    error_code: str | None = Field(None, description="Runledger's (MLflow's) error code name",
                                   examples=["RESOURCE_DOES_NOT_EXIST"])


class PaiTrialsQuery(BaseModel):
    PageNumber: int | None = Field(None, description="1-based page number", examples=[1])
    PageSize: int | None = Field(None, description="trials per page (100 when absent)", examples=[100])
    SortBy: str | None = Field(None, description="CREATE_TIME (default) or FINAL_METRIC", examples=["FINAL_METRIC"])
    Order: str | None = Field(None, description="ASC (default) or DESC", examples=["DESC"])


class PaiHpoTrial(_Answer):
    """One trial (run). Hyperparam, Metric and JobMeta are JSON texts, as PAI sends them."""

    RequestId: str | None = Field(None, description="only in GetHpoTrial's answer")
    TrialId: str | None = Field(None, description="the run id")
    ExperimentId: str | None = None
    Name: str | None = None
    Status: str | None = Field(None, examples=["FINISHED"])
    Hyperparam: str | None = Field(None, description="the run's params, as a JSON text")
    ParameterId: int | None = None
    Model: str | None = None
    MetricName: str | None = Field(None, description="the study's objective metric")
    Metric: str | None = Field(None, description="JSON text: the points, then the FINAL entry")
    JobMeta: str | None = None
    GmtCreateTime: str | None = None
    GmtModifiedTime: str | None = None


class PaiHpoTrials(_Answer):
    RequestId: str | None = None
    TotalCount: int | None = None
    Trials: list[PaiHpoTrial] | None = None


class PaiHpoExperiment(_Answer):
    RequestId: str | None = None
    ExperimentId: str | None = Field(None, description="the study's id (a parent run's or an experiment's)")
    Name: str | None = None
    Description: str | None = None
    Creator: str | None = None
    WorkspaceId: str | None = Field(None, description="the MLflow experiment holding the study")
    Accessibility: str | None = None
    JobType: str | None = None
    Status: str | None = Field(None, examples=["RUNNING"])
    GmtCreateTime: str | None = None
    GmtModifiedTime: str | None = None
    SearchSpace: str | None = Field(None, description="JSON text")
    ConfigIni: str | None = None
    ConfigYml: str | None = None
    HpoExperimentConfiguration: dict[str, Any] | None = None
    Deleted: bool | None = None
    Detail: str | None = None
    TrialCount: int | None = None
    TrialStatus: dict[str, str] | None = Field(None, description="trial count per status")
