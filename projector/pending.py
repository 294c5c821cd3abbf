"""Which runs the batches folded but not yet committed changed, and their folded state, for
readers that answer from memory instead of waiting for the DuckDB commit.

The projector hands out a batch's verdicts as soon as it is folded and commits it right after
(projector.consumer); a reader waits for those commits (`store.Visibility`). A get-run issued
right after a write to the same run would therefore always wait for the commit. The fold
cache already holds that run's folded state, and it is exactly the state the commit will
write (it is the fold's own output), so a reader may take it from there instead, under one
condition: it must see the cache at a moment when the cache equals "every batch whose verdicts
were handed out", never half of a batch. `lock` gives that: the projector absorbs a batch into
the fold cache, records what it changed here and releases its verdicts while holding it (and
fills in runs loaded from DuckDB while holding it), and a reader copies a run's state while
holding it. Runs that no uncommitted batch changed are in the fold cache exactly as in DuckDB,
so pages render them from there too (`folded_runs`).

Bounded: an entry lives only while its batch is uncommitted (pruned on every fold and every
commit), and at most `_MAX_TRACKED` runs are tracked; past that, readers simply wait for the
commit as before (`overflowed`).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from runledger.projector.fold import LATEST_RULES, BatchChanges
from runledger.projector.fold_cache import FoldCache
from runledger.projector.rows import LatestPoint, RunRow

__all__ = ["PendingRuns", "HotRun", "BatchKeys", "Uncommitted", "COMMITTED"]

# `hot_run`'s answer for a run with nothing waiting for a commit: DuckDB has all of it.
COMMITTED = "committed"

# Runs tracked across all uncommitted batches at most (a replay or a bulk load touches many
# runs per batch; readers then wait for the commit instead).
_MAX_TRACKED = 100_000


@dataclass(frozen=True, slots=True)
class HotRun:
    """A run's folded state at one instant (copies: safe to use on any thread)."""

    row: RunRow
    experiment_stage: str
    params: dict[str, str]
    tags: dict[str, str]
    latest: dict[str, LatestPoint]      # under the requested rule


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """What an uncommitted batch changed, as far as a search's match and order can tell: the
    metric, param and tag keys, whether any run row (or experiment, or a rewind) changed, and
    whether any dataset input did."""

    metrics: frozenset[str] = frozenset()
    params: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    rows: bool = False
    datasets: bool = False


@dataclass(frozen=True, slots=True)
class Uncommitted:
    """Everything the batches whose verdicts are out but which are not committed yet changed."""

    runs: frozenset[str]
    keys: BatchKeys


