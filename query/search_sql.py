"""Compile parsed search terms (``query.search_filter``) into DuckDB SQL fragments.

Contract for every function here: the returned SQL text is built only from
trusted, fixed identifiers; every user-supplied value and every key travels in
the returned parameter list, bound to ``?`` placeholders in textual order.
A caller composing ``WHERE <where> ORDER BY <order>`` must pass
``where_params + order_params`` in that order.

Run fragments reference the outer run row as ``r`` (a ``runs`` row);
experiment fragments reference ``e`` (an ``experiments`` row).
"""

from __future__ import annotations

import re
from typing import Sequence

from .search_filter import Comparison, OrderTerm
from .search_tree import AllOf, AnyOf, Leaf, Node, Not

__all__ = [
    "compile_runs_where",
    "compile_runs_tree_where",
    "compile_runs_order_by",
    "compile_runs_search",
    "compile_experiments_where",
    "compile_experiments_order_by",
]

# Comparator -> SQL operator. DuckDB's LIKE is case-sensitive and has no
# default escape character, ILIKE is case-insensitive: both as MLflow intends.
_BINARY_SQL = {
    "=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<=",
    "LIKE": "LIKE", "ILIKE": "ILIKE",
}
_LIST_SQL = {"IN": "IN", "NOT IN": "NOT IN"}

_RUN_COLUMNS = {
    "run_id": "r.run_id", "run_name": "r.run_name", "user_id": "r.user_id",
    "status": "r.status", "artifact_uri": "r.artifact_uri",
    "start_time": "r.start_time", "end_time": "r.end_time",
}
_DATASET_COLUMNS = {"name": "d.name", "digest": "d.digest", "context": "d.context"}
_EXPERIMENT_COLUMNS = {
    "name": "e.name", "experiment_id": "e.experiment_id",
    "creation_time": "e.creation_time", "last_update_time": "e.last_update_time",
}
_KEYED_TABLES = {"param": "params", "tag": "tags"}


def _check_table(latest_table: str) -> None:
    # The metric table name is spliced into SQL text, so it must be a plain
    # identifier chosen by the server, never anything user-controlled.
    if not re.fullmatch(r"[a-z_]+", latest_table):
        raise ValueError(f"untrusted latest-metrics table name: {latest_table!r}")


def _value_predicate(column: str, op: str, value: object, params: list) -> str:
    """``column <op> ?`` (or an IN list) with the value(s) appended to params."""
    if op in _LIST_SQL:
        if not isinstance(value, tuple) or not value:
            raise ValueError(f"{op} needs a non-empty tuple of values, got {value!r}")
        params.extend(value)
        return f"{column} {_LIST_SQL[op]} ({', '.join('?' for _ in value)})"
    if op == "REGEX":  # filter trees only (query.search_tree): RE2, matched anywhere
        params.append(value)
        return f"regexp_matches({column}, ?)"
    if op not in _BINARY_SQL:
        raise ValueError(f"unsupported comparator {op!r}")
    params.append(value)
    return f"{column} {_BINARY_SQL[op]} ?"


def _exists(table: str, alias: str, owner: str, outer: str, condition: str, membership: bool) -> str:
    """Whether a row of ``table`` belongs to the outer row and satisfies ``condition``: a
    correlated EXISTS, or (``membership``) the equivalent uncorrelated ``IN`` over the
    owner column, which DuckDB plans a little faster (the owner column is NOT NULL: it is part
    of every such table's primary key, so ``IN`` never meets a NULL)."""
    if membership:
        return f"{outer}.{owner} IN (SELECT {alias}.{owner} FROM {table} {alias} WHERE {condition})"
    return f"EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.{owner} = {outer}.{owner} AND {condition})"


def _metric_predicate(c: Comparison, latest_table: str, params: list, membership: bool = False) -> str:
    # DuckDB orders NaN above every number and treats NaN = NaN as true, while
    # MLflow says NaN satisfies only "!=": guard explicitly with isnan().
    params.append(c.key)
    cmp = _value_predicate("m.value", c.op, float(c.value), params)
    guard = f"(isnan(m.value) OR {cmp})" if c.op == "!=" else f"(NOT isnan(m.value) AND {cmp})"
    return _exists(latest_table, "m", "run_id", "r", f"m.key = ? AND {guard}", membership)


