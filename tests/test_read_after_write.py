"""A read right after a write answers from the projector's folded state instead of waiting for
the DuckDB commit (projector.pending, ReadService.run_from_memory, reader.hot_run_json), and
that answer is byte for byte the one DuckDB gives once the commit lands.

In process, on a real DuckDB file: events are folded by the real projector (`Projector.feed`);
the store's commits are held at a gate, so each write is "answered but not committed" exactly
when the read is made, then released and compared with a fresh render from DuckDB.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from runledger.ingest.contract.codec import encode
from runledger.ingest.contract.events import Envelope
from runledger.projector.consumer import Projector
from runledger.projector.store import Store
from runledger.query import reader
from runledger.query.read_service import ReadService
from runledger.query.run_cache import RunCache
from runledger.query.search_cursors import SearchCursors
from tests.test_fold import (create_experiment, create_run, dataset, delete_tag, ev, exp_event, log_batch,
                             log_inputs, log_metrics, log_params, set_tags)

TABLES = ("latest_metrics", "latest_metrics_by_step")
RUN, OTHER = "r1", "r2"


class GatedStore(Store):
    """A real store whose commits wait at a gate: a test hook, the DuckDB writes are real."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()

    def apply(self, *args: Any, **kw: Any) -> None:
        assert self.gate.wait(30)
        super().apply(*args, **kw)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.store = GatedStore(tmp_path / "runledger.duckdb")
        self.projector = Projector(self.store, "127.0.0.1:1", "t", lambda verdicts: None)
        self.cache = RunCache()
        self.store.apply_listeners.append(self.cache.drop_changed)
        self.services = {t: ReadService(self.store, self.projector, latest_table=t, run_cache=self.cache,
                                        search_cursors=SearchCursors()) for t in TABLES}
        self.offset = 0

    async def fold(self, *events: Envelope) -> None:
        msgs = []
        for e in events:
            msgs.append(SimpleNamespace(offset=self.offset, value=encode(e), timestamp=0, timestamp_type=0))
            self.offset += 1
        await self.projector.feed({TopicPartition("t", 0): msgs})

    def duckdb_json(self, table: str, run_id: str) -> bytes:
        with self.services[table].cursor() as cur:
            (run,) = reader.runs_json(cur, [run_id], table)
        return orjson.dumps(run)

    def page_from_fold(self, table: str) -> bytes:
        """runs/search's page with a rendered-run cache that keeps nothing: every run is rendered
        from the fold cache (or DuckDB when not held there)."""
        cache = RunCache(max_bytes=0)
        cache.folded = self.services[table].folded_json
        assert set(cache.folded(table, [RUN, OTHER])) == {RUN, OTHER}   # both are held in the fold cache
        return self._page(table, cache)

    def page_from_duckdb(self, table: str) -> bytes:
        return self._page(table, None)

    def _page(self, table: str, cache: RunCache | None) -> bytes:
        service = self.services[table]
        with service.cursor() as cur:
            return orjson.dumps(reader.search_runs(
                cur, experiment_ids=["1"], filter_string=None, run_view_type=3, max_results=10, order_by=[],
                page_token=None, latest_table=table, cursors=service.search_cursors, cache=cache))

    def read_through_cache(self, run_id: str) -> None:
        """A get-run as the route makes it when nothing is pending (keeps the run's inputs)."""
        for table, service in self.services.items():
            with service.cursor() as cur:
                reader.get_run(cur, run_id, table, self.cache)

    async def uncommitted_reads(self, *events: Envelope, run_id: str = RUN) -> dict[str, bytes | None]:
        """Fold `events` with commits held; read the run from memory; let the commit land."""
        self.store.gate.clear()
        try:
            await self.fold(*events)
            return {t: s.run_from_memory(run_id) for t, s in self.services.items()}
        finally:
            self.store.gate.set()
            await self.projector.drain()


def scenario(tmp_path: Path, body: Any) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        try:
            await h.fold(create_experiment("e"), create_run(RUN, exp="1"), create_run(OTHER, exp="1"))
            await h.projector.drain()
            h.read_through_cache(RUN)
            await body(h)
        finally:
            await h.projector.finish()
            await h.projector.close()
            h.store.close()
    asyncio.run(main())


