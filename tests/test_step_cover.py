"""Step covers (projector.step_cover): the fold's proof that a chunk of metric points logged
out of step order repeats no stored point. A cover may claim steps never logged, never miss
one that was."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runledger.projector import step_cover
from runledger.projector.fold_cache import FoldCache
from tests.test_fold import create_run, log_metrics
from tests.test_fold_cache import fold_through

ranges = st.lists(st.tuples(st.integers(-50, 20_000), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1])),
                  max_size=120)


@settings(max_examples=300, deadline=None)
@given(added=ranges, probe=st.tuples(st.integers(-60, 20_050), st.integers(0, 40)))
def test_a_cover_overlaps_every_range_that_holds_an_added_step(added: list[tuple[int, int]],
                                                                 probe: tuple[int, int]) -> None:
    cover: step_cover.Cover = ()
    for lo, hi in added:
        cover = step_cover.widen(cover, lo, hi)
    for a, b in added:
        assert all(step_cover.overlaps(cover, s, s) for s in range(a, b + 1))
    lo, hi = probe[0], probe[0] + probe[1]
    if any(a <= hi and lo <= b for a, b in added):
        assert step_cover.overlaps(cover, lo, hi)


@settings(max_examples=200, deadline=None)
@given(added=ranges)
def test_a_cover_stays_sorted_disjoint_and_small(added: list[tuple[int, int]]) -> None:
    cover: step_cover.Cover = ()
    for lo, hi in added:
        cover = step_cover.widen(cover, lo, hi)
    assert len(cover) <= step_cover.MAX_INTERVALS
    assert all(a <= b for a, b in cover)
    assert all(b + 1 < c for (_, b), (c, _) in zip(cover, cover[1:]))


def test_ranges_that_fill_a_gap_become_one_interval() -> None:
    cover = step_cover.widen(step_cover.widen((), 0, 9), 20, 29)
    assert cover == ((0, 9), (20, 29))
    assert not step_cover.overlaps(cover, 10, 19)
    assert step_cover.widen(cover, 10, 19) == ((0, 29),)


def test_a_key_loaded_from_the_store_is_covered_up_to_its_latest_step() -> None:
    assert step_cover.up_to(None) == ()
    assert step_cover.overlaps(step_cover.up_to(100), -5, -1)
    assert not step_cover.overlaps(step_cover.up_to(100), 101, 200)


def _chunk(first_step: int, n: int = 5) -> list[tuple[str, float, int, int]]:
    return [("loss", 0.5, 1000 + s, s) for s in range(first_step, first_step + n)]


def test_a_chunk_below_the_latest_step_in_a_range_of_its_own_needs_no_store_check() -> None:
    # Two concurrent writers of one run: steps 10-14 arrive after 20-24.
    cache = FoldCache()
    fold_through(cache, create_run("r"), log_metrics(*_chunk(0), run="r"), log_metrics(*_chunk(20), run="r"))
    _, result = fold_through(cache, log_metrics(*_chunk(10), run="r"))
    assert result.changes.metrics.fresh == [None]


def test_a_chunk_that_overlaps_logged_steps_is_checked_point_by_point() -> None:
    cache = FoldCache()
    fold_through(cache, create_run("r"), log_metrics(*_chunk(0), run="r"), log_metrics(*_chunk(20), run="r"))
    _, result = fold_through(cache, log_metrics(*_chunk(12, n=10), run="r"))  # steps 12-21
    mask = result.changes.metrics.fresh[0]
    assert mask is not None and not all(mask.to_pylist())


def test_within_one_batch_a_later_chunk_over_an_earlier_ones_steps_is_checked() -> None:
    cache = FoldCache()
    fold_through(cache, create_run("r"), log_metrics(*_chunk(20), run="r"))
    _, result = fold_through(cache, log_metrics(*_chunk(0), run="r"), log_metrics(*_chunk(2), run="r"))
    assert result.changes.metrics.fresh[0] is None
    assert result.changes.metrics.fresh[1] is not None


def test_more_ranges_than_the_limit_merge_neighbours_without_losing_a_step() -> None:
    cover: step_cover.Cover = ()
    logged = [(s, s + 2) for s in range(0, 10 * (step_cover.MAX_INTERVALS + 20), 10)][::-1]
    for lo, hi in logged:
        cover = step_cover.widen(cover, lo, hi)
    assert len(cover) == step_cover.MAX_INTERVALS
    assert all(step_cover.overlaps(cover, s, s) for lo, hi in logged for s in range(lo, hi + 1))
