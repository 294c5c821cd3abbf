"""Comet's API.query predicates, translated into a runs/search filter tree (query.search_tree:
the parser's own `Comparison` leaves joined by AND / OR / NOT), so one compiler
(query.search_sql) answers both dialects; there is no second filter engine.

What comet_ml 3.58 sends (comet_ml/query.py): a list of predicates, ANDed, each
`{source, query: {condition: AND|OR, rules: [...]}, negated?}`, where a rule is
`{field, type, operator, value}` or a nested `{condition, rules}`; OR across sources arrives as
source "nested", each rule naming its own source. `~` is applied by the client itself: it
inverts each operator (`~(x < 1)` arrives as `greater_or_equal`, `~x.contains(s)` as
`not_contains`), so the operator is the truth and `negated` is only a note. The client sends
`~(A & B)` exactly as it sends `~A & ~B` (the AND of the inverted parts), so the server cannot
tell them apart and answers the latter (docs/comet.md).

A test on a field a run does not have is false, negated ones included (`not_contains`,
`not_between`...), as the client's own inverted comparisons (`>=` for `~(<)`) already are.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from runledger.dialects.comet import shapes
from runledger.ingest.errors import BadRequest
from runledger.query.search_filter import Comparison, SearchFilterError
from runledger.query.search_tree import AllOf, AnyOf, Leaf, Node, Not, check

_COMPARE = {"equal": "=", "not_equal": "!=", "less": "<", "less_or_equal": "<=", "greater": ">",
            "greater_or_equal": ">="}
_SUBSTRING = ("contains", "begins_with", "ends_with")
_NEGATED = {"not_contains": "contains", "not_begins_with": "begins_with", "not_ends_with": "ends_with"}
MAX_RULES = 200

# Comet metadata columns -> run attributes (and their Comet type).
METADATA = {
    "experiment_key": ("run_id", "string"),
    "experiment_name": ("run_name", "string"),
    "name": ("run_name", "string"),
    "user_name": ("user_id", "string"),
    "start_server_timestamp": ("start_time", "datetime"),
    "end_server_timestamp": ("end_time", "datetime"),
}


def columns(keys: dict[str, list[tuple[str, bool]]], labels: list[str]) -> list[dict[str, str]]:
    """project/column-names: what the client checks a query's names and types against."""
    out = [{"name": name, "source": "metadata", "type": qtype} for name, (_, qtype) in METADATA.items()]
    out += [{"name": k, "source": "metrics", "type": "double"} for k, _ in keys["metrics"]]
    out += [{"name": k, "source": "params", "type": "double" if numeric else "string"} for k, numeric in keys["params"]]
    out += [{"name": shapes.other_name(k), "source": "log_other", "type": "string"} for k, _ in keys["tags"]]
    out += [{"name": label, "source": "tag", "type": "string"} for label in labels]
    return out


def tree(predicates: list[Any]) -> Node:
    """The filter tree of a project/query request; BadRequest (400) names what cannot be served."""
    budget = [MAX_RULES]
    nodes = []
    for predicate in predicates:
        if not isinstance(predicate, dict) or not isinstance(predicate.get("query"), dict):
            raise BadRequest(f"Malformed predicate: {predicate!r:.200}")
        nodes.append(_group(predicate["query"], predicate.get("source"), budget))
    node = AllOf(tuple(nodes))
    try:
        return check(node)
    except SearchFilterError as e:
        raise BadRequest(f"Query cannot be served: {e}") from None


def _group(query: dict[str, Any], source: Any, budget: list[int]) -> Node:
    rules = query.get("rules")
    condition = query.get("condition", "AND")
    if not isinstance(rules, list) or condition not in ("AND", "OR"):
        raise BadRequest("Malformed predicate: a group needs 'condition' AND or OR and a list of 'rules'.")
    children = []
    for rule in rules:
        if not isinstance(rule, dict):
            raise BadRequest(f"Malformed rule: {rule!r:.200}")
        budget[0] -= 1
        if budget[0] < 0:
            raise BadRequest(f"Query too large: at most {MAX_RULES} rules.")
        if "condition" in rule:
            children.append(_group(rule, rule.get("source", source), budget))
        else:
            children.append(_rule(rule, rule.get("source", source)))
    return AnyOf(tuple(children)) if condition == "OR" else AllOf(tuple(children))


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"Query on '{field}' needs a number, got {value!r:.100}.")
    try:
        return float(value)
    except ValueError:
        raise BadRequest(f"Query on '{field}' needs a number, got {value!r:.100}.") from None