# Each step: events, then whether memory must answer (False: it must defer to DuckDB).
STEPS: list[tuple[str, list[Envelope], bool]] = [
    ("params", [log_params(("lr", "0.1"), ("b", "2"))], True),
    ("same param again, a conflicting one rejected: nothing changed", [log_params(("lr", "0.1")),
                                                                       log_params(("lr", "9"))], False),
    ("tags", [set_tags(("z", "1"), ("a", "x"))], True),
    ("tag overwritten, last value in a request wins", [set_tags(("z", "2"), ("z", "3"))], True),
    ("tag deleted", [delete_tag("a")], True),
    ("metrics, the latest rules disagree", [log_metrics(("m", 1.0, 200, 1), ("m", 2.0, 100, 5),
                                                        ("n", math.nan, 5, 0), ("i", 3, 7, 2))], True),
    ("an older point replaces no latest value: the run JSON is unchanged", [log_metrics(("m", 0.5, 50, 0))], False),
    ("a batch of all three", [log_batch([("p2", "v")], [("m", -0.0, 300, 9), ("k", 1e308, 1, 1)],
                                        [("t", "v")])], True),
    ("the run renamed and finished", [ev("RunUpdated", {"status": "FINISHED", "end_time": 999,
                                                        "run_name": "renamed"})], True),
    ("the run name set through its tag", [set_tags(("mlflow.runName", "by-tag"))], True),
    ("the run deleted", [ev("RunDeleted", {})], True),
    ("the run restored", [ev("RunRestored", {})], True),
    ("a dataset logged", [log_inputs(dataset())], False),
    ("after the dataset", [log_metrics(("m", 7.0, 400, 10))], True),
    ("the experiment deleted", [exp_event("ExperimentDeleted", "1")], False),
    ("a write in the deleted experiment's run", [log_params(("late", "1"))], True),
]


