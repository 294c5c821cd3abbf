"""The fold: a pure function from (state, log records) to (table changes, verdicts).

No I/O and no clock: every decision depends only on the state loaded for the batch and on the
records themselves, so replaying the log gives the same tables (docs/design.md, invariants 1-2).
The result never depends on where batch boundaries fall: everything the fold remembers across
events of one batch (event ids, first param values, latest metrics) is also what the store
loads at the start of the next batch.

Rules (docs/design.md, invariant 4) live in the `_on_<EventType>` handlers below, found through
the `HANDLERS` table. A handler first parses and checks everything, then mutates the working
state, so a rejected event changes nothing. A payload that fails its checks raises
`PayloadInvalid` (a MALFORMED_EVENT rejection); any other exception is a bug and propagates.
Which points the store may insert without a duplicate check is planned apart, in
`projector.storage_plan`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from runledger.ingest.contract import metric_table
from runledger.ingest.contract.events import AUTH_EVENTS, LATE_EVENT, Envelope, Verdict
from runledger.ingest.contract import entities
from runledger.projector import rules, storage_plan
from runledger.projector.step_cover import Cover
from runledger.projector.rows import ExperimentRow, LatestPoint, LoggedModelRow, RunRow

LATEST_RULES = ("timestamp", "step")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A record as read from Kafka: either a decoded event or the reason it could not be.
    `append_time` is the broker's append timestamp (Unix ms) when the topic stamps one."""

    partition: int
    offset: int
    event: Envelope | None
    decode_error: str | None = None
    append_time: int | None = None


@dataclass
class FoldState:
    """What the fold needs to know before a batch; loaded by the store for the batch's keys."""

    experiments: dict[str, ExperimentRow] = field(default_factory=dict)
    experiment_ids_by_name: dict[str, str] = field(default_factory=dict)
    next_experiment_id: int = 1
    experiment_tags: dict[tuple[str, str], str] = field(default_factory=dict)
    runs: dict[str, RunRow] = field(default_factory=dict)
    params: dict[tuple[str, str], str] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    latest: dict[str, dict[tuple[str, str], LatestPoint]] = field(
        default_factory=lambda: {rule: {} for rule in LATEST_RULES})
    # (run, key) -> steps its stored points may have (projector.step_cover); a key missing here
    # is covered up to its latest step
    step_cover: dict[tuple[str, str], Cover] = field(default_factory=dict)
    # event ids applied (or rejected) by earlier batches, with their verdicts
    seen: dict[str, Verdict] = field(default_factory=dict)
    # logged models named by the batch's model events, with their params and tags
    models: dict[str, LoggedModelRow] = field(default_factory=dict)
    model_params: dict[tuple[str, str], str] = field(default_factory=dict)
    model_tags: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One row of the event log (the audit trail): the event and what was decided about it."""

    partition: int
    offset: int
    event_id: str
    type: str
    experiment_id: str | None
    run_id: str | None
    ingest_time: int | None
    user: str
    error_code: str | None
    message: str
    payload: dict[str, Any] | None
    # provenance (ingest.contract.events.Envelope); None: unknown (events older than schema version 2)
    actor_verified: bool | None = None
    request_id: str | None = None
    api: str | None = None


METRIC_SCHEMA = pa.schema([("run_id", pa.string()), ("key", pa.string()), ("value", pa.float64()),
                           ("timestamp", pa.int64()), ("step", pa.int64())])


@dataclass
class MetricRows:
    """The batch's accepted metric points, in fold order, as Arrow chunks (one per event):
    the projector's hot path never turns points into Python objects."""

    chunks: list[pa.Table] = field(default_factory=list)
    # Per chunk: None if every point is certainly not stored yet nor in an earlier chunk (see
    # `projector.storage_plan`), else a boolean mask of the points that certainly are not.
    fresh: list[pa.Array | None] = field(default_factory=list)
    # Per chunk: True if the fold proved the chunk holds no point twice.
    distinct: list[bool] = field(default_factory=list)

    def add(self, run_id: str, points: pa.Table) -> None:
        self.chunks.append(pa.Table.from_arrays(
            [pa.repeat(run_id, points.num_rows).cast(pa.string()), *points.columns], schema=METRIC_SCHEMA))
        self.fresh.append(None)
        self.distinct.append(False)

    def table(self) -> pa.Table:
        return pa.concat_tables(self.chunks) if self.chunks else METRIC_SCHEMA.empty_table()

    def split(self) -> tuple[pa.Table, pa.Table, pa.Table]:
        """The points in three groups, for the store: certainly new and distinct (inserted as
        they are), certainly new but maybe repeated within the batch (inserted DISTINCT), and
        maybe repeating a stored point (checked against the metrics table)."""
        plain, repeated, maybe = [], [], []
        for chunk, mask, distinct in zip(self.chunks, self.fresh, self.distinct):
            if mask is None:
                (plain if distinct else repeated).append(chunk)
            else:
                repeated.append(chunk.filter(mask))
                maybe.append(chunk.filter(pc.invert(mask)))
        empty = METRIC_SCHEMA.empty_table()
        return tuple(pa.concat_tables(t) if t else empty for t in (plain, repeated, maybe))  # type: ignore[return-value]

    def __len__(self) -> int:
        return sum(c.num_rows for c in self.chunks)

    def segment(self, start: int, stop: int | None) -> "MetricRows":
        """The chunks [start:stop], with their marks (the store writes a batch's points in
        segments cut at its rewinds)."""
        return MetricRows(self.chunks[start:stop], self.fresh[start:stop], self.distinct[start:stop])

    def column(self, name: str) -> list[Any]:
        return self.table().column(name).to_pylist()

    # Python views for tests and inspection.
    run_id = property(lambda self: self.column("run_id"))
    key = property(lambda self: self.column("key"))
    value = property(lambda self: self.column("value"))
    timestamp = property(lambda self: self.column("timestamp"))
    step = property(lambda self: self.column("step"))


