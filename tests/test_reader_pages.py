"""query.reader's run pages (runs/get, a runs/search page) and runs/search's one-statement
matching query, checked against plain reference readings on a real DuckDB read model.

The references are the straightforward shapes the fast paths replaced: one query per kind of
run data joined with `experiments`, and the search as `runs JOIN experiments` filtered with
`compile_runs_where` and ordered with `compile_runs_order_by`. Random corpora cover NaN and
missing metrics, NULL attributes, deleted runs and experiments, runs whose experiment row is
missing, non-ASCII keys and dataset inputs."""

from __future__ import annotations

import math
import random
import threading
from typing import Any

import duckdb
import orjson
import pytest

from runledger.projector.schema import create_schema
from runledger.query import reader, search_filter, search_sql
from runledger.query.search_cursors import SearchCursors

LATEST = ("latest_metrics", "latest_metrics_by_step")
_STAGE = ("CASE WHEN r.lifecycle_stage = 'deleted' OR e.lifecycle_stage = 'deleted' "
          "THEN 'deleted' ELSE 'active' END")


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def reference_runs(cur: duckdb.DuckDBPyConnection, run_ids: list[str], latest: str) -> list[dict[str, Any]]:
    ids = [run_ids]
    infos = {r[0]: r for r in cur.execute(
        "SELECT r.run_id, r.run_name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, "
        f"r.artifact_uri, {_STAGE} FROM runs r JOIN experiments e USING (experiment_id) "
        "WHERE r.run_id IN (SELECT unnest(?::VARCHAR[]))", ids).fetchall()}
    data: dict[str, dict[str, list[Any]]] = {i: {"metrics": [], "params": [], "tags": []} for i in infos}
    for run_id, k, v, ts, step in cur.execute(
            f"SELECT run_id, key, value, timestamp, step FROM {latest} WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
            "ORDER BY run_id, key", ids).fetchall():
        if run_id in data:
            data[run_id]["metrics"].append({"key": k, "value": "NaN" if math.isnan(v) else v, "timestamp": ts,
                                            "step": step})
    for kind in ("params", "tags"):
        for run_id, k, v in cur.execute(f"SELECT run_id, key, value FROM {kind} WHERE run_id IN "
                                        "(SELECT unnest(?::VARCHAR[])) ORDER BY run_id, key", ids).fetchall():
            if run_id in data:
                data[run_id][kind].append({"key": k, "value": v})
    inputs: dict[str, list[dict[str, Any]]] = {}
    for run_id, name, digest, stype, source, schema, profile, tags in cur.execute(
            "SELECT run_id, name, digest, source_type, source, schema, profile, tags FROM run_datasets "
            "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id, logged_time, name, digest", ids).fetchall():
        dataset = _compact({"name": name, "digest": digest, "source_type": stype, "source": source,
                            "schema": schema, "profile": profile})
        entry = {"tags": [{"key": k, "value": v} for k, v in orjson.loads(tags)], "dataset": dataset}
        inputs.setdefault(run_id, []).append(_compact(entry))
    out = []
    for run_id in run_ids:
        r = infos.get(run_id)
        if r is None:
            continue
        info = _compact({"run_id": r[0], "run_uuid": r[0], "run_name": r[1], "experiment_id": r[2],
                         "user_id": r[3], "status": r[4], "start_time": r[5], "end_time": r[6],
                         "artifact_uri": r[7], "lifecycle_stage": r[8]})
        info.setdefault("user_id", "")
        out.append({"info": info, "data": _compact(data[run_id]),
                    "inputs": {"dataset_inputs": inputs[run_id]} if run_id in inputs else {}, "outputs": {}})
    return out


def reference_search(cur: duckdb.DuckDBPyConnection, experiment_ids: list[str], filter_text: str | None,
                     order_by: list[str], view: int, latest: str) -> list[str]:
    where, where_params = search_sql.compile_runs_where(search_filter.parse_runs_filter(filter_text), latest)
    order, order_params = search_sql.compile_runs_order_by(search_filter.parse_runs_order_by(order_by), latest)
    stage = {1: f"{_STAGE} = 'active'", 2: f"{_STAGE} = 'deleted'", 3: "TRUE"}[view]
    return [row[0] for row in cur.execute(
        "SELECT r.run_id FROM runs r JOIN experiments e USING (experiment_id) "
        f"WHERE r.experiment_id IN (SELECT unnest(?::VARCHAR[])) AND {stage} AND ({where}) ORDER BY {order}",
        [experiment_ids, *where_params, *order_params]).fetchall()]