def _keyed_predicate(c: Comparison, table: str, owner: str, outer: str, params: list,
                     membership: bool = False) -> str:
    """Predicate on a (owner_id, key, value) table: params/tags or experiment tags.

    Any comparison requires the key to exist (MLflow joins on it), so
    ``tags.t != 'x'`` never matches a row without tag t. IS NULL means absent.
    """
    params.append(c.key)
    if c.op == "IS NULL":
        return f"NOT {_exists(table, 'k', owner, outer, 'k.key = ?', False)}"
    if c.op == "IS NOT NULL":
        return _exists(table, "k", owner, outer, "k.key = ?", membership)
    return _exists(table, "k", owner, outer, f"k.key = ? AND {_value_predicate('k.value', c.op, c.value, params)}",
                   membership)


def _attribute_predicate(column: str, c: Comparison, params: list) -> str:
    # A NULL column (e.g. end_time of a running run) makes the comparison NULL,
    # which WHERE treats as false: such rows never match, as in MLflow.
    value = float(c.value) if isinstance(c.value, (int, float)) else c.value
    return _value_predicate(column, c.op, value, params)


def _lookup(mapping: dict[str, str], c: Comparison | OrderTerm) -> str:
    try:
        return mapping[c.key]
    except KeyError:
        raise ValueError(f"unsupported {c.entity} key {c.key!r}") from None


def _and(parts: list[str]) -> str:
    return " AND ".join(f"({p})" for p in parts) if parts else "TRUE"


def compile_runs_where(comparisons: Sequence[Comparison], latest_table: str,
                       membership: bool = False) -> tuple[str, list]:
    """Compile runs/search comparisons to a boolean SQL expression over alias ``r``.

    Returns ``(sql, params)``; ``sql`` is ``"TRUE"`` for no comparisons.
    ``latest_table`` is the trusted name of the latest-metric table
    (``latest_metrics`` or ``latest_metrics_by_step``); ValueError otherwise.
    ``membership`` writes "some row of that table matches" as ``r.run_id IN (...)`` rather
    than a correlated ``EXISTS`` (same answer; see ``_exists``).
    """
    _check_table(latest_table)
    parts: list[str] = []
    params: list = []
    for c in comparisons:
        if c.entity == "metric":
            parts.append(_metric_predicate(c, latest_table, params, membership))
        elif c.entity in _KEYED_TABLES:
            parts.append(_keyed_predicate(c, _KEYED_TABLES[c.entity], "run_id", "r", params, membership))
        elif c.entity == "attribute":
            parts.append(_attribute_predicate(_lookup(_RUN_COLUMNS, c), c, params))
        elif c.entity == "dataset":
            # Matches when any of the run's datasets matches; a NULL context never does.
            column = _lookup(_DATASET_COLUMNS, c)
            pred = _value_predicate(column, c.op, c.value, params)
            parts.append(_exists("run_datasets", "d", "run_id", "r", pred, membership))
        else:
            raise ValueError(f"unsupported entity {c.entity!r}")
    return _and(parts), params


# ----- boolean trees (query.search_tree): the same predicates, joined by AND / OR / NOT

def _numbers_and_texts(values: tuple) -> tuple[tuple, tuple]:
    numbers = tuple(float(v) for v in values if isinstance(v, (int, float)))
    return numbers, tuple(v for v in values if isinstance(v, str))


def _param_value_predicate(c: Comparison, params: list) -> str:
    """A param/tag value test. A number compares with the stored text read as a number (text
    that is not a number never matches); a mixed IN list tests both ways."""
    if c.op in ("IN", "NOT IN"):
        numbers, texts = _numbers_and_texts(c.value)
        parts = []
        if texts:
            parts.append(_value_predicate("k.value", "IN", texts, params))
        if numbers:
            parts.append(_value_predicate("TRY_CAST(k.value AS DOUBLE)", "IN", numbers, params))
        test = " OR ".join(f"({p})" for p in parts)
        return f"NOT COALESCE({test}, FALSE)" if c.op == "NOT IN" else f"({test})"
    if isinstance(c.value, (int, float)):
        return _value_predicate("TRY_CAST(k.value AS DOUBLE)", c.op, float(c.value), params)
    return _value_predicate("k.value", c.op, c.value, params)