@dataclass(frozen=True, slots=True)
class Rewind:
    """A RunRewound event: the run's points stored before it with a step above `step` leave the
    metrics table (for `rewound_metrics`). `chunk_index` is how many of the batch's metric
    chunks were folded before it: those are written first, the rest after the move."""

    run_id: str
    step: int
    event_id: str
    chunk_index: int


@dataclass(frozen=True, slots=True)
class ArtifactOp:
    """A file written to (`put`) or a file or folder removed from (`delete`) the artifact folder
    of a run or a logged model (`owner_id`), in fold order: the store applies them in turn, so a
    file deleted and written again in one batch ends up present."""

    kind: str                # "put" | "delete"
    owner_id: str            # run id, or logged model id
    owner_type: str          # "run" | "model"
    experiment_id: str | None
    path: str
    size: int | None = None
    sha256: str | None = None
    logged_time: int | None = None
    actor: str = ""
    event_id: str = ""


@dataclass
class BatchChanges:
    """Final values of every row the batch touched. None in a tag map means deleted."""

    experiments: dict[str, ExperimentRow] = field(default_factory=dict)
    experiment_tags: dict[tuple[str, str], str | None] = field(default_factory=dict)
    runs: dict[str, RunRow] = field(default_factory=dict)
    params: dict[tuple[str, str], str] = field(default_factory=dict)
    tags: dict[tuple[str, str], str | None] = field(default_factory=dict)
    metrics: MetricRows = field(default_factory=MetricRows)
    latest: dict[str, dict[tuple[str, str], LatestPoint]] = field(
        default_factory=lambda: {rule: {} for rule in LATEST_RULES})
    # (run_id, name, digest) -> dataset input row; the store keeps an existing row (first wins)
    datasets: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    models: dict[str, LoggedModelRow] = field(default_factory=dict)
    model_params: dict[tuple[str, str], str] = field(default_factory=dict)
    model_tags: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # (run, key) -> its step cover after this batch (kept by the fold cache, not stored)
    step_cover: dict[tuple[str, str], Cover] = field(default_factory=dict)
    # (model_id, key, timestamp, step, run_id) -> (value, dataset_name, dataset_digest, experiment_id);
    # the store keeps an existing row (first wins, as MLflow's primary key does)
    model_metrics: dict[tuple[str, str, int, int, str], tuple[float, str | None, str | None, str]] = field(
        default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    # in fold order; a rewound run's latest metrics are recomputed by the store from its points
    rewinds: list[Rewind] = field(default_factory=list)
    # artifact writes and deletions, in fold order (the bytes are in the artifact store)
    artifacts: list[ArtifactOp] = field(default_factory=list)
    # (run_id, model_id) -> model input row; (run_id, model_id, step) -> model output row (first wins)
    model_inputs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    model_outputs: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)

    def merge(self, later: "BatchChanges") -> None:
        """Add the changes of the batch folded right after this one, so both are written in
        one transaction with the same result as two: final values (rows, tags, latest points)
        take the later batch's, first-wins rows (params, datasets, model metrics) keep ours,
        appends (metric points, log) concatenate."""
        self.experiments.update(later.experiments)
        self.experiment_tags.update(later.experiment_tags)
        self.runs.update(later.runs)
        self.tags.update(later.tags)
        for rule, points in later.latest.items():
            self.latest.setdefault(rule, {}).update(points)
        self.models.update(later.models)
        self.model_tags.update(later.model_tags)
        self.artifacts.extend(later.artifacts)
        for mine, theirs in ((self.params, later.params), (self.datasets, later.datasets),
                             (self.model_params, later.model_params), (self.model_metrics, later.model_metrics),
                             (self.model_inputs, later.model_inputs), (self.model_outputs, later.model_outputs)):
            for k, v in theirs.items():
                mine.setdefault(k, v)
        self.step_cover.update(later.step_cover)
        offset = len(self.metrics.chunks)
        self.rewinds.extend(replace(r, chunk_index=r.chunk_index + offset) for r in later.rewinds)
        self.metrics.chunks.extend(later.metrics.chunks)
        self.metrics.fresh.extend(later.metrics.fresh)
        self.metrics.distinct.extend(later.metrics.distinct)
        self.log.extend(later.log)


@dataclass
class FoldResult:
    changes: BatchChanges
    verdicts: dict[str, Verdict]


# A MetricsLogged payload's columns as an Arrow table: key, value (NaN allowed), timestamp, step.
_Points = pa.Table