class PendingRuns:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._runs: dict[str, int] = {}        # run id -> seq of the last uncommitted batch changing it
        self._inputs: dict[str, int] = {}      # run id -> seq, for its dataset and model inputs/outputs
        self._experiments_seq = 0              # seq of the last batch changing an experiment row
        self._batches: deque[tuple[int, list[str], list[str], BatchKeys]] = deque()
        self._committed = 0
        self.overflowed_seq = 0                # seq of the last batch not tracked (too many runs)

    # ----- the projector's side (event loop thread, `lock` held)
    def note(self, seq: int, changes: BatchChanges) -> None:
        """Record what batch `seq` changed in any run's JSON (call with `lock` held, before the
        batch's verdicts are released)."""
        runs = set(changes.runs)
        for keyed in (changes.params, changes.tags, *changes.latest.values()):
            runs.update(k[0] for k in keyed)
        inputs = {k[0] for k in changes.datasets}
        inputs.update(k[0] for k in changes.model_inputs)
        inputs.update(k[0] for k in changes.model_outputs)
        inputs.update(r.run_id for r in changes.rewinds)   # a rewind recomputes latest metrics in the store
        runs |= inputs
        if changes.experiments:
            self._experiments_seq = seq
        if len(self._runs) + len(runs) > _MAX_TRACKED:
            self.overflowed_seq = seq
            return
        for run_id in runs:
            self._runs[run_id] = seq
        for run_id in inputs:
            self._inputs[run_id] = seq
        keys = BatchKeys(
            metrics=frozenset(k[1] for points in changes.latest.values() for k in points),
            params=frozenset(k[1] for k in changes.params), tags=frozenset(k[1] for k in changes.tags),
            rows=bool(changes.runs or changes.rewinds or changes.experiments), datasets=bool(changes.datasets))
        self._batches.append((seq, list(runs), list(inputs), keys))

    def committed(self, seq: int) -> None:
        """Batches up to `seq` are committed: forget them."""
        with self.lock:
            self._committed = max(self._committed, seq)
            while self._batches and self._batches[0][0] <= self._committed:
                done, runs, inputs, _ = self._batches.popleft()
                for run_id in runs:
                    if self._runs.get(run_id) == done:
                        del self._runs[run_id]
                for run_id in inputs:
                    if self._inputs.get(run_id) == done:
                        del self._inputs[run_id]

    # ----- the reader's side (any thread)
    def hot_run(self, run_id: str, cache: FoldCache, rule: str, released: int, committed: int
                ) -> HotRun | str | None:
        """The run's folded state if a batch whose verdicts are out but which is not committed
        yet changed it and memory can answer for all of it; COMMITTED if no such batch changed
        it; None otherwise (read DuckDB after waiting for the commits). Call with `lock` held;
        `released` and `committed` read under it."""
        if rule not in LATEST_RULES:
            return None
        seq = self._runs.get(run_id, 0)
        if seq <= committed:
            return None if self.overflowed_seq > committed else COMMITTED
        if (self.overflowed_seq > committed or self._experiments_seq > committed
                or self._inputs.get(run_id, 0) > committed or seq > released):
            return None                 # not all of it is known here: wait for the commit instead
        entry = cache.runs.get(run_id)
        if entry is None or entry.row is None or cache.experiments is None:
            return None
        experiment = cache.experiments.get(entry.row.experiment_id)
        if experiment is None:
            return None
        return HotRun(entry.row, experiment.lifecycle_stage, dict(entry.params), dict(entry.tags),
                      dict(entry.latest[rule]))

    def folded_runs(self, run_ids: list[str], cache: FoldCache, rule: str, committed: int) -> dict[str, HotRun]:
        """The folded state of those of `run_ids` the fold cache holds whose dataset and model
        inputs/outputs no uncommitted batch changed (those parts are not in the fold cache).
        Each is the run as DuckDB has it, or newer (a batch whose verdicts are out). Call with
        `lock` held, `committed` read under it."""
        if rule not in LATEST_RULES or self.overflowed_seq > committed or cache.experiments is None:
            return {}
        out: dict[str, HotRun] = {}
        for run_id in run_ids:
            if self._inputs.get(run_id, 0) > committed:
                continue
            entry = cache.runs.get(run_id)
            if entry is None or entry.row is None:
                continue
            experiment = cache.experiments.get(entry.row.experiment_id)
            if experiment is None:
                continue
            out[run_id] = HotRun(entry.row, experiment.lifecycle_stage, dict(entry.params), dict(entry.tags),
                                 dict(entry.latest[rule]))
        return out

    def uncommitted(self, released: int, committed: int) -> Uncommitted | None:
        """The union of what the uncommitted batches changed; None if it is not all known here.
        Call with `lock` held."""
        if self.overflowed_seq > committed:
            return None
        batches = [b for b in self._batches if b[0] > committed]
        if not batches or batches[-1][0] != released:
            return None
        runs: set[str] = set()
        for b in batches:
            runs.update(b[1])
        keys = [b[3] for b in batches]
        return Uncommitted(frozenset(runs), BatchKeys(
            metrics=frozenset().union(*(k.metrics for k in keys)), params=frozenset().union(*(k.params for k in keys)),
            tags=frozenset().union(*(k.tags for k in keys)), rows=any(k.rows for k in keys),
            datasets=any(k.datasets for k in keys)))

    def __len__(self) -> int:
        return len(self._runs)
