"""The fold state of recently touched entities, kept in memory between batches.

Without it every batch costs several DuckDB queries before the fold can start (the runs it
names, their params/tags/latest metrics, which of its event ids were seen before). With it a
batch about hot runs needs no reads at all, which is what lets a synchronous write be answered
as soon as its batch is folded (see projector.consumer).

The cache is *authoritative for what it holds*: every change the fold makes goes through
`absorb`, so an entry is always the latest folded state, which may be ahead of DuckDB (the
batch may still be committing). Anything not cached is read from DuckDB after pending commits
have finished, so a miss never sees stale rows. Must be used from one thread (the event loop).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from rbloom import Bloom

from runledger.ingest.contract.events import EXPERIMENT_EVENTS, LATE_EVENT, MODEL_EVENTS, Verdict
from runledger.projector.fold import LATEST_RULES, FoldResult, FoldState, LogRecord
from runledger.projector.rows import ExperimentRow, LatestPoint, RunRow
from runledger.projector.step_cover import Cover


@dataclass(frozen=True)
class StateRequest:
    """What a batch needs that the cache does not hold: the store loads exactly this."""

    run_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    experiments: bool = False                       # the whole experiments table
    experiment_tag_ids: list[str] = field(default_factory=list)
    model_ids: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.run_ids or self.event_ids or self.experiments or self.experiment_tag_ids
                    or self.model_ids)

    @classmethod
    def for_records(cls, records: list[LogRecord]) -> "StateRequest":
        """Everything a batch may need, as if nothing were cached."""
        events = [r.event for r in records if r.event is not None]
        return cls(run_ids=batch_run_ids(records), event_ids=[e.event_id for e in events],
                   experiments=any(e.type in EXPERIMENT_EVENTS for e in events),
                   experiment_tag_ids=_experiment_ids(records), model_ids=_model_ids(records))


def batch_run_ids(records: list[LogRecord]) -> list[str]:
    return sorted({r.event.run_id for r in records
                   if r.event is not None and r.event.run_id and r.event.type not in EXPERIMENT_EVENTS})


def _experiment_ids(records: list[LogRecord]) -> list[str]:
    return sorted({r.event.experiment_id for r in records if r.event is not None
                   and r.event.type in EXPERIMENT_EVENTS and r.event.experiment_id})


def _model_ids(records: list[LogRecord]) -> list[str]:
    return sorted({m for r in records if r.event is not None and r.event.type in MODEL_EVENTS
                   and isinstance(m := r.event.payload.get("model_id"), str)})


@dataclass
class RunEntry:
    """Everything the fold knows about one run; `row` None means the run does not exist."""

    row: RunRow | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    latest: dict[str, dict[str, LatestPoint]] = field(default_factory=lambda: {r: {} for r in LATEST_RULES})
    step_cover: dict[str, Cover] = field(default_factory=dict)   # keys logged since it was cached


class IdFilter:
    """A set of ids that may answer "maybe" for an id it never saw (about 1 in 10,000), never
    "no" for one it did: a Bloom filter, chained as it fills so the error rate stays put."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._filters: list[tuple[Bloom, int]] = []
        self._count = 0
        self._capacity = capacity
        self._grow()

    def _grow(self) -> None:
        capacity = self._capacity * (2 ** len(self._filters))
        self._filters.append((Bloom(capacity, 1e-4), capacity))
        self._count = 0

    def add(self, item: str) -> None:
        if self._count >= self._filters[-1][1]:
            self._grow()
        self._filters[-1][0].add(item)
        self._count += 1

    def __contains__(self, item: str) -> bool:
        return any(item in f for f, _ in self._filters)


class SeenEventIds:
    """Which event ids were folded before, answered without a query for the common case:
    every id logged so far in an IdFilter, plus the verdicts of the most recent ids. A fresh
    id (nearly every id) is settled by the filter alone; a possible repeat goes to the store."""

    def __init__(self, recent: int = 100_000) -> None:
        self._ids = IdFilter()
        self._recent: OrderedDict[str, Verdict] = OrderedDict()
        self._recent_max = recent

    def add(self, event_id: str, verdict: Verdict | None = None) -> None:
        self._ids.add(event_id)
        if verdict is not None:
            self._recent[event_id] = verdict
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)

    def recent(self, event_id: str) -> Verdict | None:
        return self._recent.get(event_id)

    def maybe_seen(self, event_id: str) -> bool:
        return event_id in self._ids