def test_a_run_read_right_after_each_kind_of_write_equals_what_duckdb_answers_after_the_commit(
        tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for label, events, from_memory in STEPS:
            got = await h.uncommitted_reads(*events)
            for table in TABLES:
                if not from_memory:
                    assert got[table] is None, label
                    continue
                assert got[table] is not None, f"{label}: memory did not answer ({table})"
                assert got[table] == h.duckdb_json(table, RUN), f"{label} ({table})"
            h.read_through_cache(RUN)  # the route's read after a commit: keeps the run's inputs again
            h.read_through_cache(OTHER)
            for table in TABLES:   # a page renders the runs the fold cache holds from there
                assert h.page_from_fold(table) == h.page_from_duckdb(table), f"{label}: page ({table})"
    scenario(tmp_path, body)


def test_memory_does_not_answer_for_a_run_without_uncommitted_writes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        got = await h.uncommitted_reads(log_params(("x", "1")), run_id=OTHER)   # the write is to RUN
        assert got == {t: None for t in TABLES}
        for table, service in h.services.items():
            assert service.run_from_memory(RUN) is None  # committed by now: read DuckDB as usual
    scenario(tmp_path, body)


def test_memory_does_not_answer_for_a_run_whose_inputs_were_never_rendered(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        got = await h.uncommitted_reads(log_params(("x", "1"), run=OTHER), run_id=OTHER)
        assert got == {t: None for t in TABLES}
    scenario(tmp_path, body)


def test_a_search_right_after_a_write_equals_the_search_after_the_commit(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        service = h.services["latest_metrics"]
        search = dict(experiment_ids=["1"], filter_string=None, run_view_type=None, max_results=10, order_by=[],
                      page_token=None, latest_table="latest_metrics", cursors=service.search_cursors,
                      cache=h.cache)
        h.store.gate.clear()
        try:
            await h.fold(log_metrics(("acc", 0.5, 10, 0)), set_tags(("team", "a")))
            memory = service.memory_reads()
            assert memory is not None and RUN in memory.uncommitted.runs
            with service.cursor_now() as cur:
                early = orjson.dumps(reader.search_runs(cur, memory=memory, **search))
                with pytest.raises(reader.MustWait):   # names the key the pending write changed
                    reader.search_runs(cur, memory=memory, **{**search, "filter_string": "metrics.acc > 0.1"})
                with pytest.raises(reader.MustWait):
                    reader.search_runs(cur, memory=memory, **{**search, "order_by": ["tags.team"]})
        finally:
            h.store.gate.set()
            await h.projector.drain()
        with service.cursor() as cur:
            late = orjson.dumps(reader.search_runs(cur, **{**search, "cache": None}))
        assert early == late
        assert b'"acc"' in early
    scenario(tmp_path, body)


def test_a_search_right_after_a_run_is_created_waits_for_the_commit(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        service = h.services["latest_metrics"]
        h.store.gate.clear()
        try:
            await h.fold(create_run("r3", exp="1"))
            memory = service.memory_reads()
            assert memory is not None
            with service.cursor_now() as cur, pytest.raises(reader.MustWait):
                reader.search_runs(cur, experiment_ids=["1"], filter_string=None, run_view_type=None,
                                   max_results=10, order_by=[], page_token=None, latest_table="latest_metrics",
                                   cursors=service.search_cursors, cache=h.cache, memory=memory)
        finally:
            h.store.gate.set()
            await h.projector.drain()
    scenario(tmp_path, body)


def test_a_page_read_while_no_run_had_inputs_shows_the_first_dataset_once_it_is_logged(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        service = h.services["latest_metrics"]

        def page() -> list[dict[str, Any]]:
            with service.cursor() as cur:
                found = reader.search_runs(cur, experiment_ids=["1"], filter_string=None, run_view_type=None,
                                           max_results=10, order_by=[], page_token=None,
                                           latest_table="latest_metrics", cursors=service.search_cursors,
                                           cache=h.cache)
            return orjson.loads(orjson.dumps(found))["runs"]

        assert all(run["inputs"] == {} for run in page())   # rendered without reading the input tables
        await h.fold(log_inputs(dataset(), run=OTHER))
        await h.projector.drain()
        shown = {run["info"]["run_id"]: run["inputs"] for run in page()}
        assert shown[OTHER]["dataset_inputs"][0]["dataset"]["name"] == "train"
        assert shown[RUN] == {}
        with service.cursor() as cur:
            everything = {r["info"]["run_id"]: r for r in reader.runs_json(cur, [RUN, OTHER], "latest_metrics")}
        assert {run["info"]["run_id"]: run for run in page()} == everything
    scenario(tmp_path, body)


def _body(run: Any) -> bytes:
    """get-run's `run` as bytes, whichever way ReadService.get_run answered (bytes or a Fragment)."""
    return run if isinstance(run, bytes) else orjson.dumps(run)


def _ways(service: ReadService) -> dict[str, int]:
    return {way: d["count"] for way, d in service.read_paths.snapshot()["get_run"].items()}


async def _get_run_while_committing(h: Harness, *events: Envelope) -> dict[str, tuple[bytes, str]]:
    """Fold `events` with commits held and start a get-run of RUN per table; let the commit land;
    each answer (as bytes) and the way it was answered. A get-run that must wait does so until
    the gate opens."""
    answers: dict[str, tuple[bytes, str]] = {}

    def read(table: str) -> None:
        service = h.services[table]
        before = _ways(service)
        run = service.get_run(RUN)
        way = next(w for w, n in _ways(service).items() if n > before[w])
        answers[table] = (_body(run), way)

    h.store.gate.clear()
    try:
        await h.fold(*events)
        threads = [threading.Thread(target=read, args=(t,)) for t in TABLES]
        for t in threads:
            t.start()
        await asyncio.sleep(0.05)   # answers that need no commit are in by now
    finally:
        h.store.gate.set()
        await h.projector.drain()
    for t in threads:
        t.join(30)
    return answers


def test_get_run_during_and_after_each_kind_of_write_equals_what_duckdb_answers_after_the_commit(
        tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for label, events, from_memory in STEPS:
            during = await _get_run_while_committing(h, *events)
            for table, service in h.services.items():
                committed = h.duckdb_json(table, RUN)
                assert during[table][0] == committed, f"{label}: during the commit ({table})"
                if from_memory:
                    assert during[table][1] == "memory", label
                before = _ways(service)
                assert _body(service.get_run(RUN)) == committed, f"{label}: after the commit ({table})"
                after = _ways(service)
                assert after["waited"] == before["waited"], label   # nothing pending: no wait
    scenario(tmp_path, body)


def test_get_run_after_the_commit_of_a_write_renders_the_folded_state_without_reading_duckdb(
        tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        service = h.services["latest_metrics"]
        for step in range(5):
            await h.fold(log_metrics(("live", float(step), 100 + step, step)))
            await h.projector.drain()   # committed: the run cache dropped the run
            before = _ways(service)
            run = orjson.loads(_body(service.get_run(RUN)))
            assert {m["key"]: m["step"] for m in run["data"]["metrics"]}["live"] == step
            after = _ways(service)
            assert after["folded"] == before["folded"] + 1
            assert after["duckdb"] == before["duckdb"]
    scenario(tmp_path, body)


def test_get_run_does_not_wait_for_the_commit_of_another_runs_write(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        service = h.services["latest_metrics"]
        expected = h.duckdb_json("latest_metrics", RUN)
        h.store.gate.clear()   # the write to OTHER stays uncommitted while RUN is read
        try:
            await h.fold(log_params(("x", "1"), run=OTHER))
            before = _ways(service)
            assert _body(service.get_run(RUN)) == expected
            assert _ways(service)["folded"] == before["folded"] + 1
        finally:
            h.store.gate.set()
            await h.projector.drain()
    scenario(tmp_path, body)


def test_get_run_of_a_run_the_fold_cache_does_not_hold_reads_duckdb(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        service = h.services["latest_metrics"]
        expected = h.duckdb_json("latest_metrics", RUN)
        h.projector.cache.reset()   # as after the run was evicted from the fold cache
        h.cache.drop([RUN])
        before = _ways(service)
        assert _body(service.get_run(RUN)) == expected
        assert _ways(service)["duckdb"] == before["duckdb"] + 1
        assert _body(service.get_run_at_once(RUN)) == expected   # kept: the next read is the cache's
        assert _ways(service)["cache"] == before["cache"] + 1
        assert service.get_run("no-such-run") is None
    scenario(tmp_path, body)
