"""Rewind as a fold rule (docs/design.md, invariant 10), on real DuckDB files without a broker: the
points hidden, the latest metrics recomputed, re-logging allowed, and the same tables however
the log is cut into batches or commits are merged (invariant 1)."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from runledger.ingest.contract.codec import encode
from runledger.ingest.contract.events import Envelope, metrics_columns
from tests.log_tools import dump_tables, fold_into, fold_into_cached, interleaved_batches


def _events() -> list[Envelope]:
    t = iter(range(1_700_000_000_000, 1_700_000_100_000))

    def ev(type_: str, payload: dict, run: str | None = "r1", exp: str | None = "0") -> Envelope:
        n = next(t)
        return Envelope(f"e{n}", type_, exp, run, n, "ada", payload, actor_verified=False, request_id=f"q{n}",
                        api="mlflow")

    points = lambda rng, key="loss", ts=0: metrics_columns(  # noqa: E731
        [(key, float(s), 1000 + ts + s, s) for s in rng])
    return [
        ev("ExperimentCreated", {"name": "Default", "artifact_location": None, "artifact_root": "file:///a",
                                 "tags": []}, run=None),
        ev("RunCreated", {"run_name": "r", "start_time": 1, "user_id": "ada", "artifact_uri": "file:///a/r",
                          "tags": []}),
        ev("RunCreated", {"run_name": "o", "start_time": 1, "user_id": "ada", "artifact_uri": "file:///a/o",
                          "tags": []}, run="r2"),
        ev("MetricsLogged", points(range(0, 100))),
        ev("MetricsLogged", points(range(0, 100), key="acc")),
        ev("MetricsLogged", points(range(0, 100)), run="r2"),
        ev("MetricsLogged", points(range(100, 120), ts=5000)),           # latest loss: step 119
        ev("RunRewound", {"step": 49}),
        ev("MetricsLogged", points(range(50, 55), ts=-900)),             # re-logged, older timestamps
        ev("MetricsLogged", points(range(3, 4))),                        # a retry of a kept point: stored once
        ev("RunRewound", {"step": 52}),                                  # hides nothing new but 53, 54
        ev("RunRewound", {"step": -1}, run="missing"),                   # rejected: no such run
        ev("MetricsLogged", points(range(53, 54), ts=-900)),             # a hidden point, logged again
    ]


def _log(events: list[Envelope]) -> dict[int, list[tuple[int, bytes]]]:
    return {0: [(i, encode(e)) for i, e in enumerate(events)]}


def test_rewind_hides_points_and_recomputes_latest(tmp_path: Path) -> None:
    log = _log(_events())
    path = str(tmp_path / "one.duckdb")
    fold_into(path, "t", [[(0, o, v) for o, v in log[0]]])
    with duckdb.connect(path, read_only=True) as con:
        steps = [r[0] for r in con.execute(
            "SELECT step FROM metrics WHERE run_id = 'r1' AND key = 'loss' ORDER BY step").fetchall()]
        assert steps == list(range(0, 54))
        assert con.execute("SELECT count(*) FROM metrics WHERE run_id = 'r1' AND key = 'acc'").fetchone() == (50,)
        assert con.execute("SELECT count(*) FROM metrics WHERE run_id = 'r2'").fetchone() == (100,)  # untouched
        latest = dict((r[0], r[1:]) for r in con.execute(
            "SELECT key, ts_value, ts_timestamp, ts_step, step_value, step_timestamp, step_step FROM latest_points "
            "WHERE run_id = 'r1'").fetchall())
        # loss: by timestamp the kept step 49 (t=1049) beats the re-logged 50..53 (t=150..153);
        # by step, 53 is the greatest step left.
        assert latest["loss"] == (49.0, 1049, 49, 53.0, 153, 53)
        assert latest["acc"] == (49.0, 1049, 49, 49.0, 1049, 49)
        moved = con.execute("SELECT rewind_event_id, count(*) FROM rewound_metrics GROUP BY ALL ORDER BY 1").fetchall()
        assert [n for _, n in moved] == [120 - 50 + 50, 2]
        assert con.execute("SELECT error_code FROM event_log WHERE type = 'RunRewound' AND run_id = 'missing'"
                           ).fetchone() == ("RESOURCE_DOES_NOT_EXIST",)


@pytest.mark.parametrize("seed", range(6))
def test_rewind_gives_the_same_tables_however_the_log_is_batched(tmp_path: Path, seed: int) -> None:
    log = _log(_events())
    whole = str(tmp_path / "whole.duckdb")
    fold_into(whole, "t", [[(0, o, v) for o, v in log[0]]])
    rng = random.Random(seed)
    cut = str(tmp_path / "cut.duckdb")
    fold_into(cut, "t", interleaved_batches(log, rng, max_batch=4))
    cached = str(tmp_path / "cached.duckdb")
    fold_into_cached(cached, "t", interleaved_batches(log, rng, max_batch=5), rng, max_runs=1)
    expected = dump_tables(whole)
    for path in (cut, cached):
        got = dump_tables(path)
        got["consumer_offsets"] = expected["consumer_offsets"]  # offsets follow the batches
        assert got == expected