def _corpus(seed: int) -> duckdb.DuckDBPyConnection:
    rnd = random.Random(seed)
    con = duckdb.connect()
    create_schema(con)
    con.executemany("INSERT INTO experiments VALUES (?, ?, 'loc', ?, 1, 1, NULL)",
                    [("0", "Default", "active"), ("1", "a", "active"), ("2", "b", "deleted"), ("3", "c", "active")])
    for i in range(120):
        run_id = f"r{i:03d}" + rnd.choice(["", "x", "é", "Z"])
        experiment_id = rnd.choice(["0", "1", "2", "3", "9"])  # "9": the experiment row is missing
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)", [
            run_id, experiment_id, rnd.choice([f"n{i}", None, "", "ü"]), rnd.choice(["", None, "bob"]),
            rnd.choice(["RUNNING", "FINISHED"]), rnd.choice([None, 1000, 2000, 3000 + i]),
            rnd.choice([None, 5000, 6000]), rnd.choice(["active", "active", "deleted"]),
            rnd.choice([None, f"s3://x/{i}"])])
        for key in rnd.sample(["acc", "loss", "é", "Acc", "a b"], rnd.randint(0, 5)):
            v = rnd.choice([math.nan, 0.5, 0.9, -1.0, 1.7976931348623157e308, rnd.random(), 0.0])
            con.execute("INSERT INTO latest_points VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                run_id, key, v, rnd.randint(0, 5), rnd.randint(0, 5), rnd.choice([v, 0.3, math.nan]),
                rnd.randint(0, 5), rnd.randint(0, 5)])
        for key in rnd.sample(["opt", "lr", "z", "Opt", "ü"], rnd.randint(0, 5)):
            con.execute("INSERT INTO params VALUES (?, ?, ?)", [run_id, key, rnd.choice(["adam", "sgd", "Adam", "", "it's"])])
        for key in rnd.sample(["team", "model", "mlflow.runName", "t"], rnd.randint(0, 4)):
            con.execute("INSERT INTO tags VALUES (?, ?, ?)", [run_id, key, rnd.choice(["resnet-1", "vit", "ResNet", ""])])
        for j in range(rnd.choice([0, 0, 0, 1, 2, 3])):
            con.execute("INSERT INTO run_datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                run_id, rnd.choice(["train", "eval"]) + str(j), f"d{j}", rnd.choice([None, "training"]),
                rnd.choice(["s3", None]), rnd.choice(["src", None]), rnd.choice([None, "{}"]), rnd.choice([None, "p"]),
                orjson.dumps(rnd.choice([[], [["mlflow.data.context", "training"]], [["a", "b"], ["c", "d"]]])).decode(),
                experiment_id, rnd.choice([None, 5, 7, 7])])
    return con


@pytest.fixture(scope="module", params=[1, 2])
def corpus(request: pytest.FixtureRequest) -> Any:
    con = _corpus(request.param)
    yield con
    con.close()


def _ids(con: duckdb.DuckDBPyConnection, where: str) -> list[str]:
    return [r[0] for r in con.execute(f"SELECT run_id FROM runs WHERE {where} ORDER BY run_id").fetchall()]


@pytest.mark.parametrize("latest", LATEST)
def test_run_pages_match_the_reference_reading_byte_for_byte(corpus: Any, latest: str) -> None:
    rnd = random.Random(7)
    readable = _ids(corpus, "experiment_id <> '9'") + ["no-such-run"]
    for size in (1, 1, 1, 2, 5, 40, len(readable)):
        for _ in range(8):
            ids = rnd.sample(readable, size)
            expected = orjson.dumps(reference_runs(corpus, ids, latest))
            assert orjson.dumps(reader.runs_json(corpus, ids, latest)) == expected
            # a search page names its experiments (here: all, in some order, some twice)
            experiments = rnd.sample(["0", "1", "2", "3", "9", "1"], 6)
            assert orjson.dumps(reader.runs_json(corpus, ids, latest, experiments)) == expected


def test_a_run_without_its_experiment_row_is_not_readable(corpus: Any) -> None:
    orphans = _ids(corpus, "experiment_id = '9'")
    assert orphans and reader.runs_json(corpus, orphans, "latest_metrics") == []
    assert reader.runs_json(corpus, orphans, "latest_metrics", ["1", "9"]) == []
    assert reader.get_run(corpus, orphans[0], "latest_metrics") is None


def test_a_run_of_a_deleted_experiment_reads_as_deleted(corpus: Any) -> None:
    run_id = _ids(corpus, "experiment_id = '2' AND lifecycle_stage = 'active'")[0]
    assert reader.get_run(corpus, run_id, "latest_metrics")["info"]["lifecycle_stage"] == "deleted"


FILTERS = [None, "metrics.acc > 0.5", "metrics.acc != 0.5", "metrics.`a b` = 0.5", "params.opt = 'adam'",
           "params.opt != 'adam'", "params.opt LIKE 'a%'", "params.opt ILIKE 'a%'", "tags.model LIKE 'resnet%'",
           "tags.team IS NULL", "tags.t IS NOT NULL", "metrics.loss <= 0.5 and tags.team IS NULL",
           "attributes.run_name = 'ü'", "attr.start_time >= 2000", "attributes.end_time < 5500",
           "dataset.name LIKE 'train%'", "datasets.context = 'training'",
           "metrics.acc > 0.5 and params.opt = 'adam' and tags.model LIKE 'resnet%'"]
