"""`run_pages` (projector/run_pages.py): the per-run rows a runs/search page is read from.

Specified here:
(a) a page read from `run_pages` is byte for byte what `runs_json` renders from the tables it
    summarises (random corpora: NaN and missing metrics, NULL attributes, deleted runs and
    experiments, runs whose experiment row is missing, non-ASCII keys, dataset inputs);
(b) the rows the projector writes from the fold's output equal the rows rebuilt from the
    tables, however the log is cut into batches and commits are merged (random streams with
    tag deletions, renames, updates, deletes and rewinds), so the page a search shows is the
    run runs/get shows.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from runledger.ingest.contract.codec import encode
from runledger.projector import run_pages
from runledger.query import reader
from tests.log_tools import dump_tables, fold_into, fold_into_cached, interleaved_batches, without_offsets
from tests.test_fold import create_experiment, create_run, delete_tag, ev, log_batch, log_params, set_tags
from tests.test_reader_pages import LATEST, _corpus


@pytest.fixture(scope="module", params=[1, 2])
def corpus(request: pytest.FixtureRequest) -> Any:
    con = _corpus(request.param)
    run_pages.refresh(con, [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()])
    yield con
    con.close()


@pytest.mark.parametrize("latest", LATEST)
def test_a_page_from_run_pages_is_byte_for_byte_the_page_runs_json_renders(corpus: Any, latest: str) -> None:
    rnd = random.Random(11)
    ids = [r[0] for r in corpus.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()] + ["no-such-run"]
    for size in (2, 5, 40, len(ids)):
        for _ in range(6):
            page = rnd.sample(ids, size)
            expected = [orjson.dumps(run) for run in reader.runs_json(corpus, page, latest)]
            assert [p[2] for p in reader.page_bodies(corpus, page, latest)] == expected
            experiments = rnd.sample(["0", "1", "2", "3", "9", "1"], 6)   # a search's, some twice
            assert [p[2] for p in reader.page_bodies(corpus, page, latest, experiments)] == expected


def test_a_page_without_inputs_leaves_the_inputs_out_as_runs_json_does(corpus: Any) -> None:
    ids = [r[0] for r in corpus.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
    expected = [orjson.dumps(run) for run in reader.runs_json(corpus, ids, "latest_metrics", ["0", "1", "2", "3"],
                                                              inputs=False)]
    assert [p[2] for p in reader.page_bodies(corpus, ids, "latest_metrics", ["0", "1", "2", "3"],
                                             inputs=False)] == expected


RUNS = ["r1", "r2", "r3"]


def _stream(rnd: random.Random, rewinds: bool) -> list[Any]:
    """An experiment, its runs, then random writes to them, the runs' events interleaved. A
    rewound run's page is rebuilt from the tables by the store, so rewinds are rare here (or
    absent): the pages written from the fold's output are what is checked."""
    per_run: list[list[Any]] = []
    for run in RUNS:
        events = [create_run(run=run, name=f"n-{run}", event_id=f"c-{run}")]
        for i in range(25):
            eid = f"{run}-{i}"
            kind = rnd.randrange(8)
            if kind == 0:
                events.append(log_params((rnd.choice("ab"), rnd.choice("xy")), run=run, event_id=eid))
            elif kind == 1:
                events.append(set_tags((rnd.choice(["t", "u", "mlflow.runName"]), rnd.choice("xyé")), run=run,
                                       event_id=eid))
            elif kind == 2:
                events.append(delete_tag(rnd.choice(["t", "u"]), run=run, event_id=eid))
            elif kind == 3:
                events.append(ev("RunUpdated", {"status": rnd.choice(["FINISHED", "FAILED"]), "end_time": i,
                                                "run_name": rnd.choice([None, "renamed"])}, run=run, event_id=eid))
            elif kind == 4:
                events.append(ev(rnd.choice(["RunDeleted", "RunRestored"]), run=run, event_id=eid))
            elif kind == 5 and rewinds and rnd.random() < 0.15:
                events.append(ev("RunRewound", {"step": rnd.randrange(4)}, run=run, event_id=eid))
            else:
                points = [(rnd.choice(["m", "n", "é"]), rnd.choice([0.5, -1.0, float("nan"), 2.0]), rnd.randrange(5),
                           rnd.randrange(6)) for _ in range(rnd.randrange(1, 4))]
                events.append(log_batch([(rnd.choice("ab"), rnd.choice("xy"))], points,
                                        [("t", rnd.choice("xy"))], run=run, event_id=eid))
        per_run.append(events)
    merged = [create_experiment("e", event_id="exp")]
    while any(per_run):
        merged.append(rnd.choice([q for q in per_run if q]).pop(0))
    return merged


def _pages(path: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(the run_pages rows as written, the rows rebuilt from the tables), both sorted."""
    con = duckdb.connect(path)
    try:
        written = sorted(con.execute("SELECT * FROM run_pages").fetchall())
        con.execute("BEGIN TRANSACTION")
        run_pages.refresh(con, [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()])
        rebuilt = sorted(con.execute("SELECT * FROM run_pages").fetchall())
        con.execute("ROLLBACK")
        return written, rebuilt
    finally:
        con.close()


@pytest.mark.parametrize("rewinds", [False, True])
def test_pages_the_projector_writes_are_the_pages_rebuilt_from_the_tables(tmp_path: Path, rewinds: bool) -> None:
    rnd = random.Random(5)
    log = {0: [(o, encode(e)) for o, e in enumerate(_stream(rnd, rewinds))]}
    whole = [[(p, *r) for p in sorted(log) for r in log[p]]]
    fold_into(str(tmp_path / "a.duckdb"), "t", whole)
    written, rebuilt = _pages(str(tmp_path / "a.duckdb"))
    assert len(written) == len(RUNS) and written == rebuilt
    expected = without_offsets(dump_tables(str(tmp_path / "a.duckdb")))
    for seed in range(4):
        rng = random.Random(seed)
        batches = interleaved_batches(log, rng, max_batch=6)
        fold_into_cached(str(tmp_path / f"c{seed}.duckdb"), "t", batches, rng, max_runs=2)
        written, rebuilt = _pages(str(tmp_path / f"c{seed}.duckdb"))
        assert written == rebuilt
        assert without_offsets(dump_tables(str(tmp_path / f"c{seed}.duckdb"))) == expected
