"""docs/design.md, invariant 14 in the fold: an event whose record the broker appended after the
event's deadline is refused (the writer has answered it with an error by then), its id stays
free for the client's retry, and the verdict depends only on the log (replays agree).

Pure fold logic plus the real DuckDB store; the end-to-end cases with a real broker and server
are in tests/test_kafka_restart.py.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from runledger.ingest.contract.codec import decode, encode
from runledger.ingest.contract.events import LATE_EVENT, Envelope
from runledger.projector.fold import FoldState, LogRecord, fold_batch
from tests.log_tools import dump_tables, fold_into, fold_into_cached, interleaved_batches, without_offsets
from tests.test_fold import create_run, log_metrics as metrics, log_params

DEADLINE = 50_000


def _late(event: Envelope) -> Envelope:
    return replace(event, deadline=DEADLINE)


def test_a_record_appended_after_its_deadline_is_refused_with_a_reason() -> None:
    run = create_run(event_id="c")
    late = _late(log_params(("lr", "0.1"), event_id="p"))
    result = fold_batch(FoldState(), [LogRecord(0, 0, run, append_time=1_000),
                                      LogRecord(0, 1, late, append_time=DEADLINE + 1)])
    verdict = result.verdicts["p"]
    assert verdict.error_code == LATE_EVENT
    assert "after its deadline" in verdict.message
    assert result.changes.params == {}
    [entry] = [e for e in result.changes.log if e.type == "ParamsLogged"]
    assert entry.error_code == LATE_EVENT and entry.event_id.endswith(":p") and entry.event_id != "p"


def test_on_time_or_unstamped_or_deadline_free_records_are_applied() -> None:
    cases = [(DEADLINE, DEADLINE), (None, DEADLINE), (DEADLINE + 1, None)]  # (append time, deadline)
    for i, (appended, deadline) in enumerate(cases):
        run = create_run(event_id=f"c{i}")
        event = replace(log_params(("lr", "0.1"), event_id=f"p{i}"), deadline=deadline)
        result = fold_batch(FoldState(), [LogRecord(0, 0, run), LogRecord(0, 1, event, append_time=appended)])
        assert result.verdicts[f"p{i}"].applied, (appended, deadline)


def test_a_late_copy_does_not_use_up_the_id_but_a_late_redelivery_stays_a_duplicate() -> None:
    run = create_run(event_id="c")
    first = _late(metrics(("m", 1.0, 1, 0), event_id="s"))
    retry = replace(first, deadline=DEADLINE + 10_000)
    result = fold_batch(FoldState(), [LogRecord(0, 0, run, append_time=1),
                                      LogRecord(0, 1, first, append_time=DEADLINE + 5),   # late: refused
                                      LogRecord(0, 2, retry, append_time=DEADLINE + 6),   # the retry: applied
                                      LogRecord(0, 3, first, append_time=DEADLINE + 7)])  # a late duplicate
    assert result.verdicts["s"].applied
    assert len(result.changes.metrics) == 1
    assert [e.error_code for e in result.changes.log if e.type == "MetricsLogged"] == [LATE_EVENT, None]


def _log(tmp_path: Path) -> dict[int, list[tuple[Any, ...]]]:
    """Two partitions of encoded records with broker times: some late, some retried, some old
    (no deadline or no broker time)."""
    runs = ["r1", "r2"]
    log: dict[int, list[tuple[Any, ...]]] = {0: [], 1: []}
    t = 1_000
    for p, run in enumerate(runs):
        events: list[tuple[Envelope, int | None]] = [(create_run(run=run, event_id=f"c-{run}"), None)]
        for i in range(12):
            deadline = t + 100
            e = replace(metrics(("m", float(i), i, i), run=run, event_id=f"{run}-m{i}"), deadline=deadline)
            late = i % 3 == 0
            events.append((e, deadline + 1 if late else deadline - 1))
            if late and i % 2 == 0:  # the client's retry with the same id, on time
                events.append((replace(e, deadline=deadline + 500), deadline + 2))
            events.append((_late(log_params((f"k{i}", "v"), run=run, event_id=f"{run}-p{i}")),
                           DEADLINE + 1 if i % 4 == 0 else None))
            t += 200
        log[p] = [(o, encode(e), at) for o, (e, at) in enumerate(events)]
    return log


def test_replays_in_any_interleaving_and_batching_reach_the_same_verdicts(tmp_path: Path) -> None:
    log = _log(tmp_path)
    whole = [[(p, *r) for p in sorted(log) for r in log[p]]]
    fold_into(str(tmp_path / "a.duckdb"), "t", whole)
    expected = without_offsets(dump_tables(str(tmp_path / "a.duckdb")))
    late = [r for r in expected["event_log"] if r[8] == LATE_EVENT]
    assert len(late) == 2 * (4 + 3) and all(r[0].startswith("late:") for r in late)
    assert len(expected["metrics"]) == 2 * (12 - 4) + 2 * 2  # on time, plus the retried late ones
    for seed in range(3):
        rng = random.Random(seed)
        batches = interleaved_batches(log, rng, max_batch=5)
        fold_into(str(tmp_path / f"i{seed}.duckdb"), "t", batches)
        assert without_offsets(dump_tables(str(tmp_path / f"i{seed}.duckdb"))) == expected
        fold_into_cached(str(tmp_path / f"c{seed}.duckdb"), "t", batches, rng)
        assert without_offsets(dump_tables(str(tmp_path / f"c{seed}.duckdb"))) == expected


def test_the_deadline_survives_the_codec_and_old_records_have_none() -> None:
    e = _late(create_run(event_id="x"))
    assert decode(encode(e)).deadline == DEADLINE
    assert decode(encode(replace(e, deadline=None))).deadline is None
    assert b"deadline" not in encode(replace(e, deadline=None))
