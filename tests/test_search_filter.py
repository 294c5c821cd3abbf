"""Table-driven tests for query.search_filter (parsing only, no SQL)."""

from __future__ import annotations

import dataclasses

import pytest

from runledger.query.search_filter import (
    Comparison,
    OrderTerm,
    SearchFilterError,
    parse_experiments_filter,
    parse_experiments_order_by,
    parse_runs_filter,
    parse_runs_order_by,
)


def one(text: str) -> Comparison:
    parsed = parse_runs_filter(text)
    assert len(parsed) == 1, parsed
    return parsed[0]


def rejects(text: str, fragment: str = "") -> None:
    with pytest.raises(SearchFilterError) as info:
        parse_runs_filter(text)
    assert fragment in str(info.value)


# --- empty input -----------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_empty_filter_matches_everything(text):
    assert parse_runs_filter(text) == []
    assert parse_experiments_filter(text) == []


def test_error_type_is_a_value_error():
    assert issubclass(SearchFilterError, ValueError)


def test_parsed_terms_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        one("metrics.a > 1").key = "b"


# --- entities --------------------------------------------------------------


@pytest.mark.parametrize(
    "text, entity",
    [
        ("metric.a > 1", "metric"),
        ("metrics.a > 1", "metric"),
        ("param.a = 'x'", "param"),
        ("params.a = 'x'", "param"),
        ("parameter.a = 'x'", "param"),
        ("parameters.a = 'x'", "param"),
        ("tag.a = 'x'", "tag"),
        ("tags.a = 'x'", "tag"),
        ("attribute.status = 'x'", "attribute"),
        ("attributes.status = 'x'", "attribute"),
        ("attr.status = 'x'", "attribute"),
        ("run.status = 'x'", "attribute"),
        ("status = 'x'", "attribute"),
        ("dataset.name = 'x'", "dataset"),
        ("datasets.name = 'x'", "dataset"),
        ("`metrics`.a > 1", "metric"),
        ("`params`.`a` = 'x'", "param"),
    ],
)
def test_entity_alias_resolves_to_canonical_entity(text, entity):
    assert one(text).entity == entity


@pytest.mark.parametrize("text", ["foo.a = 'x'", "Metrics.a > 1", "`bogus`.a = 'x'"])
def test_unknown_entity_is_rejected_by_name(text):
    rejects(text, "Invalid entity type")


# --- comparators per entity ------------------------------------------------

NUMERIC_OPS = ["=", "!=", ">", ">=", "<", "<="]


@pytest.mark.parametrize("op", NUMERIC_OPS)
def test_metric_accepts_numeric_comparator(op):
    assert one(f"metrics.acc {op} 0.5") == Comparison("metric", "acc", op, 0.5)


@pytest.mark.parametrize(
    "text", ["metrics.a LIKE 1", "metrics.a ILIKE 1", "metrics.a IS NULL", "metrics.a IN ('1')", "metrics.a == 1"]
)
def test_metric_rejects_non_numeric_comparator(text):
    rejects(text, "Invalid comparator")


@pytest.mark.parametrize("entity", ["params", "tags"])
@pytest.mark.parametrize("op", ["=", "!=", "LIKE", "ILIKE"])
def test_param_and_tag_accept_string_comparator(entity, op):
    c = one(f"{entity}.k {op} 'v'")
    assert (c.op, c.value) == (op, "v")


@pytest.mark.parametrize("entity", ["params", "tags"])
@pytest.mark.parametrize("op", ["IS NULL", "IS NOT NULL"])
def test_param_and_tag_accept_null_comparator_without_value(entity, op):
    c = one(f"{entity}.k {op}")
    assert (c.op, c.value) == (op, None)


@pytest.mark.parametrize("entity", ["params", "tags"])
@pytest.mark.parametrize("clause", ["> '1'", ">= '1'", "< '1'", "<= '1'", "IN ('1')", "NOT IN ('1')", "NOT LIKE '1'"])
def test_param_and_tag_reject_numeric_and_list_comparator(entity, clause):
    rejects(f"{entity}.k {clause}", "Invalid comparator")


@pytest.mark.parametrize("key", ["run_id", "run_name", "user_id", "status", "artifact_uri"])
@pytest.mark.parametrize("op", ["=", "!=", "LIKE", "ILIKE"])
def test_string_attribute_accepts_string_comparator(key, op):
    assert one(f"attributes.{key} {op} 'v'") == Comparison("attribute", key, op, "v")


@pytest.mark.parametrize("key", ["run_name", "user_id", "status", "artifact_uri"])
@pytest.mark.parametrize("op", ["IN", "NOT IN"])
def test_list_comparator_is_only_for_run_id(key, op):
    rejects(f"{key} {op} ('a')", f"Invalid comparator '{op}'")


