"""Runledger's own API's request and response bodies, as pydantic models for /openapi.json
(runledger/dialects/openapi.py). The handlers parse and answer themselves; these document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runledger.dialects.mlflow.schemas import RUN_ID, MlflowRun


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamBody(_Model):
    """Columns of equal length; or send an Arrow IPC stream (Content-Type
    application/vnd.apache.arrow.stream) with run_id and event_id in the query string."""

    run_id: str = Field(examples=[RUN_ID])
    event_id: str | None = Field(None, description="8-64 of [A-Za-z0-9_-]; the same id again is not counted "
                                                   "twice (retries are safe); default: a new one")
    keys: list[str] = Field(examples=[["loss", "loss"]])
    values: list[float | str | None] = Field(description="numbers, or \"NaN\"/\"Infinity\"/\"-Infinity\"",
                                             examples=[[0.5, 0.4]])
    timestamps: list[int] = Field(description="Unix ms", examples=[[1733561200000, 1733561200100]])
    steps: list[int] | None = Field(None, description="default: all 0", examples=[[1, 2]])


class StreamQuery(_Model):
    run_id: str | None = Field(None, description="Arrow bodies only: the run")
    event_id: str | None = Field(None, description="Arrow bodies only: the request's idempotency id")


class StreamAnswer(_Model):
    event_id: str = Field(description="the id to retry with", examples=["9c1e4f0a2b3d4e5f"])
    points: int = Field(description="points accepted (acknowledged by Kafka; applied shortly after)",
                        examples=[2])


class RejectionsQuery(_Model):
    run_id: str | None = None
    max_results: int | None = Field(None, description="1-10000; default 100")


class Rejection(_Model):
    event_id: str | None = None
    partition: int
    offset: int
    type: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    ingest_time: int | None = None
    error_code: str | None = None
    reason: str | None = None


class RejectionsAnswer(_Model):
    rejections: list[Rejection]


class PartitionLag(_Model):
    partition: int
    end_offset: int
    applied_offset: int
    lag: int


class LagAnswer(_Model):
    partitions: list[PartitionLag]
    total_lag: int = Field(description="events in the log not yet in the read model", examples=[0])
    oldest_unapplied_age_ms: int = Field(description="0 when nothing waits", examples=[0])


class ReadPathWay(_Model):
    count: int
    share: float = Field(description="of all get-run reads counted")
    mean_ms: float
    le_ms: dict[str, int] = Field(description="reads per latency bucket, by the bucket's upper bound in ms")


class ReadPathsAnswer(_Model):
    get_run: dict[str, ReadPathWay] = Field(
        description="memory: the projector's folded state of a run with an uncommitted write; folded: its "
                    "folded state of a committed run; cache: the rendered-run cache; duckdb: read "
                    "without waiting; waited: read after waiting for the commit of an answered write")
    total: int
    wait_mean_ms: float
    wait_max_ms: float


class RequestTimingsQuery(_Model):
    path: str | None = Field(None, description="only requests to this exact path",
                             examples=["/api/2.0/mlflow/runs/get"])
    since: float | None = Field(None, description="only requests that arrived after this server clock "
                                                  "reading (an earlier answer's `now`)")
    limit: int | None = Field(None, description="the newest this many (default and most: 4096)")


class TimedRequest(_Model):
    request_id: str
    method: str
    path: str
    arrived: float = Field(description="server clock (CLOCK_MONOTONIC seconds) when its first byte was parsed")
    entered: float = Field(description="when the ASGI app was called")
    marks: dict[str, float] = Field(description="handler, handler_end: when the route's code ran")
    response_started: float
    done: float = Field(description="when its last byte was handed to the socket")
    phases_ms: dict[str, float] = Field(description="queued, to_handler, handler, from_handler (or app), send, "
                                                    "total")
    overlap_ms: dict[str, float] = Field(description="per kind of server activity (fold, commit, "
                                                     "commit_listeners, gc0/1/2, memory_release, idle_trim, duckdb_purge): "
                                                     "its milliseconds during the request")


class RequestTimingsAnswer(_Model):
    now: float = Field(description="the server's clock when it answered")
    requests: list[TimedRequest]
    activity: dict[str, dict[str, float]] = Field(
        description="per kind of server activity since the first listed request arrived: count, total_ms, "
                    "max_ms (the events kept are bounded: the newest 16,384)")


class TrailQuery(_Model):
    type: list[str] | None = Field(None, description="event types (repeat, or comma-separated)")
    actor: str | None = None
    since: str | None = Field(None, description="Unix ms or ISO 8601")
    until: str | None = Field(None, description="Unix ms or ISO 8601")
    verdict: Literal["applied", "rejected"] | None = None
    max_results: int | None = None
    page_token: str | None = None


class AsOfQuery(_Model):
    as_of: str | None = Field(None, description="Unix ms or ISO 8601: the run as it was then")
    as_of_position: str | None = Field(None, description="'<partition>:<offset>': as of a log position")


class HistoryAsOfQuery(_Model):
    run_id: str = Field(examples=[RUN_ID])
    metric_key: str = Field(examples=["loss"])
    as_of: str | None = Field(None, description="Unix ms or ISO 8601 (this or as_of_position)")
    as_of_position: str | None = None
    max_results: int | None = None
    page_token: str | None = None


class DiffQuery(_Model):
    from_: str | None = Field(None, alias="from", description="Unix ms or ISO 8601 (this or from_position)")
    from_position: str | None = None
    to: str | None = Field(None, description="Unix ms or ISO 8601 (this or to_position)")
    to_position: str | None = None


class RewindBody(_Model):
    step: int | str = Field(description="points above this step are hidden from reads", examples=[100])


class TailQuery(_Model):
    last_event_id: str | None = Field(None, description="resume after this position (or the Last-Event-ID header)")
    ping: float | None = Field(None, description="seconds between keep-alive comments (0.05-60, default 15)")


class NativeRunAnswer(_Model):
    run: MlflowRun


class NativeMetricsAnswer(_Model):
    metrics: list[dict[str, Any]] | None = None
    next_page_token: str | None = None


class ChecksumsAnswer(_Model):
    topic: str
    offsets: dict[str, int] = Field(description="per partition: the next offset the tables reflect")
    tables: dict[str, Any] = Field(description="per table: row count and checksum")


class HistoryBucketsQuery(_Model):
    run_id: str = Field(examples=[RUN_ID])
    metric_key: str = Field(examples=["loss"])
    buckets: int | None = Field(None, description="how many x-ranges (default 1000)")
    x: Literal["step", "time"] | None = Field(None, description="the x axis (default step)")
    start: int | None = Field(None, description="first x (inclusive)")
    end: int | None = Field(None, description="last x (inclusive)")
