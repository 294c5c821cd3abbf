"""The event contract: what ingest appends to Kafka and the projector folds.

Every event travels in an `Envelope`; the `type` names one fact and `payload` carries that
fact's fields. Payloads are plain JSON objects (documented per type below) so that an event
written by any past version of Runledger can still be read: `ingest.contract.codec` upcasts old
schema versions before the projector sees them.

Payloads by type (schema version 1):

- ExperimentCreated   {name, artifact_location|null, artifact_root, tags: [[k, v], ...]}
                      (experiment ids are allocated by the fold, in log order)
- ExperimentRenamed   {new_name}
- ExperimentDeleted   {}
- ExperimentRestored  {}
- ExperimentTagSet    {key, value}
- ExperimentTagDeleted {key}
- RunCreated          {run_name, start_time, user_id, artifact_uri, tags: [[k, v], ...]}
- RunUpdated          {status|null, end_time|null, run_name|null, start_time?|null}
- RunDeleted          {}
- RunRestored         {}
- ParamsLogged        {params: [[k, v], ...]}
- MetricsLogged       {keys: [...], values: [...], timestamps: [...], steps: [...]}
                      columnar, one entry per point; a null value means NaN
- TagsSet             {tags: [[k, v], ...]}   (in order; the last value of a key wins)
- TagDeleted          {key}
- RunBatchLogged      {params: [...], metrics: {keys, values, timestamps, steps}, tags: [...]}
                      one MLflow log-batch request, applied all-or-nothing
- RunRewound          {step}   (schema version 2) metric points of the run logged before this
                      event with a step greater than `step` are hidden from reads; the log
                      keeps them (the trail, as-of reads before it and SQL over events see them)
- InputsLogged        {datasets: [{name, digest, source_type, source, schema|null, profile|null,
                                   tags: [[k, v], ...]}, ...], models?: [model_id, ...]}
                      a dataset already logged to the run (same name and digest) is kept as is;
                      `models` (MLflow 3.x model inputs) is absent in older events
- OutputsLogged       {models: [[model_id, step], ...]}   MLflow 3.x runs/outputs: the run produced
                      these logged models at these steps
- ModelHistoryLogged  {model: {...}}   runs/log-model (MLflow 1.x): the model's JSON is appended to
                      the run's `mlflow.log-model.history` tag, in log order
- ArtifactLogged      {path, size, sha256, parts?}   a file was written to the run's artifact folder
                      (`path` relative to it; `parts`: it came as a multipart upload of that many
                      parts); the bytes are in the artifact store, never in the log
- ArtifactDeleted     {path, files: [[path, size], ...]}   the file or folder `path` was removed,
                      with the files it held

Every event written by the server's writer carries `deadline` (Unix ms): the time by which it
must have reached the log. The topic stamps each record with the broker's append time
(LogAppendTime); the fold refuses an event whose record was appended after its deadline
(`LATE_EVENT`), so a write the server already answered with an error never takes effect
later (docs/design.md, invariant 14). Events without a deadline (older ones, or produced straight
to Kafka) are folded as before.

MetricsLogged (and RunBatchLogged's metrics) may carry three more columns, present only when
some point names a logged model (MLflow 3.x): model_ids, dataset_names, dataset_digests (null
where unset). Such points are also linked to their model (`logged_model_metrics`).

Logged models (MLflow 3.x). Keyed by `payload.model_id` (allocated by ingest, `m-<32 hex>`),
with `run_id` null and `experiment_id` the model's experiment:

- LoggedModelCreated     {model_id, name, model_type, source_run_id, artifact_uri,
                          params: [[k, v], ...], tags: [[k, v], ...]}   status starts PENDING
- LoggedModelFinalized   {model_id, status}   LOGGED_MODEL_READY | LOGGED_MODEL_UPLOAD_FAILED
- LoggedModelDeleted     {model_id}
- LoggedModelTagsSet     {model_id, tags: [[k, v], ...]}   (the last value of a key wins)
- LoggedModelTagDeleted  {model_id, key}
- LoggedModelParamsLogged {model_id, params: [[k, v], ...]}   write-once, like run params
- LoggedModelArtifactLogged  {model_id, path, size, sha256}   as ArtifactLogged, for the model's folder
- LoggedModelArtifactDeleted {model_id, path, files: [[path, size], ...]}

Authentication (docs/auth.md). Non-secret facts only: passwords and token secrets never enter the
log (their hashes live in the data folder's auth file). All share one partition key, so their
order is total; `experiment_id` is set on permission events (the experiment concerned), null
otherwise. The projector logs them (audit trail, SQL `events`); runledger.auth.state folds them.

- UserCreated         {username, is_admin}
- UserDeleted         {username}
- UserAdminSet        {username, is_admin}
- PasswordChanged     {username}                 (the fact, never the password)
- PermissionGranted   {username, experiment_id, permission}   READ | EDIT | MANAGE | NO_PERMISSIONS
- PermissionRevoked   {username, experiment_id}
- TokenCreated        {token_id, username, name, expires_at|null}   (the id, never the secret)
- TokenRevoked        {token_id}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Version 2 added the RunRewound event and the envelope's provenance fields (actor_verified,
# request_id, api); version 1 payloads are unchanged, and version 1 events read those fields as
# unknown (None).
SCHEMA_VERSION = 2

# Events about experiments share one partition key so that name uniqueness and id
# allocation are decided in one totally ordered stream; run events are keyed by run id.
EXPERIMENTS_KEY = b"experiments"

EXPERIMENT_EVENTS = frozenset({
    "ExperimentCreated", "ExperimentRenamed", "ExperimentDeleted", "ExperimentRestored",
    "ExperimentTagSet", "ExperimentTagDeleted",
})
RUN_EVENTS = frozenset({
    "RunCreated", "RunUpdated", "RunDeleted", "RunRestored", "ParamsLogged", "MetricsLogged",
    "TagsSet", "TagDeleted", "RunBatchLogged", "InputsLogged", "RunRewound",
    "OutputsLogged", "ModelHistoryLogged", "ArtifactLogged", "ArtifactDeleted",
})
# Logged-model events are keyed by the model id in their payload.
MODEL_EVENTS = frozenset({
    "LoggedModelCreated", "LoggedModelFinalized", "LoggedModelDeleted", "LoggedModelTagsSet",
    "LoggedModelTagDeleted", "LoggedModelParamsLogged", "LoggedModelArtifactLogged", "LoggedModelArtifactDeleted",
})
AUTH_EVENTS = frozenset({
    "UserCreated", "UserDeleted", "UserAdminSet", "PasswordChanged", "PermissionGranted", "PermissionRevoked",
    "TokenCreated", "TokenRevoked",
})
AUTH_KEY = b"auth"
EVENT_TYPES = EXPERIMENT_EVENTS | RUN_EVENTS | MODEL_EVENTS | AUTH_EVENTS

# The verdict's error code for an event whose record reached the log after its deadline.
LATE_EVENT = "ARRIVED_AFTER_DEADLINE"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One fact, as appended to the log. `ingest_time` is Unix milliseconds set by ingest.

    Provenance (docs/design.md, invariant 11): `user` is the acting principal ('' if none was
    claimed), `actor_verified` whether it was authenticated, `request_id` the HTTP request that
    appended it, `api` the API it came through (ingest.provenance). None means unknown: events
    written before schema version 2 do not carry them.
    """

    event_id: str
    type: str
    experiment_id: str | None
    run_id: str | None
    ingest_time: int
    user: str
    payload: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    actor_verified: bool | None = None
    request_id: str | None = None
    api: str | None = None
    deadline: int | None = None

    @property
    def partition_key(self) -> bytes:
        if self.type in EXPERIMENT_EVENTS:
            return EXPERIMENTS_KEY
        if self.type in MODEL_EVENTS:
            return str(self.payload.get("model_id") or "").encode()
        if self.type in AUTH_EVENTS:
            return AUTH_KEY
        return (self.run_id or "").encode()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the projector decided about one event.

    `error_code` is None when the event was applied; otherwise it is the MLflow error code
    the caller gets, with `message`. `result` carries values the fold allocated (for
    ExperimentCreated: {"experiment_id": ...}).
    """

    error_code: str | None = None
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def applied(self) -> bool:
        return self.error_code is None


def metrics_columns(points: list[tuple[str, float | None, int, int]]) -> dict[str, list[Any]]:
    """Lay out (key, value, timestamp, step) points in the columnar MetricsLogged form."""
    return {
        "keys": [p[0] for p in points],
        "values": [p[1] for p in points],
        "timestamps": [p[2] for p in points],
        "steps": [p[3] for p in points],
    }
