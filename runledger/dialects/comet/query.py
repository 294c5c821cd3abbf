"""Comet's API.query predicates, translated into runs/search's comparisons (query.search_filter's
`Comparison`), so one compiler (query.search_sql) answers both dialects.

What comet_ml 3.58 sends (comet_ml/query.py): a list of predicates, ANDed, each
`{source, query: {condition, rules: [{field, type, operator, value}]}, negated?}`. `~` is
applied by the client itself: it inverts each operator (`~(x < 1)` arrives as
`greater_or_equal` with `negated: true`), so the operator is the truth and `negated` is only a
note. The client sends `~(A & B)` exactly as it sends `~A & ~B` (both become the AND of the
inverted parts), so the server cannot tell them apart and answers the latter.

runs/search's grammar is AND-only and has no negated substring or range test, so OR (`|`,
Comet's "nested" source), `not_contains`, `not_begins_with`, `not_ends_with` and `not_between`
are refused with a 400 naming the operator, never answered approximately.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from runledger.dialects.comet import shapes
from runledger.ingest.errors import BadRequest
from runledger.query.search_filter import Comparison

_COMPARE = {"equal": "=", "not_equal": "!=", "less": "<", "less_or_equal": "<=", "greater": ">",
            "greater_or_equal": ">="}
_SUBSTRING = {"contains": "CONTAINS", "begins_with": "STARTS_WITH", "ends_with": "ENDS_WITH"}
_UNSUPPORTED = {"not_contains", "not_begins_with", "not_ends_with", "not_between"}

# Comet metadata columns -> run attributes (and their Comet type).
METADATA = {
    "experiment_key": ("run_id", "string"),
    "experiment_name": ("run_name", "string"),
    "name": ("run_name", "string"),
    "user_name": ("user_id", "string"),
    "start_server_timestamp": ("start_time", "datetime"),
    "end_server_timestamp": ("end_time", "datetime"),
}


def columns(keys: dict[str, list[tuple[str, bool]]]) -> list[dict[str, str]]:
    """project/column-names: what the client checks a query's names and types against."""
    out = [{"name": name, "source": "metadata", "type": qtype} for name, (_, qtype) in METADATA.items()]
    out += [{"name": k, "source": "metrics", "type": "double"} for k, _ in keys["metrics"]]
    out += [{"name": k, "source": "params", "type": "double" if numeric else "string"} for k, numeric in keys["params"]]
    for k, numeric in keys["tags"]:
        if shapes.is_label(k):
            label = k[len(shapes.LABEL_PREFIX):]
            out.append({"name": label, "source": "tag", "type": "string"})
        else:
            out.append({"name": shapes.other_name(k), "source": "log_other", "type": "double" if numeric else "string"})
    return out


def comparisons(predicates: list[Any]) -> list[Comparison]:
    found: list[Comparison] = []
    for predicate in predicates:
        if not isinstance(predicate, dict) or not isinstance(predicate.get("query"), dict):
            raise BadRequest(f"Malformed predicate: {predicate!r:.200}")
        source = predicate.get("source")
        if source == "nested":
            raise BadRequest("OR ('|') across query variables is not supported by this server: runs/search's "
                             "filter is AND-only. Run one query per alternative.")
        _rules(predicate["query"], source, found)
    return found


def _rules(query: dict[str, Any], source: Any, out: list[Comparison]) -> None:
    rules = query.get("rules")
    if not isinstance(rules, list):
        raise BadRequest("Malformed predicate: 'rules' must be a list.")
    if query.get("condition", "AND") != "AND" and len(rules) > 1:
        raise BadRequest("OR ('|') in a query is not supported by this server: runs/search's filter is AND-only. "
                         "Run one query per alternative.")
    for rule in rules:
        if not isinstance(rule, dict):
            raise BadRequest(f"Malformed rule: {rule!r:.200}")
        if "condition" in rule:
            _rules(rule, source, out)
        else:
            out.extend(_rule(rule, rule.get("source", source)))


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


def _rule(rule: dict[str, Any], source: Any) -> list[Comparison]:
    field, op, value, qtype = rule.get("field"), rule.get("operator"), rule.get("value"), rule.get("type")
    if not isinstance(field, str) or not isinstance(op, str):
        raise BadRequest(f"Malformed rule: {rule!r:.200}")
    if op in _UNSUPPORTED:
        raise BadRequest(f"Operator '{op}' (a negated test) is not supported by this server: runs/search's "
                         "grammar has no negated substring or range test.")
    if source == "tag":   # Tag("x"): the run carries the label x
        if op in ("equal", "is_not_null"):
            return [Comparison("tag", shapes.LABEL_PREFIX + field, "IS NOT NULL", None)]
        if op in ("not_equal", "is_null"):
            return [Comparison("tag", shapes.LABEL_PREFIX + field, "IS NULL", None)]
        raise BadRequest(f"Operator '{op}' does not apply to a tag.")
    if source == "metrics":
        return _compare("metric", field, op, value, numeric=True)
    if source == "params":
        return _compare("param", field, op, value, numeric=_is_number(value) and op in _COMPARE or op == "between")
    if source == "log_other":
        return _compare("tag", shapes.tag_key_of_other(field), op, value,
                        numeric=_is_number(value) and op in _COMPARE or op == "between")
    if source == "metadata":
        if field not in METADATA:
            raise BadRequest(f"No metadata column '{field}'; known: {sorted(METADATA)}.")
        column, ctype = METADATA[field]
        if op in ("is_null", "is_not_null", "is_empty", "is_not_empty"):
            raise BadRequest(f"Operator '{op}' is not supported on metadata.")
        if ctype == "datetime":
            values = value if op == "between" else [value]
            if not isinstance(values, list) or not values:
                raise BadRequest(f"Malformed value for '{field}'.")
            converted = [_millis(v, field) for v in values]
            return _compare("attribute", column, op, converted if op == "between" else converted[0], numeric=True)
        return _compare("attribute", column, op, value, numeric=False)
    raise BadRequest(f"Query source '{source}' is not supported by this server (served: metrics, params, "
                     "log_other, tag, metadata).")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compare(entity: str, key: str, op: str, value: Any, *, numeric: bool) -> list[Comparison]:
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise BadRequest(f"between on '{key}' needs [low, high].")
        low, high = (_number(v, key) for v in value)
        return [Comparison(entity, key, ">=", low), Comparison(entity, key, "<=", high)]
    if op in _COMPARE:
        if numeric:
            return [Comparison(entity, key, _COMPARE[op], _number(value, key))]
        if entity == "metric":
            raise BadRequest(f"Metric '{key}' compares with numbers only.")
        return [Comparison(entity, key, _COMPARE[op], str(value))]
    if op in _SUBSTRING:
        if entity == "metric" or not isinstance(value, str):
            raise BadRequest(f"'{op}' on '{key}' needs a string column and a string value.")
        return [Comparison(entity, key, _SUBSTRING[op], value)]
    if op in ("is_null", "is_not_null"):
        if entity not in ("param", "tag"):
            raise BadRequest(f"Operator '{op}' is not supported on {entity} '{key}'.")
        return [Comparison(entity, key, "IS NULL" if op == "is_null" else "IS NOT NULL", None)]
    if op in ("is_empty", "is_not_empty"):
        if entity == "metric":
            raise BadRequest(f"Operator '{op}' does not apply to metric '{key}'.")
        return [Comparison(entity, key, "=" if op == "is_empty" else "!=", "")]
    raise BadRequest(f"Unknown query operator '{op}'.")