@pytest.mark.parametrize("op", ["IN", "NOT IN"])
def test_run_id_accepts_list_comparator(op):
    assert one(f"run_id {op} ('a', 'b')") == Comparison("attribute", "run_id", op, ("a", "b"))


@pytest.mark.parametrize("key", ["status", "run_id"])
@pytest.mark.parametrize("clause", ["> 'a'", "IS NULL", "IS NOT NULL"])
def test_string_attribute_rejects_numeric_and_null_comparator(key, clause):
    rejects(f"{key} {clause}", "Invalid comparator")


@pytest.mark.parametrize("key", ["start_time", "end_time"])
@pytest.mark.parametrize("op", NUMERIC_OPS)
def test_numeric_attribute_accepts_numeric_comparator(key, op):
    assert one(f"attributes.{key} {op} 1700000000000") == Comparison("attribute", key, op, 1.7e12)


@pytest.mark.parametrize("clause", ["LIKE '1'", "IN ('1')", "IS NULL"])
def test_numeric_attribute_rejects_string_comparator(clause):
    rejects(f"start_time {clause}", "Invalid comparator")


@pytest.mark.parametrize("key", ["name", "digest", "context"])
@pytest.mark.parametrize("op", ["=", "!=", "LIKE", "ILIKE"])
def test_dataset_accepts_string_comparator(key, op):
    assert one(f"datasets.{key} {op} 'v'") == Comparison("dataset", key, op, "v")


@pytest.mark.parametrize("op", ["IN", "NOT IN"])
def test_dataset_accepts_list_comparator(op):
    assert one(f"datasets.context {op} ('train', 'eval')").value == ("train", "eval")


@pytest.mark.parametrize("clause", ["IS NULL", "> 'a'"])
def test_dataset_rejects_null_and_numeric_comparator(clause):
    rejects(f"datasets.context {clause}", "Invalid comparator")


def test_unknown_dataset_key_is_rejected():
    rejects("datasets.profile = 'x'", "Invalid dataset key 'profile'")


@pytest.mark.parametrize(
    "text, op",
    [("params.a like 'x'", "LIKE"), ("params.a iLike 'x'", "ILIKE"), ("params.a is not null", "IS NOT NULL"),
     ("params.a Is Null", "IS NULL"), ("run_id not in ('x')", "NOT IN"), ("run_id in ('x')", "IN")],
)
def test_comparator_keywords_are_case_insensitive_and_normalised(text, op):
    assert one(text).op == op


def test_comparator_without_spaces_is_accepted():
    assert one("metrics.a>=-1") == Comparison("metric", "a", ">=", -1.0)


# --- attributes ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("created > 1", "start_time"),
        ("Created > 1", "start_time"),
        ("attr.created > 1", "start_time"),
        ('"run name" = \'x\'', "run_name"),
        ('"Run name" = \'x\'', "run_name"),
        ("`Run Name` = 'x'", "run_name"),
        ("attributes.`Run Name` = 'x'", "run_name"),
    ],
)
def test_attribute_alias_is_canonicalised(text, key):
    assert one(text).key == key


@pytest.mark.parametrize("text", ["attributes.bogus = 'x'", "name = 'x'", "Status = 'x'"])
def test_unknown_attribute_is_rejected(text):
    rejects(text, "Invalid attribute key")


@pytest.mark.parametrize("text", ["experiment_id = '1'", "attributes.lifecycle_stage = 'active'"])
def test_unfilterable_run_attribute_is_rejected(text):
    rejects(text, "cannot be used")


# --- quoting ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ('metrics."cross-entropy" > 1', "cross-entropy"),
        ("metrics.`cross-entropy` > 1", "cross-entropy"),
        ('metrics."my metric" > 1', "my metric"),
        ("tags.`mlflow.runName` = 'x'", "mlflow.runName"),
        ("tags.mlflow.runName = 'x'", "mlflow.runName"),
        ('metrics."1st" > 1', "1st"),
        ("metrics.1st > 1", "1st"),
        ("metrics.`a``b` > 1", "a`b"),
        ("metrics.métrique > 1", "métrique"),
    ],
)
def test_key_quoting_style_is_unwrapped(text, key):
    assert one(text).key == key


def test_single_quoted_key_is_rejected():
    rejects("metrics.'a' > 1", "Invalid key")


@pytest.mark.parametrize(
    "text, value",
    [
        ("params.p = 'x y'", "x y"),
        ('params.p = "x y"', "x y"),
        ('params.p = "it\'s"', "it's"),
        ("params.p = 'say \"hi\"'", 'say "hi"'),
        ("params.p = 'it''s'", "it's"),
        ("params.p = ''", ""),
        ("params.p = 'C:\\data'", "C:\\data"),
        ("params.p = 'a AND b OR c'", "a AND b OR c"),
    ],
)
def test_string_literal_quoting_style_is_unwrapped(text, value):
    assert one(text).value == value