def _tree_leaf(c: Comparison, latest_table: str, params: list, membership: bool) -> str:
    if c.entity == "metric":
        if c.op in ("IS NULL", "IS NOT NULL"):
            params.append(c.key)
            found = _exists(latest_table, "m", "run_id", "r", "m.key = ?", membership and c.op == "IS NOT NULL")
            return found if c.op == "IS NOT NULL" else f"NOT {found}"
        if c.op in ("IN", "NOT IN"):
            params.append(c.key)
            cmp = _value_predicate("m.value", c.op, tuple(float(v) for v in c.value), params)
            guard = f"(isnan(m.value) OR {cmp})" if c.op == "NOT IN" else f"(NOT isnan(m.value) AND {cmp})"
            return _exists(latest_table, "m", "run_id", "r", f"m.key = ? AND {guard}", membership)
        return _metric_predicate(c, latest_table, params, membership)
    if c.entity in _KEYED_TABLES:
        if c.op in ("IS NULL", "IS NOT NULL") or (isinstance(c.value, str) and c.op != "REGEX"
                                                   and c.op not in ("IN", "NOT IN")):
            return _keyed_predicate(c, _KEYED_TABLES[c.entity], "run_id", "r", params, membership)
        params.append(c.key)
        condition = f"k.key = ? AND {_param_value_predicate(c, params)}"
        return _exists(_KEYED_TABLES[c.entity], "k", "run_id", "r", condition, membership)
    if c.entity == "label":
        # A label is a tag with an empty value (MLflow's own mlflow.* tags are never labels);
        # the comparison applies to the label's name.
        condition = "k.value = '' AND NOT starts_with(k.key, 'mlflow.')"
        if c.op not in ("IS NULL", "IS NOT NULL"):
            condition += f" AND {_value_predicate('k.key', c.op, c.value, params)}"
        found = _exists("tags", "k", "run_id", "r", condition, membership and c.op != "IS NULL")
        return f"NOT {found}" if c.op == "IS NULL" else found
    if c.entity == "attribute":
        column = _lookup(_RUN_COLUMNS, c)
        if c.op in ("IS NULL", "IS NOT NULL"):
            return f"{column} {c.op}"
        if c.op in ("IN", "NOT IN"):
            values = tuple(float(v) if isinstance(v, (int, float)) else v for v in c.value)
            return _value_predicate(column, c.op, values, params)
        return _attribute_predicate(column, c, params)
    if c.entity == "dataset" and c.op not in ("IS NULL", "IS NOT NULL"):
        pred = _value_predicate(_lookup(_DATASET_COLUMNS, c), c.op, c.value, params)
        return _exists("run_datasets", "d", "run_id", "r", pred, membership)
    raise ValueError(f"unsupported {c.entity} comparison {c.op!r}")


def _tree(node: Node, latest_table: str, params: list, membership: bool) -> str:
    if isinstance(node, Leaf):
        return _tree_leaf(node.comparison, latest_table, params, membership)
    if isinstance(node, AllOf):
        return _and([_tree(child, latest_table, params, membership) for child in node.children])
    if isinstance(node, AnyOf):
        parts = [_tree(child, latest_table, params, membership) for child in node.children]
        return " OR ".join(f"({p})" for p in parts) if parts else "FALSE"
    if isinstance(node, Not):
        # Total negation: a comparison that is NULL (a NULL column) reads as false, so its
        # negation is true; NOT alone would leave it NULL and drop the run.
        return f"NOT COALESCE(({_tree(node.child, latest_table, params, membership)}), FALSE)"
    raise ValueError(f"not a filter node: {node!r}")


def compile_runs_tree_where(node: Node, latest_table: str, membership: bool = False) -> tuple[str, list]:
    """Compile a boolean filter tree (``query.search_tree``) to an SQL expression over alias ``r``,
    with the predicates ``compile_runs_where`` uses for its comparisons. Returns ``(sql, params)``."""
    _check_table(latest_table)
    params: list = []
    return _tree(node, latest_table, params, membership), params


def _direction(ascending: bool) -> str:
    return "ASC" if ascending else "DESC"


