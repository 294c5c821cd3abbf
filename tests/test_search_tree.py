"""Boolean filter trees (query.search_tree): Mongo-style documents parsed into trees of the MLflow
parser's comparisons and compiled by query.search_sql, run on a real in-memory DuckDB."""

from __future__ import annotations

import pytest

from runledger.query.search_filter import Comparison, SearchFilterError, parse_runs_filter
from runledger.query.search_sql import compile_runs_tree_where, compile_runs_where
from runledger.query.search_tree import AllOf, AnyOf, Leaf, Not, from_comparisons, parse_mongo
from tests.test_search_sql import INJECTION, db  # noqa: F401  (the fixture: a real DuckDB corpus)


def matching(con, doc, table: str = "latest_metrics") -> list[str]:
    where, params = compile_runs_tree_where(parse_mongo(doc), table)
    return [r[0] for r in con.execute(f"SELECT r.run_id FROM runs r WHERE {where} ORDER BY r.run_id",
                                      params).fetchall()]


def test_or_matches_either_side(db) -> None:
    assert matching(db, {"$or": [{"params.opt": "Adam"}, {"status": "FAILED"}]}) == ["r1", "r3"]


def test_nor_is_the_negation_of_or(db) -> None:
    assert matching(db, {"$nor": [{"params.opt": "Adam"}, {"status": "FAILED"}]}) == ["r2", "r4"]


def test_ne_matches_runs_without_the_field(db) -> None:
    # Mongo's $ne: r3 has no "opt" param and still is "not Adam"
    assert matching(db, {"params.opt": {"$ne": "Adam"}}) == ["r2", "r3", "r4"]


def test_negation_of_a_null_attribute_comparison_is_true(db) -> None:
    # r2 is running (end_time NULL): "end_time > 2200" is unknown, its negation matches
    assert matching(db, {"$not": {"attributes.end_time": {"$gt": 2200}}}) == ["r1", "r2"]


def test_in_and_nin_on_an_attribute(db) -> None:
    assert matching(db, {"status": {"$in": ["FAILED", "RUNNING"]}}) == ["r2", "r3"]
    assert matching(db, {"status": {"$nin": ["FAILED", "RUNNING"]}}) == ["r1", "r4"]


def test_in_on_metrics_never_matches_nan(db) -> None:
    assert matching(db, {"metrics.acc": {"$in": [0.9, 0.5]}}) == ["r1", "r3"]
    assert matching(db, {"metrics.acc": {"$nin": [0.9]}}) == ["r2", "r3", "r4"]


def test_numbers_compare_with_params_numerically(db) -> None:
    # "0.1" > "0.01" > "0.001" as numbers; "it's" is not a number and never matches
    assert matching(db, {"params.lr": {"$gte": 0.01}}) == ["r1", "r2"]
    assert matching(db, {"params.lr": 0.1}) == ["r2"]
    assert matching(db, {"params.lr": {"$in": [0.001, "it's"]}}) == ["r3", "r4"]


def test_regex_matches_anywhere_in_the_text(db) -> None:
    assert matching(db, {"tags.team": {"$regex": "^[Vv]is"}}) == ["r1", "r3"]
    assert matching(db, {"attributes.artifact_uri": {"$regex": "s3://.*/r[14]$"}}) == ["r1", "r4"]


def test_exists_tests_presence_of_params_tags_and_metrics(db) -> None:
    assert matching(db, {"params.opt": {"$exists": True}}) == ["r1", "r2", "r4"]
    assert matching(db, {"tags.team": {"$exists": False}}) == ["r2", "r4"]
    assert matching(db, {"metrics.acc": {"$exists": False}}) == ["r4"]
    assert matching(db, {"attributes.end_time": {"$exists": False}}) == ["r2"]


def test_labels_are_tags_with_an_empty_value(db) -> None:
    db.executemany("INSERT INTO tags VALUES (?, ?, '')", [("r1", "baseline"), ("r3", "sweep"),
                                                         ("r4", "mlflow.note")])
    assert matching(db, {"labels": "baseline"}) == ["r1"]
    assert matching(db, {"labels": {"$in": ["sweep", "baseline"]}}) == ["r1", "r3"]
    assert matching(db, {"labels": {"$nin": ["baseline"]}}) == ["r2", "r3", "r4"]
    assert matching(db, {"labels": {"$exists": False}}) == ["r2", "r4"]  # mlflow.* tags are no labels


def test_values_with_quotes_travel_as_parameters(db) -> None:
    assert matching(db, {"params.opt": INJECTION}) == ["r4"]
    assert matching(db, {"params.opt": {"$regex": INJECTION}}) == ["r4"]


def test_an_and_only_tree_agrees_with_the_filter_string(db) -> None:
    text = "metrics.loss < 0.25 and params.lr != '0.1' and tags.team ILIKE 'vis%'"
    where, params = compile_runs_where(parse_runs_filter(text), "latest_metrics")
    plain = [r[0] for r in db.execute(f"SELECT r.run_id FROM runs r WHERE {where} ORDER BY 1", params).fetchall()]
    where, params = compile_runs_tree_where(from_comparisons(parse_runs_filter(text)), "latest_metrics")
    tree = [r[0] for r in db.execute(f"SELECT r.run_id FROM runs r WHERE {where} ORDER BY 1", params).fetchall()]
    assert tree == plain == ["r1", "r3"]


def test_trees_nest(db) -> None:
    doc = {"$and": [{"$or": [{"metrics.loss": {"$lt": 0.15}}, {"metrics.loss": {"$gt": 0.25}}]},
                    {"$not": {"tags.t": "b"}}]}
    assert matching(db, doc) == ["r1", "r4"]
    built = AllOf((AnyOf((Leaf(Comparison("metric", "loss", "<", 0.15)), Leaf(Comparison("metric", "loss", ">", 0.25)))),
                   Not(Leaf(Comparison("tag", "t", "=", "b")))))
    assert parse_mongo(doc) == built


def test_empty_document_matches_every_run(db) -> None:
    assert matching(db, {}) == ["r1", "r2", "r3", "r4"]


@pytest.mark.parametrize("doc, fragment", [
    ({"metrics.loss": {"$regex": "x"}}, "does not apply to the number"),
    ({"metrics.loss": "low"}, "Expected a number"),
    ({"params.lr": {"$in": []}}, "non-empty list"),
    ({"params.lr": {"$exists": "yes"}}, "true or false"),
    ({"params.lr": {"$near": 1}}, "Unknown operator"),
    ({"$xor": []}, "Unknown top-level operator"),
    ({"bogus.lr": 1}, "Invalid entity type"),
    ({"attributes.experiment_id": "1"}, "cannot be used"),
    ({"tags.t": {"$regex": "("}}, "Invalid regular expression"),
    ({"params.lr": {"$gt": "a"}}, "needs a number"),
    ({"tags.t": {"$regex": "^(?!x)"}}, "RE2"),
    ({"tags.t": {"$regex": "(a)\\1"}}, "RE2"),
    ([1], "JSON object"),
])
def test_malformed_documents_are_refused_with_a_clear_message(doc, fragment: str) -> None:
    with pytest.raises(SearchFilterError, match=fragment):
        parse_mongo(doc)


def test_deep_documents_are_refused() -> None:
    doc: dict = {"params.a": "x"}
    for _ in range(40):
        doc = {"$not": doc}
    with pytest.raises(SearchFilterError, match="too large"):
        parse_mongo(doc)
