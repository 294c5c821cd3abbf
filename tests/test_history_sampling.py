"""The sampled history (get-history-bulk-interval) against a straightforward reference, on a
real DuckDB file with the read model's schema (no broker needed).

The reference is MLflow 3.x's SQL: NTILE(k) over (step, timestamp, value), the first row of
each bucket, then the last row (which replaces the last sample when the sample is full).
`query.history` finds the same rows without sorting when the steps are an arithmetic
progression, and by sorting otherwise; both must give exactly the reference's answer."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pytest

from runledger.projector.schema import create_schema
from runledger.query import history
from runledger.query.reader import metric_value

NAN = float("nan")


@pytest.fixture()
def con(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[duckdb.DuckDBPyConnection]:
    monkeypatch.setattr(history, "_SHAPES", {})
    monkeypatch.setattr(history, "_SORT_MAX", 500)  # so that small data reach every path
    c = duckdb.connect(str(tmp_path / "history.duckdb"))
    create_schema(c)
    yield c
    c.close()


def sample(con: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, k: int,
           start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
    """sampled_history with nothing remembered (a first request), then with the shape it left
    behind: the queries differ (top-N, count, progression scan, sort), the answer must not."""
    history._SHAPES.clear()
    cold = history.sampled_history(con.cursor(), run_ids, key, k, start, end)
    warm = history.sampled_history(con.cursor(), run_ids, key, k, start, end)
    _same(warm, cold)
    return cold


def _insert(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, float, int, int]]) -> None:
    """Rows (run_id, key, value, timestamp, step) in the given (arrival) order, exact duplicates
    dropped as the projector does (NaN equals NaN)."""
    seen, kept = set(), []
    for run_id, key, value, ts, step in rows:
        ident = (run_id, key, "NaN" if math.isnan(value) else value, ts, step)
        if ident not in seen:
            seen.add(ident)
            kept.append((run_id, key, value, ts, step))
    for i in range(0, len(kept), 50_000):
        chunk = kept[i:i + 50_000]
        con.execute("INSERT INTO metrics SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                    "unnest(?::DOUBLE[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]))",
                    [list(col) for col in zip(*chunk)])


def reference(con: duckdb.DuckDBPyConnection, run_ids: list[str], key: str, k: int,
              start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
    out = []
    for run_id in run_ids:
        rng, params = "", [run_id, key]
        if start is not None:
            rng, params = " AND step BETWEEN ? AND ?", params + [start, end]
        rows = con.execute(
            f"SELECT value, timestamp, step, ntile({k}) OVER w AS bucket FROM metrics "
            f"WHERE run_id = ? AND key = ?{rng} WINDOW w AS (ORDER BY step, timestamp, value) "
            "ORDER BY step, timestamp, value", params).fetchall()
        sample = [r for i, r in enumerate(rows) if i == 0 or rows[i - 1][3] != r[3]]
        if rows and sample[-1] is not rows[-1]:
            if len(sample) >= k:
                sample[-1] = rows[-1]
            else:
                sample.append(rows[-1])
        out += [{"key": key, "value": metric_value(v), "timestamp": ts, "step": s, "run_id": run_id}
                for v, ts, s, _ in sample]
    return out


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w, (g, w)


def _value(rnd: random.Random) -> float:
    return rnd.choice([NAN, 0.0, 1.5, -2.25, 1.7976931348623157e308, rnd.random(), rnd.random(), rnd.random()])


def _series(rnd: random.Random, kind: str, n: int) -> list[tuple[float, int, int]]:
    """(value, timestamp, step) points of one key, in a shuffled-but-mostly-ordered arrival order."""
    t0 = 1_700_000_000_000
    if kind == "progression":  # one point per step, steps lo, lo + d, ...
        lo, d = rnd.choice([0, 1, -40, 10**12]), rnd.choice([1, 1, 2, 7, 1000])
        pts = [(_value(rnd), t0 + rnd.randrange(3 * n + 1), lo + i * d) for i in range(n)]
    elif kind == "progression_with_repeat":  # same shape (count and bounds) but one step twice
        pts = [(_value(rnd), t0 + i, i) for i in range(n)]
        if n >= 3:  # step `gone` is missing, step `twice` is there twice
            gone, twice = rnd.sample(range(1, n - 1), 2) if n > 3 else (1, 0)
            pts[gone] = (_value(rnd), t0 + rnd.randrange(n), twice)
    elif kind == "step_zero":  # log_metric without a step: every point at step 0
        pts = [(_value(rnd), t0 + rnd.randrange(n // 2 + 1), 0) for _ in range(n)]
    elif kind == "repeated_steps":
        pts = [(_value(rnd), t0 + rnd.randrange(4), rnd.randrange(n // 3 + 1)) for _ in range(n)]
    else:  # uneven unique-ish steps
        pts = [(_value(rnd), t0 + i, rnd.randrange(10 * n)) for i in range(n)]
    # Arrival: chunks in nearly increasing order, each chunk scrambled (as parallel clients and
    # the projector's de-duplication leave them).
    chunks = [pts[i:i + 64] for i in range(0, len(pts), 64)]
    order = sorted(range(len(chunks)), key=lambda c: c + rnd.uniform(0, 4))
    arrived = []
    for c in order:
        chunk = chunks[c][:]
        rnd.shuffle(chunk)
        arrived += chunk
    return arrived


KINDS = ["progression", "progression_with_repeat", "step_zero", "repeated_steps", "uneven"]


@pytest.mark.parametrize("seed", range(6))
def test_sampled_history_equals_the_reference_on_random_histories(con: duckdb.DuckDBPyConnection, seed: int) -> None:
    rnd = random.Random(seed)
    series: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    for r in range(3):
        for kind in KINDS:
            n = rnd.choice([1, 2, 3, 7, 10, 11, 99, 100, 101, 250, 1001, 3000])
            series[(f"run{r}", kind)] = _series(rnd, kind, n)
    # Runs and keys interleaved in arrival order.
    rows = []
    cursors = {sk: 0 for sk in series}
    while cursors:
        sk = rnd.choice(list(cursors))
        pts = series[sk][cursors[sk]:cursors[sk] + rnd.randrange(1, 200)]
        rows += [(sk[0], sk[1], v, ts, s) for v, ts, s in pts]
        cursors[sk] += len(pts)
        if cursors[sk] >= len(series[sk]):
            del cursors[sk]
    _insert(con, rows)
    for kind in KINDS:
        for k in (1, 2, 3, 5, 10, 100, 1000, 2500):
            runs = ["run0", "run1", "run2"]
            _same(sample(con, runs, kind, k), reference(con, runs, kind, k))
            lo, hi = sorted(rnd.choice(series[("run1", kind)])[2] for _ in range(2))
            _same(sample(con, ["run1"], kind, k, lo, hi),
                  reference(con, ["run1"], kind, k, lo, hi))


@pytest.mark.parametrize("n, k", [(1001, 1000), (1999, 1000), (2000, 1000), (2001, 1000), (50_000, 1000),
                                  (100_003, 1000), (12_345, 7), (5000, 1), (5000, 2), (5000, 2500), (2501, 2500)])
def test_progressions_take_the_rows_at_the_bucket_starts(con: duckdb.DuckDBPyConnection, n: int, k: int) -> None:
    rnd = random.Random(n * 31 + k)
    _insert(con, [("r", "m", v, ts, s) for v, ts, s in _series(rnd, "progression", n)]
            + [("other", "m", 1.0, 5, s) for s in range(0, n, 3)])
    _same(sample(con, ["r"], "m", k), reference(con, ["r"], "m", k))


@pytest.mark.parametrize("lo, d, n", [(0, 1, 20_000), (-40, 7, 20_000), (10**12, 1000, 5003), (5, 3, 1001)])
def test_a_progression_is_sampled_without_sorting_the_history(con: duckdb.DuckDBPyConnection,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              lo: int, d: int, n: int) -> None:
    rnd = random.Random(n + d)
    rows = [("r", "m", _value(rnd), rnd.randrange(10), lo + i * d) for i in range(n)]
    rnd.shuffle(rows)
    _insert(con, rows + [("r", "other", 1.0, 1, s) for s in range(0, n, 2)])
    want = {k: reference(con, ["r"], "m", k) for k in (1, 2, 1000)}

    def no_sort(*args: Any) -> None:
        raise AssertionError("sorted the whole history")

    monkeypatch.setattr(history, "_sorted_sample", no_sort)
    monkeypatch.setattr(history, "_SORT_MAX", 0)
    for k, expected in want.items():
        _same(sample(con, ["r"], "m", k), expected)
    _same(sample(con, ["r"], "m", 10, lo + d, lo + (n - 2) * d),
          reference(con, ["r"], "m", 10, lo + d, lo + (n - 2) * d))


def test_a_repeated_step_falls_back_to_sorting(con: duckdb.DuckDBPyConnection) -> None:
    # 3000 points, steps 0..2999 except that step 2000 is missing and step 1000 is there twice:
    # the count and the bounds look like a progression, but the rows between the two have one
    # rank more than their step says. Neither step is a bucket start (multiples of 3 for k=1000).
    rows = [("r", "m", float(s), 1000 + s, s) for s in range(3000) if s != 2000]
    rows.append(("r", "m", -1.0, 999, 1000))
    _insert(con, rows[::-1])
    for k in (1000, 7, 2):
        _same(sample(con, ["r"], "m", k), reference(con, ["r"], "m", k))


def test_extreme_steps_do_not_overflow(con: duckdb.DuckDBPyConnection) -> None:
    big = 2 ** 63 - 1
    _insert(con, [("wide", "m", 1.0, 1, -big - 1), ("wide", "m", 2.0, 2, big), ("wide", "m", 3.0, 3, 0)]
            + [("far", "m", float(i), i, big - 5000 * 2 ** 40 + i * 2 ** 40) for i in range(5000)]
            + [("low", "m", float(i), i, -big - 1 + i) for i in range(3000)])
    for run in ("wide", "far", "low"):
        for k in (1, 2, 1000):
            _same(sample(con, [run], "m", k), reference(con, [run], "m", k))


def test_runs_follow_request_order_and_repeat(con: duckdb.DuckDBPyConnection) -> None:
    _insert(con, [(r, "m", float(s), s, s) for r in ("a", "b") for s in range(3000)])
    runs = ["b", "missing", "a", "b"]
    got = sample(con, runs, "m", 10)
    _same(got, reference(con, runs, "m", 10))
    assert [m["run_id"] for m in got] == ["b"] * 10 + ["a"] * 10 + ["b"] * 10
    assert sample(con, ["missing"], "m", 10) == []
    for hint in (5, 10**9):  # a size hint for a history that is not there
        history._SHAPES[("missing", "m", None, None)] = (hint, None, None)
        assert history.sampled_history(con.cursor(), ["missing"], "m", 10, None, None) == []


@pytest.mark.parametrize("kind", ["progression", "repeated_steps"])
def test_a_wrong_size_hint_changes_the_route_not_the_answer(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    rnd = random.Random(3)
    sizes = {"tiny": 40, "mid": 400, "long": 3000}
    _insert(con, [("r", name, v, ts, s) for name, n in sizes.items() for v, ts, s in _series(rnd, kind, n)])
    for name in sizes:
        for k in (1, 100, 1000):
            want = reference(con, ["r"], name, k)
            for hint in (0, 1, k, k + 1, 500, 501, 10**9):  # _SORT_MAX is 500 here
                history._SHAPES.clear()
                history._SHAPES[("r", name, None, None)] = (hint, None, None)
                _same(history.sampled_history(con.cursor(), ["r"], name, k, None, None), want)


def test_a_remembered_shape_that_is_out_of_date_is_noticed_in_the_same_scan(con: duckdb.DuckDBPyConnection) -> None:
    big = 2 ** 63 - 1
    data = {
        "steps": [(float(s), s, s) for s in range(3000)],
        "grown": [(float(s), s, s) for s in range(3000)],  # 1000 more points arrive below
        "low": [(float(i), i, -big - 1 + i) for i in range(3000)],
        "high": [(float(i), i, big - 2999 + i) for i in range(3000)],
        "uneven": [(float(s), s, s * s) for s in range(3000)],
        "repeat": [(float(s), s, s) for s in range(3000) if s != 2000] + [(-1.0, 0, 1000)],
    }
    _insert(con, [("r", key, v, ts, s) for key, pts in data.items() for v, ts, s in pts])
    hints = [(3000, 0, 2999), (2000, 0, 1999), (3000, -big - 1, -big + 2998), (3000, big - 2999, big),
             (4000, 0, 3999), (3000, 0, 5998), (10**9, 0, 10**9 - 1), (3000, 0, 8994001)]
    for key in data:
        for k in (1, 1000):
            want = reference(con, ["r"], key, k)
            for hint in hints:
                history._SHAPES[("r", key, None, None)] = hint
                _same(history.sampled_history(con.cursor(), ["r"], key, k, None, None), want)
    # The history grows after its shape was remembered.
    history._SHAPES.clear()
    want = reference(con, ["r"], "grown", 1000)
    _same(history.sampled_history(con.cursor(), ["r"], "grown", 1000, None, None), want)
    _same(history.sampled_history(con.cursor(), ["r"], "grown", 1000, None, None), want)
    _insert(con, [("r", "grown", 0.5, 7, s) for s in range(-1000, 0)])
    _same(history.sampled_history(con.cursor(), ["r"], "grown", 1000, None, None), reference(con, ["r"], "grown", 1000))
    assert history._SHAPES[("r", "grown", None, None)] == (4000, -1000, 2999)