class Rejected(Exception):
    """Raised inside a handler: the event is not applied; the caller gets this error."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


class PayloadInvalid(Exception):
    """A field of an event has the wrong type or is out of the range its column can hold.

    Raised by the field checks (`_str`, `_int`, `_pairs`) that every handler reads its payload
    through; the event becomes a MALFORMED_EVENT rejection naming the field. A record written
    straight into the topic can hold anything JSON can, and DuckDB refuses what its columns
    cannot hold only at commit time, which must never be where a bad event is found (docs/design.md,
    invariant 7).
    """


# Column ranges. BIGINT is int64; a JSON integer can be up to 2**64-1 (orjson reads it as int).
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
# No string a request could carry is longer than its body (ingest.limits.MAX_REQUEST_BYTES), so
# this refuses only records written around ingest and changes no past verdict on replay.
MAX_STRING_CHARS = 8 * 1024 * 1024


def fold_batch(state: FoldState, records: list[LogRecord]) -> FoldResult:
    """Fold `records` (in log order per partition) over `state`; `state` is not modified."""
    fold = _Fold(state)
    for record in records:
        fold.apply(record)
    storage_plan.mark_fresh_metrics(fold.changes, state)
    fold.raise_latest_metrics()
    return FoldResult(fold.changes, fold.verdicts)


class _Fold:
    def __init__(self, state: FoldState) -> None:
        self.s = state
        self.changes = BatchChanges()
        self.verdicts: dict[str, Verdict] = {}
        self._seen: dict[str, Verdict] = dict(state.seen)
        self._names = dict(state.experiment_ids_by_name)
        self._next_exp = state.next_experiment_id

    # ----- lookups that see this batch's earlier changes first
    def experiment(self, exp_id: str | None) -> ExperimentRow | None:
        if exp_id is None:
            return None
        return self.changes.experiments.get(exp_id) or self.s.experiments.get(exp_id)

    def run(self, run_id: str | None) -> RunRow | None:
        if run_id is None:
            return None
        return self.changes.runs.get(run_id) or self.s.runs.get(run_id)

    def param(self, key: tuple[str, str]) -> str | None:
        return self.changes.params.get(key, self.s.params.get(key))

    def tag(self, key: tuple[str, str]) -> str | None:
        if key in self.changes.tags:
            return self.changes.tags[key]
        return self.s.tags.get(key)

    def experiment_tag(self, key: tuple[str, str]) -> str | None:
        if key in self.changes.experiment_tags:
            return self.changes.experiment_tags[key]
        return self.s.experiment_tags.get(key)

    def latest(self, rule: str, key: tuple[str, str]) -> LatestPoint | None:
        return self.changes.latest[rule].get(key) or self.s.latest[rule].get(key)

    # ----- the loop body
    def apply(self, record: LogRecord) -> None:
        ev = record.event
        if ev is None:
            self._log(record, None, Verdict("MALFORMED_EVENT", record.decode_error or "undecodable"))
            return
        if ev.event_id in self._seen:
            # A redelivered or re-produced event: applied once, its first verdict stands.
            self.verdicts[ev.event_id] = self._seen[ev.event_id]
            return
        if ev.deadline is not None and record.append_time is not None and record.append_time > ev.deadline:
            # The writer answered this event with an error once its deadline passed (docs/design.md,
            # invariant 14), so it must not take effect. Its id is not marked seen: the
            # client's retry, which may carry the same id (streaming), is a new chance.
            verdict = Verdict(LATE_EVENT, f"{ev.type} {ev.event_id} reached the log at {record.append_time} "
                                          f"(broker time), after its deadline {ev.deadline}; not applied. "
                                          "Retrying is safe.")
            self.verdicts[ev.event_id] = verdict
            self._log(record, ev, verdict, f"late:{record.partition}:{record.offset}:{ev.event_id}")
            return
        handler = HANDLERS.get(ev.type)
        try:
            if handler is None:  # the codec refuses unknown types; this guards direct callers
                raise PayloadInvalid(f"unknown event type {ev.type!r}")
            if not isinstance(ev.payload, dict):
                raise PayloadInvalid(f"expected the payload as an object, got {type(ev.payload).__name__}")
            result = handler(self, _with_checked_payload(ev)) or {}
            verdict = Verdict(result=result)
        except Rejected as r:
            verdict = Verdict(r.error_code, r.message)
        except PayloadInvalid as e:
            # The one way a bad payload is reported. Any other exception is a bug of ours and
            # propagates: it must fail tests, not pass as a rejection.
            verdict = Verdict("MALFORMED_EVENT", f"malformed {ev.type} payload: {e}")
        self._seen[ev.event_id] = verdict
        self.verdicts[ev.event_id] = verdict
        self._log(record, ev, verdict)

    def _log(self, record: LogRecord, ev: Envelope | None, verdict: Verdict, log_id: str | None = None) -> None:
        """`log_id` stands in for the event id where that id may be applied later (late events)."""
        self.changes.log.append(LogEntry(
            partition=record.partition, offset=record.offset,
            event_id=log_id or (ev.event_id if ev else f"undecodable:{record.partition}:{record.offset}"),
            type=ev.type if ev else "?",
            # an allocated experiment id is kept so a redelivery can answer with it
            experiment_id=verdict.result.get("experiment_id", ev.experiment_id) if ev else None,
            run_id=ev.run_id if ev else None, ingest_time=ev.ingest_time if ev else None,
            user=ev.user if ev else "", error_code=verdict.error_code, message=verdict.message,
            payload=_audit_payload(ev) if ev else None,
            actor_verified=ev.actor_verified if ev else None, request_id=ev.request_id if ev else None,
            api=ev.api if ev else None,
        ))

    # ----- experiments
    def _active_experiment(self, ev: Envelope) -> ExperimentRow:
        exp = self.experiment(ev.experiment_id)
        if exp is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST", entities.experiment_not_found(ev.experiment_id))
        return exp

    def _put_experiment(self, exp: ExperimentRow) -> None:
        self.changes.experiments[exp.experiment_id] = exp

    def _on_ExperimentCreated(self, ev: Envelope) -> dict[str, Any]:
        p = ev.payload
        name = _str(p["name"])
        tags = _pairs(p.get("tags") or [])
        if name in self._names:
            raise Rejected("RESOURCE_ALREADY_EXISTS", f"Experiment(name={name}) already exists.")
        # Ingest may pin an id (the built-in "Default" experiment is "0"); otherwise the next one.
        exp_id = ev.experiment_id if ev.experiment_id is not None else str(self._next_exp)
        if self.experiment(exp_id) is not None:
            raise Rejected("RESOURCE_ALREADY_EXISTS", f"Experiment with id={exp_id} already exists.")
        location = _str(p.get("artifact_location") or f"{_str(p['artifact_root']).rstrip('/')}/{exp_id}")
        if exp_id.isdigit():
            self._next_exp = max(self._next_exp, int(exp_id) + 1)
        self._put_experiment(ExperimentRow(
            experiment_id=exp_id, name=name, artifact_location=location, lifecycle_stage="active",
            creation_time=ev.ingest_time, last_update_time=ev.ingest_time, deleted_time=None))
        self._names[name] = exp_id
        for k, v in tags:
            self.changes.experiment_tags[(exp_id, k)] = v
        return {"experiment_id": exp_id}

    def _on_ExperimentRenamed(self, ev: Envelope) -> None:
        exp = self._active_experiment(ev)
        new_name = _str(ev.payload["new_name"])
        if exp.lifecycle_stage != "active":
            raise Rejected("INVALID_PARAMETER_VALUE",
                           f"Cannot rename a non-active experiment {exp.experiment_id} ({exp.lifecycle_stage}).")
        if new_name == exp.name:
            return
        if new_name in self._names:
            # mlflow server answers a rename onto a taken name with BAD_REQUEST (its unique
            # constraint), not RESOURCE_ALREADY_EXISTS as for create.
            raise Rejected("BAD_REQUEST", f"Experiment(name={new_name}) already exists.")
        del self._names[exp.name]
        self._names[new_name] = exp.experiment_id
        self._put_experiment(replace(exp, name=new_name, last_update_time=ev.ingest_time))

    def _on_ExperimentDeleted(self, ev: Envelope) -> None:
        exp = self._active_experiment(ev)
        if exp.lifecycle_stage == "deleted":
            # As mlflow server: a deleted experiment is not found among the active ones.
            raise Rejected("RESOURCE_DOES_NOT_EXIST", entities.experiment_not_found(exp.experiment_id))
        self._put_experiment(replace(exp, lifecycle_stage="deleted", deleted_time=ev.ingest_time,
                                     last_update_time=ev.ingest_time))

    def _on_ExperimentRestored(self, ev: Envelope) -> None:
        exp = self._active_experiment(ev)
        if exp.lifecycle_stage == "active":
            # As mlflow server: an active experiment is not found among the deleted ones.
            raise Rejected("RESOURCE_DOES_NOT_EXIST", entities.experiment_not_found(exp.experiment_id))
        self._put_experiment(replace(exp, lifecycle_stage="active", deleted_time=None,
                                     last_update_time=ev.ingest_time))

    def _on_ExperimentTagSet(self, ev: Envelope) -> None:
        key, value = _str(ev.payload["key"]), _str(ev.payload["value"])
        exp = self._active_experiment(ev)
        _require_active_experiment(exp)
        self.changes.experiment_tags[(exp.experiment_id, key)] = value

    def _on_ExperimentTagDeleted(self, ev: Envelope) -> None:
        key = _str(ev.payload["key"])
        exp = self._active_experiment(ev)
        _require_active_experiment(exp)
        if self.experiment_tag((exp.experiment_id, key)) is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST",
                           f"No tag with name: {key} in experiment with id {exp.experiment_id}")
        self.changes.experiment_tags[(exp.experiment_id, key)] = None

    # ----- runs
    def _writable_run(self, ev: Envelope) -> RunRow:
        run = self.run(ev.run_id)
        if run is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST", entities.run_not_found(ev.run_id))
        if run.lifecycle_stage != "active":
            raise Rejected("INVALID_PARAMETER_VALUE", entities.run_not_active(run.run_id, run.lifecycle_stage))
        return run

    def _on_RunCreated(self, ev: Envelope) -> None:
        p = ev.payload
        run_id, exp_id = _str(ev.run_id), _str(ev.experiment_id)
        if self.run(run_id) is not None:
            raise Rejected("RESOURCE_ALREADY_EXISTS", f"Run with id={run_id} already exists")
        tags = _pairs(p.get("tags") or [])
        run_name = _str(p["run_name"])
        self.changes.runs[run_id] = RunRow(
            run_id=run_id, experiment_id=exp_id, run_name=run_name, user_id=_str(p.get("user_id") or ""),
            status="RUNNING", start_time=_int(p["start_time"]), end_time=None, lifecycle_stage="active",
            deleted_time=None, artifact_uri=_str(p["artifact_uri"]))
        for k, v in tags:
            self.changes.tags[(run_id, k)] = v
        self.changes.tags[(run_id, rules.RUN_NAME_TAG)] = run_name

    def _on_RunUpdated(self, ev: Envelope) -> None:
        p = ev.payload
        status, end_time, run_name = p.get("status"), p.get("end_time"), p.get("run_name")
        start_time = p.get("start_time")  # optional: Comet's set_start_time (MLflow's UpdateRun has none)
        if status is not None and _str(status) not in rules.RUN_STATUSES:
            raise Rejected("INVALID_PARAMETER_VALUE", f"Invalid run status {status!r}")
        run = self._writable_run(ev)
        run = replace(
            run,
            status=status if status is not None else run.status,
            start_time=_int(start_time) if start_time is not None else run.start_time,
            end_time=_int(end_time) if end_time is not None else run.end_time,
            run_name=_str(run_name) if run_name else run.run_name,
        )
        self.changes.runs[run.run_id] = run
        if run_name:
            self.changes.tags[(run.run_id, rules.RUN_NAME_TAG)] = run.run_name

    def _on_RunDeleted(self, ev: Envelope) -> None:
        run = self.run(ev.run_id)
        if run is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST", entities.run_not_found(ev.run_id))
        self.changes.runs[run.run_id] = replace(run, lifecycle_stage="deleted", deleted_time=ev.ingest_time)

    def _on_RunRestored(self, ev: Envelope) -> None:
        run = self.run(ev.run_id)
        if run is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST", entities.run_not_found(ev.run_id))
        self.changes.runs[run.run_id] = replace(run, lifecycle_stage="active", deleted_time=None)

    def _on_ParamsLogged(self, ev: Envelope) -> None:
        params = _pairs(ev.payload["params"])
        run = self._writable_run(ev)
        self._check_params(run.run_id, params)
        self._put_params(run.run_id, params)

    def _on_MetricsLogged(self, ev: Envelope) -> None:
        points = _metric_points(ev.payload)
        links = _model_metric_links(ev.payload, points)
        run = self._writable_run(ev)
        self._put_metrics(run.run_id, points)
        self._put_model_metrics(run, links)

    def _on_TagsSet(self, ev: Envelope) -> None:
        tags = _pairs(ev.payload["tags"])
        run = self._writable_run(ev)
        self._put_tags(run, tags)

    def _on_TagDeleted(self, ev: Envelope) -> None:
        key = _str(ev.payload["key"])
        run = self._writable_run(ev)
        if self.tag((run.run_id, key)) is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST", f"No tag with name: {key} in run with id {run.run_id}")
        self.changes.tags[(run.run_id, key)] = None

    def _on_RunBatchLogged(self, ev: Envelope) -> None:
        p = ev.payload
        params = _pairs(p.get("params") or [])
        tags = _pairs(p.get("tags") or [])
        points = _metric_points(p.get("metrics") or {"keys": []})
        links = _model_metric_links(p.get("metrics") or {}, points)
        run = self._writable_run(ev)
        self._check_params(run.run_id, params)  # a conflict rejects the whole request
        self._put_params(run.run_id, params)
        self._put_metrics(run.run_id, points)
        self._put_model_metrics(run, links)
        self._put_tags(run, tags)

    def _on_RunRewound(self, ev: Envelope) -> None:
        # Non-destructive (docs/design.md, invariant 10): the points stay in the log; the read model
        # moves them aside, and the run's latest metrics are recomputed from what remains.
        step = _int(ev.payload["step"])
        run = self._writable_run(ev)
        self.changes.rewinds.append(Rewind(run.run_id, step, ev.event_id, len(self.changes.metrics.chunks)))

    def _on_InputsLogged(self, ev: Envelope) -> None:
        datasets = [_dataset_input(d) for d in _list(ev.payload["datasets"], "datasets")]
        models = [_str(m) for m in _list(ev.payload.get("models") or [], "models")]
        run = self._writable_run(ev)
        for model_id in models:
            self.changes.model_inputs.setdefault((run.run_id, model_id), {
                "run_id": run.run_id, "model_id": model_id, "experiment_id": run.experiment_id,
                "logged_time": ev.ingest_time})
        for d in datasets:
            key = (run.run_id, d["name"], d["digest"])
            if key not in self.changes.datasets:
                self.changes.datasets[key] = {**d, "run_id": run.run_id, "experiment_id": run.experiment_id,
                                              "logged_time": ev.ingest_time}

    def _on_OutputsLogged(self, ev: Envelope) -> None:
        outputs = [(_str(m), _int(step)) for m, step in _list_of_pairs(ev.payload["models"], "models")]
        run = self._writable_run(ev)
        for model_id, step in outputs:
            # Linked by id only, as model metrics are: the model lives in another partition.
            self.changes.model_outputs.setdefault((run.run_id, model_id, step), {
                "run_id": run.run_id, "model_id": model_id, "step": step, "experiment_id": run.experiment_id,
                "logged_time": ev.ingest_time})

    def _on_ModelHistoryLogged(self, ev: Envelope) -> None:
        model = ev.payload["model"]
        if not isinstance(model, dict):
            raise PayloadInvalid(f"model: expected an object, got {type(model).__name__}")
        run = self._writable_run(ev)
        old = self.tag((run.run_id, MODEL_HISTORY_TAG))
        try:
            history = json.loads(old) if old else []
        except ValueError:
            history = None
        if not isinstance(history, list):
            raise Rejected("INVALID_PARAMETER_VALUE",
                           f"The run's tag {MODEL_HISTORY_TAG} does not hold a JSON list; cannot append to it.")
        # MLflow's own serialisation (json.dumps defaults), so clients read what mlflow server writes.
        self._put_tags(run, [(MODEL_HISTORY_TAG, json.dumps([*history, model]))])

    def _on_ArtifactLogged(self, ev: Envelope) -> None:
        path, size, digest = _artifact_file(ev.payload)
        run = self._writable_run(ev)
        self.changes.artifacts.append(ArtifactOp("put", run.run_id, "run", run.experiment_id, path, size, digest,
                                                 ev.ingest_time, ev.user, ev.event_id))

    def _on_ArtifactDeleted(self, ev: Envelope) -> None:
        path = _str(ev.payload["path"])
        run = self._writable_run(ev)
        self.changes.artifacts.append(ArtifactOp("delete", run.run_id, "run", run.experiment_id, path,
                                                 logged_time=ev.ingest_time, actor=ev.user, event_id=ev.event_id))

    def _on_LoggedModelArtifactLogged(self, ev: Envelope) -> None:
        path, size, digest = _artifact_file(ev.payload)
        model = self._existing_model(ev)
        self.changes.artifacts.append(ArtifactOp("put", model.model_id, "model", model.experiment_id, path, size,
                                                 digest, ev.ingest_time, ev.user, ev.event_id))

    def _on_LoggedModelArtifactDeleted(self, ev: Envelope) -> None:
        path = _str(ev.payload["path"])
        model = self._existing_model(ev)
        self.changes.artifacts.append(ArtifactOp("delete", model.model_id, "model", model.experiment_id, path,
                                                 logged_time=ev.ingest_time, actor=ev.user, event_id=ev.event_id))

    # ----- logged models (MLflow 3.x): events keyed by model id, see ingest.contract.events
    def logged_model(self, model_id: str) -> LoggedModelRow | None:
        return self.changes.models.get(model_id) or self.s.models.get(model_id)

    def _model_param(self, key: tuple[str, str]) -> str | None:
        return self.changes.model_params.get(key, self.s.model_params.get(key))

    def _model_tag(self, key: tuple[str, str]) -> str | None:
        if key in self.changes.model_tags:
            return self.changes.model_tags[key]
        return self.s.model_tags.get(key)

    def _existing_model(self, ev: Envelope) -> LoggedModelRow:
        # As MLflow's SQL store, writes find a deleted model too; only reads hide it.
        model_id = _str(ev.payload["model_id"])
        model = self.logged_model(model_id)
        if model is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST", entities.model_not_found(model_id))
        return model

    def _check_model_params(self, model_id: str, params: list[tuple[str, str]]) -> None:
        for key, value in params:
            old = self._model_param((model_id, key))
            if old is not None and old != value:
                raise Rejected("INVALID_PARAMETER_VALUE",
                               f"Changing param values is not allowed. Param with key='{key}' was already "
                               f"logged with value='{old}' for logged model ID='{model_id}'. "
                               f"Attempted logging new value '{value}'.")

    def _on_LoggedModelCreated(self, ev: Envelope) -> None:
        p = ev.payload
        model_id, exp_id = _str(p["model_id"]), _str(ev.experiment_id)
        params, tags = _pairs(p.get("params") or []), _pairs(p.get("tags") or [])
        row = LoggedModelRow(
            model_id=model_id, experiment_id=exp_id, name=_str(p["name"]), artifact_uri=_str(p["artifact_uri"]),
            creation_timestamp_ms=ev.ingest_time, last_updated_timestamp_ms=ev.ingest_time,
            status="LOGGED_MODEL_PENDING", lifecycle_stage="active", model_type=_str(p.get("model_type") or ""),
            source_run_id=_str(p.get("source_run_id") or ""), status_message=None)
        if self.logged_model(model_id) is not None:
            raise Rejected("RESOURCE_ALREADY_EXISTS", f"Logged model with ID '{model_id}' already exists.")
        self.changes.models[model_id] = row
        for key, value in params:
            self.changes.model_params.setdefault((model_id, key), value)
        for key, value in tags:
            self.changes.model_tags[(model_id, key)] = value

    def _on_LoggedModelFinalized(self, ev: Envelope) -> None:
        status = _str(ev.payload["status"])
        if status not in ("LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"):
            raise Rejected("INVALID_PARAMETER_VALUE", f"Invalid logged model status {status!r}")
        model = self._existing_model(ev)
        self.changes.models[model.model_id] = replace(model, status=status, last_updated_timestamp_ms=ev.ingest_time)

    def _on_LoggedModelDeleted(self, ev: Envelope) -> None:
        model = self._existing_model(ev)
        self.changes.models[model.model_id] = replace(model, lifecycle_stage="deleted",
                                                      last_updated_timestamp_ms=ev.ingest_time)

    def _on_LoggedModelTagsSet(self, ev: Envelope) -> None:
        tags = _pairs(ev.payload["tags"])
        model = self._existing_model(ev)
        for key, value in tags:
            self.changes.model_tags[(model.model_id, key)] = value

    def _on_LoggedModelTagDeleted(self, ev: Envelope) -> None:
        key = _str(ev.payload["key"])
        model = self._existing_model(ev)
        if self._model_tag((model.model_id, key)) is None:
            raise Rejected("RESOURCE_DOES_NOT_EXIST",
                           f"No tag with key {key!r} found for model with ID {model.model_id!r}.")
        self.changes.model_tags[(model.model_id, key)] = None

    def _on_LoggedModelParamsLogged(self, ev: Envelope) -> None:
        params = _pairs(ev.payload["params"])
        model = self._existing_model(ev)
        self._check_model_params(model.model_id, params)
        for key, value in params:
            if self._model_param((model.model_id, key)) is None:
                self.changes.model_params[(model.model_id, key)] = value

    def _put_model_metrics(self, run: RunRow, links: list[tuple[str, str, int, int, float, str | None, str | None]]
                           ) -> None:
        # Linked by model id only: whether the model exists is another partition's business,
        # resolved by a join at query time (docs/design.md, invariant 2).
        for model_id, key, ts, step, value, ds_name, ds_digest in links:
            self.changes.model_metrics.setdefault((model_id, key, ts, step, run.run_id),
                                                  (value, ds_name, ds_digest, run.experiment_id))

    # ----- shared rule applications
    def _check_params(self, run_id: str, params: list[tuple[str, str]]) -> None:
        for key, value in params:
            old = self.param((run_id, key))
            if old is not None and old != value:
                raise Rejected("INVALID_PARAMETER_VALUE", rules.param_conflict_message(run_id, key, old, value))

    def _put_params(self, run_id: str, params: list[tuple[str, str]]) -> None:
        for key, value in params:
            if self.param((run_id, key)) is None:
                self.changes.params[(run_id, key)] = value

    def _put_tags(self, run: RunRow, tags: list[tuple[str, str]]) -> None:
        for key, value in tags:
            self.changes.tags[(run.run_id, key)] = value
            if key == rules.RUN_NAME_TAG:
                # MLflow keeps the run name and its tag in step: setting the tag renames the run.
                run = replace(self.run(run.run_id) or run, run_name=value)
                self.changes.runs[run.run_id] = run

    def _put_metrics(self, run_id: str, points: _Points) -> None:
        if points.num_rows:
            self.changes.metrics.add(run_id, points)

    def raise_latest_metrics(self) -> None:
        """Latest metric per (run, key) under both rules, once per batch.

        Folding the batch's accepted points one by one with `rules.newer`, starting from the
        stored latest, keeps the stored point unless the batch's first point with the
        greatest sort key beats it; so only that candidate is compared.
        """
        rewound = {r.run_id for r in self.changes.rewinds}
        for rule, candidates in rules.batch_latest_candidates(self.changes.metrics.chunks,
                                                                      one_run_per_chunk=True).items():
            latest = self.changes.latest[rule]
            for run_id, key, value, ts, step in candidates:
                if run_id in rewound:
                    continue  # recomputed by the store from the points left (store.apply)
                point = LatestPoint(value, ts, step)
                current = self.latest(rule, (run_id, key))
                if current is None or rules.newer(rule, point, current):
                    latest[(run_id, key)] = point


    # ----- authentication facts (runledger.auth.state folds them; the read model only logs them)
    def _auth_fact(self, ev: Envelope) -> None:
        for name in AUTH_FIELDS[ev.type]:
            _str(ev.payload[name])

    def _on_UserCreated(self, ev: Envelope) -> None:
        self._auth_fact(ev)

    def _on_UserDeleted(self, ev: Envelope) -> None:
        self._auth_fact(ev)

    def _on_UserAdminSet(self, ev: Envelope) -> None:
        self._auth_fact(ev)

    def _on_PasswordChanged(self, ev: Envelope) -> None:
        self._auth_fact(ev)

    def _on_PermissionGranted(self, ev: Envelope) -> None:
        self._auth_fact(ev)

    def _on_PermissionRevoked(self, ev: Envelope) -> None:
        self._auth_fact(ev)

    def _on_TokenCreated(self, ev: Envelope) -> None:
        self._auth_fact(ev)

    def _on_TokenRevoked(self, ev: Envelope) -> None:
        self._auth_fact(ev)


# The string fields each authentication fact must carry (the rest are optional or booleans).
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "UserCreated": ("username",), "UserDeleted": ("username",), "UserAdminSet": ("username",),
    "PasswordChanged": ("username",), "PermissionGranted": ("username", "experiment_id", "permission"),
    "PermissionRevoked": ("username", "experiment_id"), "TokenCreated": ("token_id", "username"),
    "TokenRevoked": ("token_id",),
}


# Each event type's handler, stated once: the table the fold dispatches through (a type of the
# contract without a handler fails tests/test_fold.py's check).
HANDLERS: dict[str, Callable[[_Fold, Envelope], dict[str, Any] | None]] = {
    "ExperimentCreated": _Fold._on_ExperimentCreated,
    "ExperimentRenamed": _Fold._on_ExperimentRenamed,
    "ExperimentDeleted": _Fold._on_ExperimentDeleted,
    "ExperimentRestored": _Fold._on_ExperimentRestored,
    "ExperimentTagSet": _Fold._on_ExperimentTagSet,
    "ExperimentTagDeleted": _Fold._on_ExperimentTagDeleted,
    "RunCreated": _Fold._on_RunCreated,
    "RunUpdated": _Fold._on_RunUpdated,
    "RunDeleted": _Fold._on_RunDeleted,
    "RunRestored": _Fold._on_RunRestored,
    "ParamsLogged": _Fold._on_ParamsLogged,
    "MetricsLogged": _Fold._on_MetricsLogged,
    "TagsSet": _Fold._on_TagsSet,
    "TagDeleted": _Fold._on_TagDeleted,
    "RunBatchLogged": _Fold._on_RunBatchLogged,
    "RunRewound": _Fold._on_RunRewound,
    "InputsLogged": _Fold._on_InputsLogged,
    "OutputsLogged": _Fold._on_OutputsLogged,
    "ModelHistoryLogged": _Fold._on_ModelHistoryLogged,
    "ArtifactLogged": _Fold._on_ArtifactLogged,
    "ArtifactDeleted": _Fold._on_ArtifactDeleted,
    "LoggedModelCreated": _Fold._on_LoggedModelCreated,
    "LoggedModelFinalized": _Fold._on_LoggedModelFinalized,
    "LoggedModelDeleted": _Fold._on_LoggedModelDeleted,
    "LoggedModelTagsSet": _Fold._on_LoggedModelTagsSet,
    "LoggedModelTagDeleted": _Fold._on_LoggedModelTagDeleted,
    "LoggedModelParamsLogged": _Fold._on_LoggedModelParamsLogged,
    "LoggedModelArtifactLogged": _Fold._on_LoggedModelArtifactLogged,
    "LoggedModelArtifactDeleted": _Fold._on_LoggedModelArtifactDeleted,
    **{t: getattr(_Fold, f"_on_{t}") for t in sorted(AUTH_EVENTS)},
}

# The run tag runs/log-model appends to (MLflow 1.x model history).
MODEL_HISTORY_TAG = "mlflow.log-model.history"


class _Payload(dict):  # type: ignore[type-arg]
    """An event's payload as handlers read it: a missing field is a PayloadInvalid naming it,
    not a KeyError that would look like a bug."""

    def __missing__(self, key: str) -> Any:
        raise PayloadInvalid(f"missing field {key!r}")


# Envelope's fields but its payload, for `_with_checked_payload`.
_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope) if f.name != "payload")
_set = object.__setattr__


def _with_checked_payload(ev: Envelope) -> Envelope:
    """`ev` with its payload as a `_Payload`. What `dataclasses.replace` does, without its
    per-call look at the class (~3.4 against ~1.6 us; once per event, 10,000 small events in
    the audit bench's verify): the fields are copied as they are, none is validated again."""
    new = object.__new__(Envelope)
    for name in _ENVELOPE_FIELDS:
        _set(new, name, getattr(ev, name))
    _set(new, "payload", _Payload(ev.payload))
    return new


def _model_metric_links(cols: dict[str, Any], points: "_Points"
                        ) -> list[tuple[str, str, int, int, float, str | None, str | None]]:
    """The points of a metrics payload that name a logged model, with their dataset."""
    model_ids = cols.get("model_ids")
    if model_ids is None:
        return []
    keys, values, timestamps, steps = (points.column(c).to_pylist() for c in ("key", "value", "timestamp", "step"))
    names, digests = cols.get("dataset_names") or [None] * len(keys), cols.get("dataset_digests") or [None] * len(keys)
    for name, column in (("model_ids", model_ids), ("dataset_names", names), ("dataset_digests", digests)):
        _list(column, name)
    if not (len(model_ids) == len(names) == len(digests) == len(keys)):
        raise PayloadInvalid("model metric columns have different lengths")
    return [(_str(m), keys[i], timestamps[i], steps[i], values[i],
             None if names[i] is None else _str(names[i]), None if digests[i] is None else _str(digests[i]))
            for i, m in enumerate(model_ids) if m is not None]


def _require_active_experiment(exp: ExperimentRow) -> None:
    if exp.lifecycle_stage != "active":
        raise Rejected("INVALID_PARAMETER_VALUE", entities.experiment_not_active(exp.experiment_id, exp.lifecycle_stage))


def _audit_payload(ev: Envelope) -> dict[str, Any]:
    # Metric points live in the metrics table; the audit row keeps a summary of them.
    if ev.type in ("ArtifactDeleted", "LoggedModelArtifactDeleted"):
        return _deletion_summary(ev.payload)
    if ev.type == "MetricsLogged":
        return _points_summary(ev.payload)
    if ev.type == "RunBatchLogged":
        metrics = ev.payload.get("metrics") or {}
        return {"params": ev.payload.get("params"), "tags": ev.payload.get("tags"), **_points_summary(metrics)}
    return ev.payload


# A metric batch's summary names at most this many of its keys (and how many there are).
_SUMMARY_KEYS = 100


def _points_summary(cols: dict[str, Any]) -> dict[str, Any]:
    """How many points, which keys and which steps: what the trail shows of a metric batch.
    A payload the fold rejects as malformed still gets a count (or nothing): whatever a record
    holds, summarising it must never stop the fold."""
    try:
        table = _metric_points(cols)
    except Exception:  # noqa: BLE001 (the handler reports the payload's fault; this is only a summary)
        try:
            return {"points": _point_count(cols) if isinstance(cols, dict) else 0}
        except Exception:  # noqa: BLE001
            return {"points": None}
    if not table.num_rows:
        return {"points": 0, "keys": [], "key_count": 0, "step_min": None, "step_max": None}
    keys = pc.unique(table.column("key")).to_pylist()
    steps = pc.min_max(table.column("step")).as_py()
    return {"points": table.num_rows, "keys": sorted(keys)[:_SUMMARY_KEYS], "key_count": len(keys),
            "step_min": steps["min"], "step_max": steps["max"]}


def _deletion_summary(p: dict[str, Any]) -> dict[str, Any]:
    """An artifact deletion in the trail: the path, how many files and bytes went, and the first
    _SUMMARY_KEYS of them (a folder can hold many)."""
    files = p.get("files")
    if not isinstance(files, list):
        return dict(p)
    sizes = [f[1] for f in files if isinstance(f, list) and len(f) == 2 and isinstance(f[1], int)]
    return {**{k: v for k, v in p.items() if k != "files"}, "file_count": len(files), "bytes": sum(sizes),
            "files": files[:_SUMMARY_KEYS]}


def _artifact_file(p: dict[str, Any]) -> tuple[str, int, str]:
    path, size, digest = _str(p["path"]), _int(p["size"]), _str(p["sha256"])
    if not path or size < 0:
        raise PayloadInvalid("an artifact needs a path and a size >= 0")
    return path, size, digest


def _list_of_pairs(items: Any, name: str) -> list[tuple[Any, Any]]:
    for item in _list(items, name):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise PayloadInvalid(f"{name}: expected a pair, got {_shape(item)}")
    return [(a, b) for a, b in items]


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise PayloadInvalid(f"expected a string, got {type(v).__name__}")
    if len(v) > MAX_STRING_CHARS:
        raise PayloadInvalid(f"a string of {len(v)} characters is longer than {MAX_STRING_CHARS}")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PayloadInvalid(f"expected an integer, got {type(v).__name__}")
    if not INT64_MIN <= v <= INT64_MAX:
        raise PayloadInvalid(f"integer {v} is out of the 64-bit range")
    return v


def _pairs(items: Any) -> list[tuple[str, str]]:
    """[[key, value], ...]; anything else (a dict, a string, a triple) is refused rather than
    unpacked into something the writer never meant."""
    if not isinstance(items, (list, tuple)):
        raise PayloadInvalid(f"expected a list of [key, value] pairs, got {type(items).__name__}")
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise PayloadInvalid(f"expected a [key, value] pair, got {_shape(item)}")
    return [(_str(k), _str(v)) for k, v in items]


def _list(v: Any, name: str) -> list[Any]:
    if not isinstance(v, list):
        raise PayloadInvalid(f"{name}: expected a list, got {type(v).__name__}")
    return v


def _shape(v: Any) -> str:
    return f"a list of {len(v)}" if isinstance(v, (list, tuple)) else type(v).__name__


def _dataset_input(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise PayloadInvalid(f"expected a dataset object, got {type(d).__name__}")
    d = _Payload(d)
    tags = _pairs(d.get("tags") or [])
    optional = {name: (None if d.get(name) is None else _str(d[name])) for name in ("schema", "profile")}
    return {"name": _str(d["name"]), "digest": _str(d["digest"]), "source_type": _str(d["source_type"]),
            "source": _str(d["source"]), **optional, "tags": tags,
            # the input tag MLflow's dataset.context filter reads
            "context": next((v for k, v in tags if k == "mlflow.data.context"), None)}


def _metric_points(cols: dict[str, Any]) -> _Points:
    """The points of a metrics payload as a table: read from the log as Arrow already, or
    converted from its JSON columns. Raises TypeError/ValueError if malformed."""
    if not isinstance(cols, dict):
        raise PayloadInvalid(f"expected metric columns as an object, got {type(cols).__name__}")
    table = cols.get("points_table")
    if isinstance(table, pa.Table):
        return table
    try:
        return metric_table.from_columns(cols)
    except metric_table.BadPoints as e:
        raise PayloadInvalid(str(e)) from None


def _point_count(cols: Any) -> int:
    # Runs for rejected events too, outside the handlers' checks: any shape must do.
    if not isinstance(cols, dict):
        return 0
    table, keys = cols.get("points_table"), cols.get("keys")
    return table.num_rows if isinstance(table, pa.Table) else len(keys) if isinstance(keys, list) else 0