ORDERS = [[], ["metrics.acc ASC"], ["metrics.acc DESC"], ["params.opt"], ["tags.model DESC"],
          ["start_time ASC"], ["end_time DESC"], ["metrics.loss ASC", "params.lr DESC"], ["status", "metrics.acc"]]
EXPERIMENTS = [["1"], ["0", "1", "2", "3", "9"], ["2"], ["9"], ["3", "0", "3"]]


@pytest.mark.parametrize("latest", LATEST)
@pytest.mark.parametrize("view", [1, 2, 3])
def test_search_statement_matches_the_reference_query(corpus: Any, latest: str, view: int) -> None:
    rnd = random.Random(view)
    cases = ([(f, [], EXPERIMENTS[i % len(EXPERIMENTS)]) for i, f in enumerate(FILTERS)]
             + [(None, o, EXPERIMENTS[i % len(EXPERIMENTS)]) for i, o in enumerate(ORDERS)]
             + [(rnd.choice(FILTERS), rnd.choice(ORDERS), rnd.choice(EXPERIMENTS)) for _ in range(12)])
    for filter_text, order_by, experiment_ids in cases:
        sql, params = search_sql.compile_runs_search(
            search_filter.parse_runs_filter(filter_text), search_filter.parse_runs_order_by(order_by),
            latest, experiment_ids, view)
        got = [row[0] for row in corpus.execute(sql, params).fetchall()]
        assert got == reference_search(corpus, experiment_ids, filter_text, order_by, view, latest), \
            (filter_text, order_by, experiment_ids)


@pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result")  # pytest resets query.reader's filter
@pytest.mark.parametrize("arrow_from", [2048, 1, 7, 8])
def test_search_pages_walk_the_pinned_order(corpus: Any, arrow_from: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # ids arrive as a list, or (arrow_from or more of them) partly as an Arrow array
    monkeypatch.setattr(reader, "_ARROW_FROM", arrow_from)
    cursors = SearchCursors()
    for filter_text in FILTERS[:4]:
        for order_by in ORDERS[:3]:
            body = dict(experiment_ids=["0", "1", "3"], filter_string=filter_text, run_view_type="ALL",
                        max_results=7, order_by=order_by, latest_table="latest_metrics", cursors=cursors)
            page = reader.search_runs(corpus, page_token=None, **body)
            seen = [r["info"]["run_id"] for r in page.get("runs", [])]
            while "next_page_token" in page:
                page = reader.search_runs(corpus, page_token=page["next_page_token"], **body)
                seen += [r["info"]["run_id"] for r in page.get("runs", [])]
            assert seen == reference_search(corpus, ["0", "1", "3"], filter_text, order_by, 3, "latest_metrics")


def test_compile_runs_search_refuses_untrusted_table_names_and_empty_experiments() -> None:
    with pytest.raises(ValueError):
        search_sql.compile_runs_search([], [], "latest_metrics; DROP TABLE runs", ["1"], 1)
    with pytest.raises(ValueError):
        search_sql.compile_runs_search([], [], "latest_metrics", [], 1)


def test_a_parsed_statement_serves_every_cursor_and_thread(corpus: Any) -> None:
    run_ids = _ids(corpus, "experiment_id <> '9'")[:30]
    expected = orjson.dumps(reference_runs(corpus, run_ids, "latest_metrics"))
    single = orjson.dumps(reference_runs(corpus, run_ids[:1], "latest_metrics"))
    failures: list[Any] = []

    def read() -> None:
        with corpus.cursor() as cur:
            for _ in range(20):
                if orjson.dumps(reader.runs_json(cur, run_ids, "latest_metrics", ["0", "1", "2", "3"])) != expected:
                    failures.append("page")
                if orjson.dumps(reader.runs_json(cur, run_ids[:1], "latest_metrics")) != single:
                    failures.append("one")

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result")
def test_the_id_fetch_leaves_the_cursor_usable_at_every_size_boundary(corpus: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reference_search(corpus, ["0", "1", "3"], None, [], 3, "latest_metrics")
    for arrow_from in (len(expected) - 1, len(expected), len(expected) + 1):
        monkeypatch.setattr(reader, "_ARROW_FROM", arrow_from)
        with corpus.cursor() as cur:
            ids = reader._matching_run_ids(cur, ["0", "1", "3"], None, "ALL", [], "latest_metrics")
            assert (ids if isinstance(ids, list) else ids.to_pylist()) == expected
            assert cur.execute("SELECT 1").fetchall() == [(1,)]  # the id query's result is finished