def compile_runs_order_by(terms: Sequence[OrderTerm], latest_table: str) -> tuple[str, list]:
    """Compile runs/search order_by terms to an ORDER BY list (without "ORDER BY").

    Missing values sort last in both directions; for metrics the order is real
    values, then NaN, then missing, in both directions. Params and tags compare
    as strings. MLflow's tie-breakers are appended: ``start_time DESC`` unless
    start_time was already ordered on, then ``run_id ASC``.
    """
    _check_table(latest_table)
    items: list[str] = []
    params: list = []
    ordered_on_start_time = False
    for t in terms:
        direction = _direction(t.ascending)
        if t.entity == "attribute":
            ordered_on_start_time |= t.key == "start_time"
            items.append(f"{_lookup(_RUN_COLUMNS, t)} {direction} NULLS LAST")
        elif t.entity == "metric":
            lookup = f"FROM {latest_table} m WHERE m.run_id = r.run_id AND m.key = ?"
            # Rank 0 = real value, 1 = NaN, 2 = missing; ascending in both directions.
            items.append(f"COALESCE((SELECT CASE WHEN isnan(m.value) THEN 1 ELSE 0 END {lookup}), 2) ASC")
            items.append(f"(SELECT m.value {lookup}) {direction} NULLS LAST")
            params.extend([t.key, t.key])
        elif t.entity in _KEYED_TABLES:
            table = _KEYED_TABLES[t.entity]
            items.append(
                f"(SELECT k.value FROM {table} k WHERE k.run_id = r.run_id AND k.key = ?) {direction} NULLS LAST"
            )
            params.append(t.key)
        else:
            raise ValueError(f"cannot order runs by {t.entity!r}")
    if not ordered_on_start_time:
        items.append("r.start_time DESC NULLS LAST")
    items.append("r.run_id ASC")
    return ", ".join(items), params


def _order_with_joins(terms: Sequence[OrderTerm], latest_table: str) -> tuple[list[str], list, list[str]]:
    """``compile_runs_order_by``'s order, with each metric/param/tag term read through one
    LEFT JOIN (alias ``o<i>``) instead of correlated scalar subqueries: (joins, join params, items).

    Equivalent because (run_id, key) is the primary key of every keyed table, so a join
    finds at most one row per run, and a missing row reads as NULL exactly as an empty
    scalar subquery does (stored metric values are never NULL)."""
    joins: list[str] = []
    params: list = []
    items: list[str] = []
    ordered_on_start_time = False
    for i, t in enumerate(terms):
        direction = _direction(t.ascending)
        alias = f"o{i}"
        if t.entity == "attribute":
            ordered_on_start_time |= t.key == "start_time"
            items.append(f"{_lookup(_RUN_COLUMNS, t)} {direction} NULLS LAST")
            continue
        if t.entity == "metric":
            table = latest_table
        elif t.entity in _KEYED_TABLES:
            table = _KEYED_TABLES[t.entity]
        else:
            raise ValueError(f"cannot order runs by {t.entity!r}")
        joins.append(f"LEFT JOIN {table} {alias} ON {alias}.run_id = r.run_id AND {alias}.key = ?")
        params.append(t.key)
        if t.entity == "metric" and not t.ascending:
            # Real values, then NaN, then missing, in both directions. Ascending, DuckDB's own
            # order already is that (NaN sorts above every number, NULLS LAST); descending needs
            # NaN pushed after the real values: isnan() is false, true, NULL (missing) for them.
            items.append(f"isnan({alias}.value) ASC NULLS LAST")
        items.append(f"{alias}.value {direction} NULLS LAST")
    if not ordered_on_start_time:
        items.append("r.start_time DESC NULLS LAST")
    items.append("r.run_id ASC")
    return joins, params, items


# run_view_type (1 ACTIVE_ONLY, 2 DELETED_ONLY, 3 ALL) -> condition on run r, given the lists of
# the searched experiments that exist ({exists}), that are not deleted ({active}) and that are
# deleted ({deleted}); a list is NULL when empty, and list_contains(NULL, x) is NULL (no match).
# A run reads as deleted when it or its experiment is deleted; like an inner join with
# experiments, a run whose experiment row is missing never matches.
_VIEW_SQL = {
    1: "r.lifecycle_stage <> 'deleted' AND list_contains({active}, r.experiment_id)",
    2: "list_contains({exists}, r.experiment_id) AND (r.lifecycle_stage = 'deleted' OR "
       "list_contains({deleted}, r.experiment_id))",
    3: "list_contains({exists}, r.experiment_id)",
}


