"""Rendered runs (their MLflow JSON) kept between reads, dropped when the projector changes them.

A runs/search page or a runs/get spends most of its time reading a run's rows (info, latest
metrics, params, tags, datasets) and building its JSON, while most runs of a page have not
changed since the last time they were shown. The projector is the only writer of the read
model, and every transaction it commits names the runs it touched (`BatchChanges`), so the
cache can drop exactly those right after the commit, before the commit counts as visible
(`Store.visibility`, which every read waits on for the writes already answered): a reader
that has seen a write's answer never gets the run as it was before it.

The one race is a reader that read a run before a commit and stores it after the commit
dropped it. Readers therefore take a `token` before reading; a store is refused for any run
that was dropped after that token (the last `_HISTORY` drops are remembered; an older token
stores nothing).

Beside the JSON, the cache keeps each rendered run's `inputs` and `outputs` parts (datasets,
logged models) in a map that a commit drops only for the runs whose inputs or outputs it
changed. A get-run right after a write answers from the projector's folded state, which holds
everything of a run but those two parts (query.read_service.ReadService.run_from_memory).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable, Iterable

import orjson

from runledger.projector.fold import BatchChanges

__all__ = ["RunCache"]

# Commits remembered for refusing late stores. A reader holding a token across more commits
# than this (a page read slower than a few hundred commits) simply stores nothing.
_HISTORY = 512
# A commit touching more runs than this (a replay, a bulk delete) is remembered as touching
# every run, so the history holds at most _HISTORY x _NAMED_RUNS ids.
_NAMED_RUNS = 1024
# The inputs/outputs map holds at most this many runs; runs with no inputs and no outputs (most)
# share one empty value, others count their JSON size against `max(max_bytes // 8, 1 MiB)`.
_INPUTS_MAX = 16_384
_NO_INPUTS: tuple[dict[str, Any], dict[str, Any]] = ({}, {})


class RunCache:
    """JSON bytes of runs by (latest-metrics table, run id), least recently used out first
    once `max_bytes` of JSON is held."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[str, bytes]] = OrderedDict()
        self._by_experiment: dict[str, set[tuple[str, str]]] = {}
        self._tables: set[str] = set()
        self._bytes = 0
        self._generation = 0
        # (generation, run ids dropped, experiment ids whose runs were dropped), oldest first;
        # None for "every run" (see _NAMED_RUNS)
        self._drops: deque[tuple[int, frozenset[str] | None, frozenset[str]]] = deque(maxlen=_HISTORY)
        # run id -> (inputs, outputs) as rendered; with its own bound (see _INPUTS_MAX)
        self._inputs: OrderedDict[str, tuple[tuple[dict[str, Any], dict[str, Any]], int]] = OrderedDict()
        self._inputs_bytes = 0
        self._inputs_max_bytes = max(max_bytes // 8, 1 << 20)
        self._inputs_seen: bool | None = None   # any dataset/model input or output in the read model
        # Set by the read service: renders runs the projector's fold cache holds ((latest
        # table, run ids) -> run id -> JSON), which costs a fraction of reading them from DuckDB (query.reader._rendered).
        self.folded: Callable[[str, list[str]], dict[str, bytes]] | None = None

    def token(self) -> int:
        """Take before reading the runs you will `put`."""
        with self._lock:
            return self._generation

    def get(self, table: str, run_ids: Iterable[str]) -> dict[str, bytes]:
        """The cached JSON of those of `run_ids` that are held."""
        found: dict[str, bytes] = {}
        with self._lock:
            entries = self._entries
            for run_id in run_ids:
                entry = entries.get((table, run_id))
                if entry is not None:
                    entries.move_to_end((table, run_id))
                    found[run_id] = entry[1]
        return found

    def holds(self, table: str, run_id: str) -> bool:
        """Whether the run's JSON is held (without counting as a use)."""
        with self._lock:
            return (table, run_id) in self._entries

    def put(self, table: str, rendered: Iterable[tuple[str, str, bytes]], token: int) -> None:
        """Keep (run id, experiment id, JSON) items read after `token` was taken, except runs
        that a commit since then changed."""
        with self._lock:
            if token != self._generation:
                later = [d for d in self._drops if d[0] > token]
                if len(later) != self._generation - token or any(d[1] is None for d in later):
                    return  # the drops after `token` are no longer all known, or cover every run
                runs = frozenset().union(*(d[1] for d in later if d[1] is not None))
                experiments = frozenset().union(*(d[2] for d in later))
                rendered = [r for r in rendered if r[0] not in runs and r[1] not in experiments]
            self._tables.add(table)
            for run_id, experiment_id, body in rendered:
                key = (table, run_id)
                self._pop(key)
                self._entries[key] = (experiment_id, body)
                self._by_experiment.setdefault(experiment_id, set()).add(key)
                self._bytes += len(body)
            while self._bytes > self.max_bytes and self._entries:
                self._pop(next(iter(self._entries)))

    def no_inputs_anywhere(self) -> bool:
        """True once a probe found no run with inputs/outputs and no commit brought one since."""
        return self._inputs_seen is False

    def may_have_inputs(self, probe: Callable[[], bool]) -> bool:
        """Whether any run may have dataset or model inputs/outputs: `probe()` (a query) until
        it or a commit says so, then True for good. A "no" is kept only if no commit landed
        while probing (the commit could have brought the first one)."""
        with self._lock:
            if self._inputs_seen is not None:
                return self._inputs_seen
            generation = self._generation
        found = probe()
        with self._lock:
            if found:
                self._inputs_seen = True
            elif self._generation == generation and self._inputs_seen is None:
                self._inputs_seen = False
            return found or bool(self._inputs_seen)

    def inputs(self, run_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The run's `inputs` and `outputs` parts as last rendered, unless a commit since then
        changed them (or they were never kept)."""
        with self._lock:
            entry = self._inputs.get(run_id)
            if entry is None:
                return None
            self._inputs.move_to_end(run_id)
            return entry[0]

    def put_inputs(self, rendered: Iterable[tuple[str, dict[str, Any], dict[str, Any]]], token: int) -> None:
        """Keep (run id, inputs, outputs) items read after `token` was taken, except runs that
        a commit since then changed (any change: `drop`'s history does not say which part)."""
        with self._lock:
            items = list(rendered)
            if token != self._generation:
                later = [d for d in self._drops if d[0] > token]
                if len(later) != self._generation - token or any(d[1] is None for d in later):
                    return
                runs = frozenset().union(*(d[1] for d in later if d[1] is not None))
                experiments = frozenset().union(*(d[2] for d in later))
                if experiments:
                    return  # the experiment's runs are not known here; keep nothing
                items = [i for i in items if i[0] not in runs]
            for run_id, run_inputs, run_outputs in items:
                self._pop_inputs(run_id)
                if run_inputs or run_outputs:
                    size = len(orjson.dumps(run_inputs)) + len(orjson.dumps(run_outputs))
                    self._inputs[run_id] = ((run_inputs, run_outputs), size)
                    self._inputs_bytes += size
                else:
                    self._inputs[run_id] = (_NO_INPUTS, 0)
            while self._inputs and (len(self._inputs) > _INPUTS_MAX or self._inputs_bytes > self._inputs_max_bytes):
                self._pop_inputs(next(iter(self._inputs)))

    def _pop_inputs(self, run_id: str) -> None:
        entry = self._inputs.pop(run_id, None)
        if entry is not None:
            self._inputs_bytes -= entry[1]

    def drop(self, run_ids: Iterable[str], experiment_ids: Iterable[str] = (),
             inputs_of: Iterable[str] | None = None) -> None:
        """Forget these runs, and every run of these experiments; and the inputs/outputs parts
        of `inputs_of` (by default of `run_ids`)."""
        runs, experiments = frozenset(run_ids), frozenset(experiment_ids)
        with self._lock:
            for run_id in (runs if inputs_of is None else inputs_of):
                self._pop_inputs(run_id)
            self._generation += 1
            self._drops.append((self._generation, runs if len(runs) <= _NAMED_RUNS else None, experiments))
            for run_id in runs:
                for table in self._tables:
                    self._pop((table, run_id))
            for experiment_id in experiments:
                for key in list(self._by_experiment.get(experiment_id, ())):
                    self._pop(key)

    def drop_changed(self, changes: BatchChanges) -> None:
        """`drop` what a committed batch changed in any run's JSON: the run row, its params,
        tags, latest metrics and dataset inputs; an experiment row (its lifecycle stage is
        part of its runs' stage) drops all of that experiment's runs."""
        runs = set(changes.runs)
        for keyed in (changes.params, changes.tags, *changes.latest.values()):
            runs.update(k[0] for k in keyed)
        inputs = {k[0] for k in changes.datasets}
        for keyed in (changes.model_inputs, changes.model_outputs):
            inputs.update(k[0] for k in keyed)
        inputs.update(r.run_id for r in changes.rewinds)
        if inputs and not self._inputs_seen:
            with self._lock:
                self._inputs_seen = True   # before the commit is visible: see may_have_inputs
        self.drop(runs | inputs, changes.experiments, inputs_of=inputs)

    def _pop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[1])
            keys = self._by_experiment.get(entry[0])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_experiment[entry[0]]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