@pytest.mark.parametrize(
    "text",
    ["params.p = abc", "params.p = 1", "tags.t = `abc`", "status = RUNNING", "datasets.name = 1"],
)
def test_string_entity_requires_quoted_value(text):
    rejects(text, "Expected a quoted string")


@pytest.mark.parametrize("text", ["metrics.a > '1'", 'metrics.a > "1"', "start_time > '1'", "metrics.a > abc"])
def test_numeric_entity_requires_unquoted_number(text):
    rejects(text, "Expected an unquoted numeric value")


# --- numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "literal, value",
    [("1", 1.0), ("-1", -1.0), ("0.25", 0.25), ("-0.25", -0.25), (".5", 0.5), ("1.", 1.0),
     ("1e-3", 0.001), ("-2.5E+2", -250.0), ("1700000000000", 1.7e12)],
)
def test_number_literal_becomes_float(literal, value):
    parsed = one(f"metrics.a = {literal}").value
    assert isinstance(parsed, float) and parsed == value


def test_number_with_plus_sign_is_rejected():
    rejects("metrics.a > +1")


# --- IN lists --------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("run_id IN ('a')", ("a",)),
        ("run_id IN ('a', \"b\", 'c')", ("a", "b", "c")),
        ("run_id IN ('a',)", ("a",)),
        ("run_id IN('a','b')", ("a", "b")),
    ],
)
def test_in_list_becomes_tuple_of_strings(text, value):
    assert one(text).value == value


@pytest.mark.parametrize(
    "text, fragment",
    [("run_id IN ()", "at least one"), ("run_id IN (a)", "quoted string"), ("run_id IN (1, 2)", "quoted string"),
     ("run_id IN 'a'", "parenthesised list"), ("run_id IN ('a' 'b')", "Expected ','"), ("run_id IN ('a'", "Expected ','")],
)
def test_malformed_in_list_is_rejected(text, fragment):
    rejects(text, fragment)


# --- boolean structure -----------------------------------------------------


def test_comparisons_joined_by_and_are_all_returned():
    parsed = parse_runs_filter("metrics.a > 1 and params.p = 'x' AND tags.t IS NULL aNd status != 'X'")
    assert [c.entity for c in parsed] == ["metric", "param", "tag", "attribute"]


@pytest.mark.parametrize("text", ["metrics.a > 1 AND", "metrics.a > 1 and ", "AND metrics.a > 1", "metrics.a > 1 AND AND metrics.b < 2"])
def test_stray_and_is_tolerated(text):
    assert parse_runs_filter(text)[0] == Comparison("metric", "a", ">", 1.0)


@pytest.mark.parametrize("text", ["metrics.a > 1 OR metrics.b > 1", "metrics.a > 1 or metrics.b > 1"])
def test_or_is_rejected_naming_or(text):
    rejects(text, "Invalid clause(s) in filter string: 'OR'")


@pytest.mark.parametrize("text", ["(metrics.a > 1)", "metrics.a > 1 AND (metrics.b > 1)"])
def test_parentheses_are_rejected(text):
    rejects(text, "'('")


@pytest.mark.parametrize("text", ["NOT metrics.a > 1", "metrics.a > 1 AND NOT params.p = 'x'"])
def test_not_prefix_is_rejected(text):
    rejects(text, "'NOT'")


def test_comparisons_without_and_are_rejected():
    rejects("metrics.a > 1 params.p = 'x'", "joined with AND")


@pytest.mark.parametrize(
    "text, fragment",
    [("params.p = 'abc", "Unterminated"), ("tags.`abc = 'x'", "Unterminated"), ("metrics.a > 1;", "';'"),
     ("metrics.a-b > 1", "'-'"), ("metrics.a >", "Missing value"), ("metrics.a", "comparator"),
     ("metrics. > 1", "Invalid key"), ("metrics.a = 1 2", "'2'"), ("'a' = 'a'", "expected an identifier")],
)
def test_malformed_clause_is_rejected_naming_the_piece(text, fragment):
    rejects(text, fragment)


