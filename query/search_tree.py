"""Boolean filter trees for runs/search: OR, NOT, IN / NOT IN on any field, regular expressions
and existence tests, on top of the AND-only MLflow grammar of ``query.search_filter``.

A tree's leaves are the parser's own ``Comparison`` terms (entity, key, operator, value), so the
vocabulary (which entities and attributes exist, their aliases) stays the MLflow one, and
``query.search_sql.compile_runs_where`` turns a tree into SQL with the same predicate builders
that serve a filter string. There is one filter engine; this module only adds the connectives
and the extra operators.

Two ways in:

* ``parse_mongo(doc, resolve)``: a Mongo-style document, the shape W&B's ``api.runs(filters=...)``
  sends (``$and $or $nor $not $eq $ne $gt $gte $lt $lte $in $nin $exists $regex``). ``resolve``
  maps a field name to ``(entity, key)``; ``native_field`` accepts MLflow identifiers
  (``metrics.loss``, ``params.lr``, ``tags.team``, ``attributes.status``, ``status``); the W&B
  dialect passes its own (``config.lr``, ``summary_metrics.loss``, ``state``...).
* building ``AllOf / AnyOf / Not / Leaf`` directly.

Semantics (docs/search.md): a comparison on a field the run does not have is false, except
through negation: ``$ne``, ``$nin`` and ``$not`` are the negation of the positive test, so
they match runs without the field, as in Mongo. ``$exists: true`` means the field is present.
Numbers compared with a param compare numerically (the param's text read as a number; a
param that is not a number never matches); strings compare as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Union

from .search_filter import Comparison, SearchFilterError, _Cursor, _RUNS, _parse_identifier, _tokenize

__all__ = [
    "Leaf", "AllOf", "AnyOf", "Not", "Node", "TREE_OPS",
    "from_comparisons", "check", "parse_mongo", "native_field", "Resolver",
]


@dataclass(frozen=True)
class Leaf:
    comparison: Comparison


@dataclass(frozen=True)
class AllOf:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    child: "Node"


Node = Union[Leaf, AllOf, AnyOf, Not]

# Operators a tree leaf may carry, per value kind. "REGEX" is a regular expression (RE2, as
# DuckDB's regexp_matches) matched anywhere in the text; IN / NOT IN take a tuple of values.
_ORDERED = ("=", "!=", ">", ">=", "<", "<=")
_TEXT = ("=", "!=", "LIKE", "ILIKE", "REGEX")
_LISTS = ("IN", "NOT IN")
_PRESENCE = ("IS NULL", "IS NOT NULL")
TREE_OPS = frozenset(_ORDERED + _TEXT + _LISTS + _PRESENCE)

_NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time"})
_RE2_UNSUPPORTED = re.compile(r"\(\?<?[=!]|(?<!\\)\\[1-9]")


def from_comparisons(comparisons: list[Comparison] | tuple[Comparison, ...]) -> Node:
    """The tree of an AND-only filter (what ``parse_runs_filter`` returns)."""
    return AllOf(tuple(Leaf(c) for c in comparisons))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_leaf(c: Comparison) -> None:
    if c.op not in TREE_OPS:
        raise SearchFilterError(f"Unsupported comparator {c.op!r}")
    numeric = c.entity == "metric" or (c.entity == "attribute" and c.key in _NUMERIC_ATTRIBUTES)
    where = f"{c.entity} '{c.key}'"
    if c.op in _PRESENCE:
        if c.value is not None:
            raise SearchFilterError(f"{c.op} takes no value ({where})")
        return
    if c.op in ("LIKE", "ILIKE", "REGEX") and numeric:
        raise SearchFilterError(f"{c.op} does not apply to the number {where}")
    if c.op in _LISTS:
        if not isinstance(c.value, tuple) or not c.value:
            raise SearchFilterError(f"{c.op} needs a non-empty list of values ({where})")
        values = c.value
    else:
        values = (c.value,)
    for v in values:
        if numeric and not _is_number(v):
            raise SearchFilterError(f"Expected a number for {where}, found {v!r}")
        if not numeric and not (isinstance(v, str) or (c.entity == "param" and _is_number(v))):
            raise SearchFilterError(f"Expected a string for {where}, found {v!r}")
    if c.op in ("LIKE", "ILIKE", "REGEX") and not isinstance(c.value, str):
        raise SearchFilterError(f"{c.op} needs a string pattern ({where})")
    if c.op in (">", ">=", "<", "<=") and not numeric and not _is_number(c.value) and c.entity != "attribute":
        # text order comparisons on params/tags are allowed for numbers only (W&B's config.x > 3)
        raise SearchFilterError(f"{c.op} on {where} needs a number")
    if c.op == "REGEX":
        try:
            re.compile(c.value)
        except re.error as e:
            raise SearchFilterError(f"Invalid regular expression {c.value!r}: {e}") from None
        # DuckDB matches with RE2, which has no lookaround and no backreferences: refused here with
        # a clear message rather than failing inside the query.
        if _RE2_UNSUPPORTED.search(c.value):
            raise SearchFilterError(f"Unsupported regular expression {c.value!r}: lookarounds and "
                                    "backreferences are not available (RE2 syntax)")


def check(node: Node) -> Node:
    """Validate a tree (operators and value kinds per leaf); returns it. SearchFilterError otherwise."""
    if isinstance(node, Leaf):
        _check_leaf(node.comparison)
    elif isinstance(node, (AllOf, AnyOf)):
        for child in node.children:
            check(child)
    elif isinstance(node, Not):
        check(node.child)
    else:
        raise SearchFilterError(f"Not a filter node: {node!r}")
    return node


# ----- Mongo-style documents

# A resolver maps a field name to (entity, key, convert): ``convert`` (or None) turns each JSON
# value into the stored form (e.g. an ISO date into epoch milliseconds).
Resolver = Callable[[str], tuple[str, str, Callable[[Any], Any] | None]]
_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
MAX_DEPTH = 32
MAX_NODES = 2000


def native_field(name: str) -> tuple[str, str, None]:
    """A field named with an MLflow identifier (``metrics.loss``, ``params.lr``, ``tags."a b"``,
    ``attributes.status``, or a bare attribute such as ``status``), parsed by the MLflow parser;
    ``labels`` is the run's labels (tags with an empty value)."""
    if name == "labels":
        return "label", "", None
    cur = _Cursor(_tokenize(name))
    entity, key = _parse_identifier(cur, _RUNS)
    if cur.peek() is not None:
        raise SearchFilterError(f"Invalid field name {name!r}")
    return entity, key, None


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0

    def spend(self, depth: int) -> None:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise SearchFilterError(f"Filter too large: at most {MAX_DEPTH} levels and {MAX_NODES} terms")