def compile_runs_search(comparisons: Sequence[Comparison] | Node, terms: Sequence[OrderTerm], latest_table: str,
                        experiment_ids: Sequence[str], view: int) -> tuple[str, list]:
    """The whole runs/search statement: ``SELECT r.run_id`` of the matching runs of
    ``experiment_ids`` in the requested order, as ``(sql, params)``.

    Same answer as ``WHERE <compile_runs_where> ORDER BY <compile_runs_order_by>`` over
    ``runs r JOIN experiments e`` with the view's lifecycle rule, in a cheaper shape: order
    terms read through joins; the experiment ids as literal parameters the runs scan filters
    on; and the experiments' rule through uncorrelated subqueries (the list of the searched
    experiments that exist, are active or are deleted), which DuckDB evaluates once, where a
    semi-join with ``experiments`` would cost as much as the rest of a small search.
    ``view`` is 1 (ACTIVE_ONLY), 2 (DELETED_ONLY) or 3 (ALL). ``comparisons`` may also be a
    boolean filter tree (``query.search_tree``).
    """
    _check_table(latest_table)
    if not experiment_ids:
        raise ValueError("experiment_ids must not be empty")
    joins, join_params, items = _order_with_joins(terms, latest_table)
    if isinstance(comparisons, (Leaf, AllOf, AnyOf, Not)):
        where, where_params = compile_runs_tree_where(comparisons, latest_table, membership=True)
    else:
        where, where_params = compile_runs_where(comparisons, latest_table, membership=True)
    exp_ids = list(dict.fromkeys(experiment_ids))
    marks = ", ".join("?" for _ in exp_ids)
    lists = {"exists": "", "active": " AND lifecycle_stage <> 'deleted'", "deleted": " AND lifecycle_stage = 'deleted'"}
    view_sql = _VIEW_SQL[view]
    view_params: list = []
    for name in sorted(lists, key=view_sql.find):  # in textual order, for the parameters
        if "{" + name + "}" in view_sql:
            view_sql = view_sql.replace(
                "{" + name + "}",
                f"(SELECT list(experiment_id) FROM experiments WHERE experiment_id IN ({marks}){lists[name]})")
            view_params += exp_ids
    sql = (f"SELECT r.run_id FROM runs r {' '.join(joins)} WHERE r.experiment_id IN ({marks}) AND {view_sql} "
           f"AND ({where}) ORDER BY {', '.join(items)}")
    return sql, [*join_params, *exp_ids, *view_params, *where_params]


def compile_experiments_where(comparisons: Sequence[Comparison]) -> tuple[str, list]:
    """Compile experiments/search comparisons to a boolean SQL expression over alias ``e``.

    Returns ``(sql, params)``; ``sql`` is ``"TRUE"`` for no comparisons.
    """
    parts: list[str] = []
    params: list = []
    for c in comparisons:
        if c.entity == "attribute":
            parts.append(_attribute_predicate(_lookup(_EXPERIMENT_COLUMNS, c), c, params))
        elif c.entity == "tag":
            parts.append(_keyed_predicate(c, "experiment_tags", "experiment_id", "e", params))
        else:
            raise ValueError(f"unsupported entity {c.entity!r} for experiments")
    return _and(parts), params


def _experiment_sort_items(key: str, ascending: bool) -> list[str]:
    direction = _direction(ascending)
    if key == "experiment_id":
        # MLflow's experiment ids are integers; ours are strings, so order
        # numeric-looking ids numerically ("2" before "10") and the rest after.
        return [
            f"TRY_CAST(e.experiment_id AS HUGEINT) {direction} NULLS LAST",
            f"e.experiment_id {direction}",
        ]
    return [f"{_EXPERIMENT_COLUMNS[key]} {direction} NULLS LAST"]


def compile_experiments_order_by(terms: Sequence[OrderTerm]) -> tuple[str, list]:
    """Compile experiments/search order_by terms to an ORDER BY list (without "ORDER BY").

    No terms: ``creation_time DESC, experiment_id ASC``. Given terms without
    experiment_id get MLflow's tie-breaker ``experiment_id DESC``. Missing
    values sort last. ``params`` is always empty (kept for a uniform API).
    """
    items: list[str] = []
    pairs = [(t.key, t.ascending) for t in terms] or [("creation_time", False), ("experiment_id", True)]
    for t in terms:
        if t.entity != "attribute" or t.key not in _EXPERIMENT_COLUMNS:
            raise ValueError(f"cannot order experiments by {t.entity} {t.key!r}")
    if not any(key == "experiment_id" for key, _ in pairs):
        pairs.append(("experiment_id", False))
    for key, ascending in pairs:
        items.extend(_experiment_sort_items(key, ascending))
    return ", ".join(items), []