class FoldCache:
    def __init__(self, max_runs: int = 5000) -> None:
        self.max_runs = max_runs
        self.runs: OrderedDict[str, RunEntry] = OrderedDict()
        self.experiments: dict[str, ExperimentRow] | None = None   # None: not loaded yet
        self.experiment_ids_by_name: dict[str, str] = {}
        self.next_experiment_id = 1
        self.experiment_tags: dict[str, dict[str, str]] = {}       # loaded experiments only
        self.seen = SeenEventIds()
        # Every run id ever created: a run id that is not in here certainly has no run, so a
        # create-run (a fresh id) or a write to a bad id needs no query.
        self.created_runs = IdFilter()

    # ----- before a batch
    def reset(self) -> None:
        """Forget everything (after the projector discarded folded batches it could not commit)."""
        self.__init__(self.max_runs)  # type: ignore[misc]

    def plan(self, records: list[LogRecord]) -> StateRequest:
        """What must be read from the store before `records` can be folded. Runs that
        certainly do not exist are cached as absent on the way."""
        events = [r.event for r in records if r.event is not None]
        has_exp_events = any(e.type in EXPERIMENT_EVENTS for e in events)
        missing = []
        for run_id in batch_run_ids(records):
            if run_id in self.runs:
                continue
            if run_id in self.created_runs:
                missing.append(run_id)
            else:
                self.runs[run_id] = RunEntry(None)
        return StateRequest(
            run_ids=missing,
            event_ids=[e.event_id for e in events
                       if self.seen.recent(e.event_id) is None and self.seen.maybe_seen(e.event_id)],
            experiments=has_exp_events and self.experiments is None,
            experiment_tag_ids=self._experiment_tags_to_load(records),
            model_ids=_model_ids(records),
        )

    def _experiment_tags_to_load(self, records: list[LogRecord]) -> list[str]:
        wanted = []
        for exp_id in _experiment_ids(records):
            if exp_id in self.experiment_tags:
                continue
            if self.experiments is not None and exp_id not in self.experiments:
                # The cache holds every experiment, so one it does not know does not exist (its
                # creation may be in this very batch): nothing of it is stored, no tags either.
                # Asking the store would first wait for every queued commit (a replay stalled a
                # whole commit on the log's first experiment).
                self.experiment_tags[exp_id] = {}
                continue
            wanted.append(exp_id)
        return wanted

    def add_loaded(self, request: StateRequest, loaded: FoldState) -> None:
        """Remember what the store loaded for `request` (absent runs are remembered as absent)."""
        for run_id in request.run_ids:
            entry = RunEntry(loaded.runs.get(run_id))
            self.runs[run_id] = entry
        for (run_id, k), v in loaded.params.items():
            self.runs[run_id].params[k] = v
        for (run_id, k), v in loaded.tags.items():
            self.runs[run_id].tags[k] = v
        for rule, points in loaded.latest.items():
            for (run_id, k), p in points.items():
                self.runs[run_id].latest[rule][k] = p
        if request.experiments:
            self.experiments = dict(loaded.experiments)
            self.experiment_ids_by_name = dict(loaded.experiment_ids_by_name)
            self.next_experiment_id = loaded.next_experiment_id
        for exp_id in request.experiment_tag_ids:
            self.experiment_tags.setdefault(exp_id, {})
        for (exp_id, k), v in loaded.experiment_tags.items():
            self.experiment_tags[exp_id][k] = v

    def state_for(self, records: list[LogRecord], loaded: FoldState) -> FoldState:
        """The fold state for `records`: cached entries plus what was just loaded for them.
        Call `add_loaded` first."""
        state = FoldState(models=loaded.models, model_params=loaded.model_params, model_tags=loaded.model_tags)
        for run_id in batch_run_ids(records):
            entry = self.runs[run_id]
            self.runs.move_to_end(run_id)
            if entry.row is not None:
                state.runs[run_id] = entry.row
            for k, v in entry.params.items():
                state.params[(run_id, k)] = v
            for k, v in entry.tags.items():
                state.tags[(run_id, k)] = v
            for rule, points in entry.latest.items():
                target = state.latest[rule]
                for k, p in points.items():
                    target[(run_id, k)] = p
            for k, cover in entry.step_cover.items():
                state.step_cover[(run_id, k)] = cover
        if self.experiments is not None:
            state.experiments = self.experiments
            state.experiment_ids_by_name = self.experiment_ids_by_name
            state.next_experiment_id = self.next_experiment_id
        for exp_id in _experiment_ids(records):
            for k, v in self.experiment_tags[exp_id].items():
                state.experiment_tags[(exp_id, k)] = v
        state.seen = dict(loaded.seen)
        for r in records:
            if r.event is not None and (v := self.seen.recent(r.event.event_id)) is not None:
                state.seen[r.event.event_id] = v
        return state

    # ----- after a batch
    def absorb(self, result: FoldResult) -> None:
        """Fold the batch's final values into the cache (it is now ahead of DuckDB)."""
        ch = result.changes
        if self.experiments is not None:
            for exp_id, exp in ch.experiments.items():
                old = self.experiments.get(exp_id)
                if old is not None and self.experiment_ids_by_name.get(old.name) == exp_id:
                    del self.experiment_ids_by_name[old.name]
                self.experiments[exp_id] = exp
                self.experiment_ids_by_name[exp.name] = exp_id
                if exp_id.isdigit():
                    self.next_experiment_id = max(self.next_experiment_id, int(exp_id) + 1)
        for (exp_id, k), v in ch.experiment_tags.items():
            tags = self.experiment_tags.get(exp_id)
            if tags is None:
                continue  # not loaded: DuckDB will have it once committed
            if v is None:
                tags.pop(k, None)
            else:
                tags[k] = v
        for run_id, row in ch.runs.items():
            self._entry(run_id).row = row
            self.created_runs.add(run_id)
        for (run_id, k), v in ch.params.items():
            self._entry(run_id).params[k] = v
        for (run_id, k), v in ch.tags.items():
            tags = self._entry(run_id).tags
            if v is None:
                tags.pop(k, None)
            else:
                tags[k] = v
        for rule, points in ch.latest.items():
            for (run_id, k), p in points.items():
                self._entry(run_id).latest[rule][k] = p
        for (run_id, k), cover in ch.step_cover.items():
            self._entry(run_id).step_cover[k] = cover
        for event_id, verdict in result.verdicts.items():
            if verdict.error_code != LATE_EVENT:  # a late event leaves its id free (fold.py)
                self.seen.add(event_id, verdict)
        for rewind in ch.rewinds:
            # Its latest metrics are recomputed by the store: the next batch reads them back.
            self.runs.pop(rewind.run_id, None)
        while len(self.runs) > self.max_runs:
            self.runs.popitem(last=False)

    def _entry(self, run_id: str) -> RunEntry:
        # Every run a batch touches was put in the cache by `add_loaded`/`plan` before the fold.
        return self.runs[run_id]