def _millis(value: Any, field: str) -> float:
    """A datetime as comet_ml sends it (`datetime.isoformat(" ")`, read as UTC) or a number of ms."""
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return _number(value, field)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return float(int(when.timestamp() * 1000))
    return _number(value, field)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rule(rule: dict[str, Any], source: Any) -> Node:
    field, op, value = rule.get("field"), rule.get("operator"), rule.get("value")
    if not isinstance(field, str) or not isinstance(op, str):
        raise BadRequest(f"Malformed rule: {rule!r:.200}")
    if source == "tag":   # Tag("x"): the run carries the label x
        if op in ("equal", "is_not_null"):
            return Leaf(Comparison("label", "", "=", field))
        if op in ("not_equal", "is_null"):
            return Not(Leaf(Comparison("label", "", "=", field)))
        raise BadRequest(f"Operator '{op}' does not apply to a tag.")
    if source == "metrics":
        return _compare("metric", field, op, value, numeric=True)
    if source == "params":
        return _compare("param", field, op, value, numeric=_is_number(value) or op in ("between", "not_between"))
    if source == "log_other":
        return _compare("tag", shapes.tag_key_of_other(field), op, value, numeric=False)
    if source == "metadata":
        if field not in METADATA:
            raise BadRequest(f"No metadata column '{field}'; known: {sorted(METADATA)}.")
        column, ctype = METADATA[field]
        if ctype == "datetime" and op not in ("is_null", "is_not_null"):
            if op in ("between", "not_between"):
                if not isinstance(value, list) or len(value) != 2:
                    raise BadRequest(f"between on '{field}' needs [low, high].")
                value = [_millis(v, field) for v in value]
            else:
                value = _millis(value, field)
            return _compare("attribute", column, op, value, numeric=True)
        return _compare("attribute", column, op, value, numeric=False)
    raise BadRequest(f"Query source '{source}' is not supported by this server (served: metrics, params, "
                     "log_other, tag, metadata).")


def _regex_literal(text: str) -> str:
    """`text` as an RE2 pattern matching itself (only RE2's metacharacters are escaped)."""
    return "".join("\\" + ch if ch in r"\.^$|?*+()[]{}" else ch for ch in text)


def _present(entity: str, key: str) -> Node:
    return Leaf(Comparison(entity, key, "IS NOT NULL", None))


def _compare(entity: str, key: str, op: str, value: Any, *, numeric: bool) -> Node:
    if op in ("between", "not_between"):
        if not isinstance(value, list) or len(value) != 2:
            raise BadRequest(f"between on '{key}' needs [low, high].")
        low, high = (_number(v, key) for v in value)
        if op == "between":
            return AllOf((Leaf(Comparison(entity, key, ">=", low)), Leaf(Comparison(entity, key, "<=", high))))
        return AnyOf((Leaf(Comparison(entity, key, "<", low)), Leaf(Comparison(entity, key, ">", high))))
    if op in _COMPARE:
        if numeric:
            return Leaf(Comparison(entity, key, _COMPARE[op], _number(value, key)))
        if entity == "metric":
            raise BadRequest(f"Metric '{key}' compares with numbers only.")
        if op not in ("equal", "not_equal"):
            raise BadRequest(f"'{op}' on '{key}' needs a number (text has no order here).")
        return Leaf(Comparison(entity, key, _COMPARE[op], value if isinstance(value, str) else str(value)))
    positive = _NEGATED.get(op, op)
    if positive in _SUBSTRING:
        if entity == "metric" or not isinstance(value, str):
            raise BadRequest(f"'{op}' on '{key}' needs a string column and a string value.")
        pattern = _regex_literal(value)
        pattern = {"begins_with": "^" + pattern, "ends_with": pattern + "$"}.get(positive, pattern)
        test = Leaf(Comparison(entity, key, "REGEX", pattern))
        if positive == op:
            return test
        return AllOf((_present(entity, key), Not(test)))
    if op in ("is_null", "is_not_null"):
        return Leaf(Comparison(entity, key, "IS NULL" if op == "is_null" else "IS NOT NULL", None))
    if op in ("is_empty", "is_not_empty"):
        if entity == "metric":
            raise BadRequest(f"Operator '{op}' does not apply to metric '{key}'.")
        return Leaf(Comparison(entity, key, "=" if op == "is_empty" else "!=", ""))
    raise BadRequest(f"Unknown query operator '{op}'.")
