"""Hyper-parameter searches read from the runs they logged (docs/pai.md), in Runledger's own shape;
the PAI dialect and the native API present it.

A study is either a parent run, whose trials are its child runs (the `mlflow.parentRunId` tag, as
Optuna's MLflow callback and Ray Tune log nested trials), or an MLflow experiment, whose trials are
its runs that are nobody's parent (Optuna's callback without nesting: one run per trial).

The objective is the metric named by the tag `runledger.hpo.objective` (on the parent run, or on
the experiment), else the one metric every trial logged (Optuna's callback logs one, "value" by
default). The direction is the tag `runledger.hpo.direction` (`minimize` / `maximize`), else the
`direction` tag Optuna's callback puts on each trial, else minimize. The search space comes from
Optuna's `<param>_distribution` trial tags when present, else from the values the trials logged.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import duckdb

from runledger.query import run_summaries
from runledger.query.run_summaries import RunMeta

OBJECTIVE_TAG = "runledger.hpo.objective"
DIRECTION_TAG = "runledger.hpo.direction"
PARENT_TAG = "mlflow.parentRunId"
OPTUNA_DIRECTION_TAG = "direction"
OPTUNA_STATE_TAG = "state"
DISTRIBUTION_SUFFIX = "_distribution"


@dataclass
class Trial:
    meta: RunMeta
    params: dict[str, str]
    tags: dict[str, str]
    objective: tuple[float, int, int] | None   # latest (value, timestamp, step) of the objective metric

    @property
    def state(self) -> str:
        """The trial's state: Optuna's own (PRUNED, FAIL...) when it logged one, else the run's status."""
        optuna = self.tags.get(OPTUNA_STATE_TAG)
        if optuna == "PRUNED":
            return "PRUNED"
        if optuna == "FAIL":
            return "FAILED"
        return self.meta.status


@dataclass
class Study:
    study_id: str
    kind: str                 # "parent_run" | "experiment"
    name: str
    experiment_id: str
    creator: str
    status: str               # the parent run's status; for an experiment, RUNNING while a trial runs
    created: int | None
    modified: int | None
    objective: str | None
    direction: str            # "minimize" | "maximize"
    trials: list[Trial]
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def ranked(self) -> list[Trial]:
        """Trials with an objective value, best first (NaN never ranks)."""
        scored = [t for t in self.trials if t.objective is not None and t.objective[0] == t.objective[0]]
        return sorted(scored, key=lambda t: (t.objective[0] if self.direction == "minimize" else -t.objective[0],  # type: ignore[index]
                                             t.meta.start_time or 0, t.meta.run_id))

    def best(self) -> Trial | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None


def load(cur: duckdb.DuckDBPyConnection, study_id: str, latest_table: str) -> Study | None:
    """The study named by a run id (a parent run) or an experiment id; None if neither exists."""
    parent = run_summaries.run_meta(cur, study_id)
    if parent is not None and not parent.deleted:
        metas = run_summaries.child_runs(cur, parent.run_id)
        own_tags = dict(run_summaries.tags(cur, parent.run_id))
        return _study(cur, study_id, "parent_run", parent.run_name or parent.run_id, parent.experiment_id,
                      parent.user_id or "", parent.status, parent.start_time, parent.end_time, own_tags, metas,
                      latest_table)
    found = run_summaries.experiments(cur, experiment_id=study_id)
    if not found:
        return None
    exp = found[0]
    parents = run_summaries.parent_run_ids(cur, exp.experiment_id)
    metas = [m for m in run_summaries.runs_of_experiment(cur, exp.experiment_id) if m.run_id not in parents]
    status = ("RUNNING" if any(m.status == "RUNNING" for m in metas) else "FINISHED" if metas else "CREATED")
    return _study(cur, study_id, "experiment", exp.name, exp.experiment_id, metas[0].user_id or "" if metas else "",
                  status, exp.creation_time, exp.last_update_time, run_summaries.experiment_tags(cur, exp.experiment_id),
                  metas, latest_table)