def parse_mongo(doc: Any, resolve: Resolver = native_field) -> Node:
    """A Mongo-style filter document as a validated tree. ``{}`` or None matches every run."""
    if doc is None:
        return AllOf(())
    return check(_document(doc, resolve, _Budget(), 0))


def _document(doc: Any, resolve: Resolver, budget: _Budget, depth: int) -> Node:
    budget.spend(depth)
    if not isinstance(doc, dict):
        raise SearchFilterError(f"A filter must be a JSON object, found {type(doc).__name__}")
    parts: list[Node] = []
    for name, value in doc.items():
        if name in ("$and", "$or", "$nor"):
            if not isinstance(value, list) or not value:
                raise SearchFilterError(f"{name} needs a non-empty list of filters")
            children = tuple(_document(v, resolve, budget, depth + 1) for v in value)
            parts.append(AllOf(children) if name == "$and" else
                         AnyOf(children) if name == "$or" else Not(AnyOf(children)))
        elif name == "$not":
            parts.append(Not(_document(value, resolve, budget, depth + 1)))
        elif name.startswith("$"):
            raise SearchFilterError(f"Unknown top-level operator {name!r}")
        else:
            entity, key, convert = resolve(name)
            parts.append(_field(_Target(entity, key, name, convert), value, budget, depth + 1))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _is_operator_doc(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and k.startswith("$") for k in value)


@dataclass(frozen=True)
class _Target:
    entity: str
    key: str
    name: str
    convert: Callable[[Any], Any] | None

    def value(self, v: Any) -> Any:
        v = _scalar(v, self.name)
        if v is not None and self.convert is not None:
            try:
                v = self.convert(v)
            except (TypeError, ValueError) as e:
                raise SearchFilterError(f"Invalid value for {self.name!r}: {v!r} ({e})") from None
        return v

    def leaf(self, op: str, value: Any) -> Node:
        if self.entity == "label" and op not in _PRESENCE:
            # The value names a label: "has a label matching".
            return Leaf(Comparison("label", "", op, value))
        return Leaf(Comparison(self.entity, self.key, op, value))


def _field(t: _Target, value: Any, budget: _Budget, depth: int) -> Node:
    budget.spend(depth)
    if not _is_operator_doc(value):
        return _op(t, "$eq", value)
    parts = [Not(_field(t, arg, budget, depth + 1)) if op == "$not" else _op(t, op, arg)
             for op, arg in value.items()]
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _scalar(v: Any, name: str) -> Any:
    # JSON true/false compare as the text MLflow's Python client logs for them ("True"/"False").
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return float(v)
    if v is None or isinstance(v, (float, str)):
        return v
    raise SearchFilterError(f"Unsupported value for {name!r}: {v!r}")


def _op(t: _Target, op: str, arg: Any) -> Node:
    if op in ("$eq", "$ne"):
        value = t.value(arg)
        # {"x": null} is Mongo's "x is absent"
        node = Leaf(Comparison(t.entity, t.key, "IS NULL", None)) if value is None else t.leaf("=", value)
        return Not(node) if op == "$ne" else node
    if op in _COMPARE:
        value = t.value(arg)
        if value is None:
            raise SearchFilterError(f"{op} on {t.name!r} needs a value")
        return t.leaf(_COMPARE[op], value)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list) or not arg:
            raise SearchFilterError(f"{op} on {t.name!r} needs a non-empty list")
        values = tuple(t.value(v) for v in arg if v is not None)
        node = t.leaf("IN", values) if values else AnyOf(())
        if any(v is None for v in arg):  # null in the list: "or absent"
            node = AnyOf((node, Leaf(Comparison(t.entity, t.key, "IS NULL", None))))
        return Not(node) if op == "$nin" else node
    if op == "$exists":
        if not isinstance(arg, bool):
            raise SearchFilterError(f"$exists on {t.name!r} needs true or false")
        return Leaf(Comparison(t.entity, t.key, "IS NOT NULL" if arg else "IS NULL", None))
    if op == "$regex":
        if not isinstance(arg, str):
            raise SearchFilterError(f"$regex on {t.name!r} needs a string")
        return t.leaf("REGEX", arg)
    raise SearchFilterError(f"Unknown operator {op!r} on {t.name!r}")