# --- experiments filter ----------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name = 'x'", Comparison("attribute", "name", "=", "x")),
        ("attribute.name LIKE 'x%'", Comparison("attribute", "name", "LIKE", "x%")),
        ("name ILIKE 'x%'", Comparison("attribute", "name", "ILIKE", "x%")),
        ("name != 'x'", Comparison("attribute", "name", "!=", "x")),
        ("experiment_id = '1'", Comparison("attribute", "experiment_id", "=", "1")),
        ("experiment_id IN ('1', '2')", Comparison("attribute", "experiment_id", "IN", ("1", "2"))),
        ("experiment_id NOT IN ('1')", Comparison("attribute", "experiment_id", "NOT IN", ("1",))),
        ("creation_time >= 5", Comparison("attribute", "creation_time", ">=", 5.0)),
        ("last_update_time < 5", Comparison("attribute", "last_update_time", "<", 5.0)),
        ("tag.k = 'v'", Comparison("tag", "k", "=", "v")),
        ("tags.k ILIKE 'v'", Comparison("tag", "k", "ILIKE", "v")),
        ("tags.`k k` IS NULL", Comparison("tag", "k k", "IS NULL", None)),
        ("tags.k IS NOT NULL", Comparison("tag", "k", "IS NOT NULL", None)),
    ],
)
def test_experiments_filter_accepts_documented_term(text, expected):
    assert parse_experiments_filter(text) == [expected]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("attributes.name = 'x'", "Invalid entity type 'attributes'"),
        ("metrics.a > 1", "Invalid entity type 'metrics'"),
        ("params.a = 'x'", "Invalid entity type 'params'"),
        ("status = 'x'", "Invalid attribute key 'status'"),
        ("name IN ('a')", "Invalid comparator 'IN'"),
        ("experiment_id LIKE '1%'", "Invalid comparator 'LIKE'"),
        ("name IS NULL", "Invalid comparator 'IS NULL'"),
        ("creation_time LIKE '1'", "Invalid comparator 'LIKE'"),
        ("creation_time > 1.5", "integer"),
        ("creation_time > '1'", "unquoted numeric"),
        ("name = 'a' OR name = 'b'", "'OR'"),
    ],
)
def test_experiments_filter_rejects_term(text, fragment):
    with pytest.raises(SearchFilterError) as info:
        parse_experiments_filter(text)
    assert fragment in str(info.value)


# --- order_by --------------------------------------------------------------


@pytest.mark.parametrize("items", [None, []])
def test_no_order_by_gives_no_terms(items):
    assert parse_runs_order_by(items) == []
    assert parse_experiments_order_by(items) == []


@pytest.mark.parametrize(
    "item, term",
    [
        ("metrics.acc", OrderTerm("metric", "acc", True)),
        ("metrics.acc ASC", OrderTerm("metric", "acc", True)),
        ("metrics.acc desc", OrderTerm("metric", "acc", False)),
        ("metrics.`a b` DESC", OrderTerm("metric", "a b", False)),
        ('params."a.b" asc', OrderTerm("param", "a.b", True)),
        ("tags.mlflow.runName", OrderTerm("tag", "mlflow.runName", True)),
        ("created DESC", OrderTerm("attribute", "start_time", False)),
        ("attributes.end_time", OrderTerm("attribute", "end_time", True)),
        ("run_name", OrderTerm("attribute", "run_name", True)),
    ],
)
def test_runs_order_by_item_is_parsed(item, term):
    assert parse_runs_order_by([item]) == [term]


def test_runs_order_by_keeps_item_order():
    terms = parse_runs_order_by(["metrics.a DESC", "params.p", "start_time ASC"])
    assert [(t.entity, t.key) for t in terms] == [("metric", "a"), ("param", "p"), ("attribute", "start_time")]


@pytest.mark.parametrize(
    "items, fragment",
    [
        (["metrics.a DESC x"], "unexpected 'x'"),
        (["metrics.a sideways"], "expected ASC or DESC"),
        (["metrics.a", "metrics.a DESC"], "duplicate"),
        (["created", "start_time DESC"], "duplicate"),
        (["datasets.name"], "cannot order runs by dataset"),
        (["experiment_id"], "cannot be used"),
        (["bogus"], "Invalid attribute key"),
        ([""], "empty"),
        (["metrics.a OR"], "expected ASC or DESC"),
    ],
)
def test_invalid_runs_order_by_is_rejected(items, fragment):
    with pytest.raises(SearchFilterError) as info:
        parse_runs_order_by(items)
    assert fragment in str(info.value)


@pytest.mark.parametrize("key", ["name", "experiment_id", "creation_time", "last_update_time"])
def test_experiments_order_by_accepts_attribute(key):
    assert parse_experiments_order_by([f"{key} DESC"]) == [OrderTerm("attribute", key, False)]


@pytest.mark.parametrize(
    "items, fragment",
    [(["tags.k"], "cannot order experiments by tag"), (["status"], "Invalid attribute key"),
     (["name", "name DESC"], "duplicate"), (["name up"], "expected ASC or DESC")],
)
def test_invalid_experiments_order_by_is_rejected(items, fragment):
    with pytest.raises(SearchFilterError) as info:
        parse_experiments_order_by(items)
    assert fragment in str(info.value)