def _study(cur: duckdb.DuckDBPyConnection, study_id: str, kind: str, name: str, experiment_id: str, creator: str,
           status: str, created: int | None, modified: int | None, own_tags: dict[str, str], metas: list[RunMeta],
           latest_table: str) -> Study:
    ids = [m.run_id for m in metas]
    params = run_summaries.params_of_runs(cur, ids)
    tags = run_summaries.tags_of_runs(cur, ids)
    objective = own_tags.get(OBJECTIVE_TAG) or _common_metric(cur, ids, latest_table)
    direction = _direction(own_tags, tags)
    values = run_summaries.last_points(cur, ids, objective, latest_table) if objective else {}
    trials = [Trial(m, params.get(m.run_id, {}), tags.get(m.run_id, {}), values.get(m.run_id)) for m in metas]
    ends = [t.meta.end_time or t.meta.start_time or 0 for t in trials]
    modified = max([modified or 0, *ends]) or modified
    return Study(study_id, kind, name, experiment_id, creator, status, created, modified, objective, direction,
                 trials, search_space(trials))


def _common_metric(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest_table: str) -> str | None:
    keys = run_summaries.metric_keys_of_runs(cur, run_ids, latest_table)
    logged = [set(k) for k in keys.values() if k]
    if not logged:
        return None
    common = set.intersection(*logged)
    return next(iter(common)) if len(common) == 1 else None


def _direction(own_tags: dict[str, str], trial_tags: dict[str, dict[str, str]]) -> str:
    explicit = own_tags.get(DIRECTION_TAG, "").strip().lower()
    if explicit in ("minimize", "maximize"):
        return explicit
    for tags in trial_tags.values():
        optuna = tags.get(OPTUNA_DIRECTION_TAG, "").strip().upper()
        if optuna in ("MINIMIZE", "MAXIMIZE"):
            return optuna.lower()
    return "minimize"


_DISTRIBUTION = re.compile(r"^\s*(\w+)Distribution\((.*)\)\s*$", re.S)


def _optuna_distribution(text: str) -> dict[str, Any] | None:
    """An Optuna distribution's repr (`FloatDistribution(high=0.1, log=True, low=1e-05, step=None)`)
    as an NNI-style search-space entry (PAI's HPO runs NNI), or None when it is not one."""
    m = _DISTRIBUTION.match(text)
    if m is None:
        return None
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call):
            return None
        kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except (SyntaxError, ValueError):
        return None
    kind = m.group(1)
    if kind == "Categorical" and "choices" in kw:
        return {"_type": "choice", "_value": list(kw["choices"])}
    if kind in ("Float", "Int", "Uniform", "LogUniform", "IntUniform", "IntLogUniform", "DiscreteUniform") \
            and "low" in kw and "high" in kw:
        log = kw.get("log") or kind in ("LogUniform", "IntLogUniform")
        step = kw.get("step") or kw.get("q")
        if kind.startswith("Int"):
            return {"_type": "randint" if not log else "loguniform", "_value": [kw["low"], kw["high"]],
                    **({"_step": step} if step else {})}
        if step:
            return {"_type": "quniform", "_value": [kw["low"], kw["high"], step]}
        return {"_type": "loguniform" if log else "uniform", "_value": [kw["low"], kw["high"]]}
    return None


def search_space(trials: list[Trial]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    names = sorted({k for t in trials for k in t.params})
    for name in names:
        declared = next((t.tags[name + DISTRIBUTION_SUFFIX] for t in trials if name + DISTRIBUTION_SUFFIX in t.tags), None)
        entry = _optuna_distribution(declared) if declared else None
        if entry is not None:
            out[name] = {**entry, "source": "optuna"}
            continue
        values = [t.params[name] for t in trials if name in t.params]
        numbers = [_float(v) for v in values]
        if values and all(n is not None for n in numbers):
            out[name] = {"_type": "uniform", "_value": [min(numbers), max(numbers)], "source": "observed"}  # type: ignore[type-var]
        else:
            out[name] = {"_type": "choice", "_value": sorted(set(values)), "source": "observed"}
    return out


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def series(cur: duckdb.DuckDBPyConnection, run_id: str, key: str) -> list[tuple[float, int, int]]:
    """Every point of one metric of a run, in log order: (value, timestamp, step)."""
    return [(v, t, s) for v, t, s in cur.execute(
        "SELECT value, timestamp, step FROM metrics WHERE run_id = ? AND key = ? ORDER BY timestamp, step, value",
        [run_id, key]).fetchall()]
