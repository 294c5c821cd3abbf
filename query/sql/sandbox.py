"""Proves a SQL text is one read-only query over the public views, with DuckDB's own parser.

DuckDB settings are not a sandbox: with external access off and the configuration locked, a
query can still overwrite the database's own WAL through COPY, run CHECKPOINT, attach an
in-memory database or create temp tables (docs/sql.md, "What a query may do"). So a query is
run only if DuckDB's parser says it is exactly one SELECT statement and every table it names
is a public view (or a CTE in scope), every table function is on a short allow-list of pure
generators, and every scalar/aggregate/window function is a built-in one that cannot read
files, the network, settings or session state. Anything the walk does not recognise is
refused: the checker fails closed.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Iterable

import duckdb
import orjson

from runledger.query.sql.views import PUBLIC_VIEWS, SCHEMA

MAX_QUERY_CHARS = 100_000

# Table functions that only compute from their arguments.
SAFE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})

# Built-in scalar functions that reveal settings, paths or session state, or have effects
# (sequences, the random seed, DuckDB's log). Everything else built in is pure computation.
DENIED_FUNCTIONS = frozenset({
    "getenv", "current_setting", "getvariable", "nextval", "currval", "setval", "setseed", "write_log",
    "current_query", "current_database", "current_catalog", "current_schema", "current_schemas",
    "current_connection_id", "current_query_id", "current_transaction_id", "txid_current", "in_search_path",
    "has_database_privilege", "has_schema_privilege", "json_execute_serialized_sql", "parse_duckdb_log_message",
    "query", "query_table", "checkpoint", "force_checkpoint",
})
_DENIED_PREFIXES = ("__internal", "duckdb_", "pragma_", "pg_", "read_", "parquet_", "sniff_")

# Parse-tree node types the walker understands. A node type outside these (a new DuckDB
# feature) is refused until someone has looked at it.
_TABLE_REFS = frozenset({"BASE_TABLE", "SUBQUERY", "JOIN", "TABLE_FUNCTION", "EXPRESSION_LIST", "EMPTY",
                         "SHOW_REF", "PIVOT", "COLUMN_DATA"})
_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE",
                          "STATEMENT_NODE"})


class SqlRefused(Exception):
    """The query is not one we run; the message says what was refused and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Parser:
    """A private in-memory DuckDB used only to parse (json_serialize_sql); it holds no data and
    is locked down like the real one, in case a parse ever evaluated anything."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:", config={
            "enable_external_access": False, "autoload_known_extensions": False,
            "autoinstall_known_extensions": False, "threads": 1})
        self._con.execute("SET lock_configuration = true")
        self._lock = threading.Lock()
        self.builtin_functions = frozenset(r[0] for r in self._con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type IN ('scalar', 'aggregate', 'window', 'macro') AND internal").fetchall())

    def serialize(self, query: str) -> dict[str, Any]:
        with self._lock:
            row = self._con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
        assert row is not None
        return orjson.loads(row[0])


_parser: _Parser | None = None
_parser_lock = threading.Lock()


def _get_parser() -> _Parser:
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = _Parser()
        return _parser


def check(query: str) -> frozenset[str]:
    """Raise SqlRefused unless `query` is one read-only SELECT over the public views. Returns
    the (lower-case) names of the functions it calls, which the engine uses to plan the
    query's cursor (query.sql.engine: aggregates that collect every value)."""
    refusal, functions = _verdict(query)
    if refusal is not None:
        raise SqlRefused(refusal)
    return functions


@functools.lru_cache(maxsize=512)
def _verdict(query: str) -> tuple[str | None, frozenset[str]]:
    """Why `query` is refused (or None), and the functions it calls. Depends on the text
    alone, so dashboards repeating a query are checked once."""
    try:
        return None, _check(query)
    except SqlRefused as e:
        return e.message, frozenset()


def _check(query: str) -> frozenset[str]:
    if not query.strip():
        raise SqlRefused("The query is empty.")
    if len(query) > MAX_QUERY_CHARS:
        raise SqlRefused(f"The query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}.")
    if "\x00" in query:
        raise SqlRefused("The query contains a NUL character.")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise SqlRefused(f"The query does not parse: {_first_line(e)}") from None
    if len(statements) != 1:
        raise SqlRefused(f"Exactly one statement is allowed; the query has {len(statements)}. "
                         "Several statements in one request are refused.")
    kind = statements[0].type
    if kind == duckdb.StatementType.MULTI:
        raise SqlRefused("This query expands to several statements (e.g. PIVOT without an explicit IN list of "
                         "values); list the values (PIVOT ... ON key IN ('a', 'b')) or aggregate with FILTER.")
    if kind != duckdb.StatementType.SELECT:
        raise SqlRefused(f"Only read-only SELECT queries are allowed; this is a statement of type {kind.name} "
                         "(writes, COPY, ATTACH, SET, PRAGMA, INSTALL/LOAD, CALL, CHECKPOINT and the like are refused).")
    parser = _get_parser()
    tree = parser.serialize(query)
    if tree.get("error"):
        raise SqlRefused(f"The query cannot be checked: {tree.get('error_message', 'unknown parse error')}")
    if len(tree.get("statements", [])) != 1:
        raise SqlRefused("Exactly one statement is allowed.")
    walker = _Walker(parser.builtin_functions)
    try:
        walker.statement(tree["statements"][0])
    except SqlRefused:
        raise
    except Exception as e:  # a parse-tree shape the walker does not know: refuse, never run it
        raise SqlRefused(f"The query uses a construct the sandbox cannot check ({type(e).__name__}).") from None
    return frozenset(walker.functions)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


class _Walker:
    def __init__(self, builtins: frozenset[str]) -> None:
        self.builtins = builtins
        # Every function the query calls that passed the checks below.
        self.functions: set[str] = set()

    def statement(self, stmt: dict[str, Any]) -> None:
        self.query_node(stmt["node"], frozenset())

    # ----- query nodes: CTE scope follows the tree, so a CTE defined in a subquery does not
    # make the same name usable (as an internal table) elsewhere.
    def query_node(self, node: dict[str, Any] | None, ctes: frozenset[str]) -> None:
        if node is None:
            return
        kind = node.get("type")
        if kind not in _QUERY_NODES:
            raise SqlRefused(f"The query uses a construct the sandbox does not allow ({kind}).")
        cte_map = (node.get("cte_map") or {}).get("map", [])
        scope = ctes
        for entry in cte_map:
            name = str(entry["key"]).lower()
            inner = entry["value"]
            # A CTE sees the ones before it and itself (WITH RECURSIVE).
            self.query_node(inner.get("query_node") or (inner.get("query") or {}).get("node"), scope | {name})
            scope = scope | {name}
        if kind == "SELECT_NODE":
            self.table_ref(node.get("from_table"), scope)
            for key in ("select_list", "group_expressions", "where_clause", "having", "qualify", "sample"):
                self.expressions(node.get(key), scope)
            self.expressions(node.get("group_sets"), scope)
        elif kind in ("SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"):
            if kind in ("RECURSIVE_CTE_NODE", "CTE_NODE") and node.get("ctename"):
                scope = scope | {str(node["ctename"]).lower()}
            for key in ("left", "right", "query", "child", "cte_query"):
                if isinstance(node.get(key), dict):
                    self.query_node(node[key], scope)
            for child in node.get("children", []) or []:
                self.query_node(child, scope)
        else:  # STATEMENT_NODE wraps a whole statement: only a SELECT is acceptable inside.
            raise SqlRefused("The query embeds a statement the sandbox does not allow.")
        for modifier in node.get("modifiers", []) or []:
            self.expressions(modifier, scope)

    def table_ref(self, ref: dict[str, Any] | None, ctes: frozenset[str]) -> None:
        if ref is None:
            return
        kind = ref.get("type")
        if kind not in _TABLE_REFS:
            raise SqlRefused(f"The query reads from a source the sandbox does not allow ({kind}).")
        if ref.get("at_clause"):
            raise SqlRefused("AT (time travel) clauses are not supported.")
        if kind == "BASE_TABLE":
            self.base_table(ref, ctes)
        elif kind == "SUBQUERY":
            self.query_node(ref["subquery"]["node"], ctes)
        elif kind == "JOIN":
            self.table_ref(ref.get("left"), ctes)
            self.table_ref(ref.get("right"), ctes)
            self.expressions(ref.get("condition"), ctes)
        elif kind == "TABLE_FUNCTION":
            fn = ref["function"]
            name = str(fn.get("function_name", "")).lower()
            if fn.get("schema") or fn.get("catalog") or name not in SAFE_TABLE_FUNCTIONS:
                raise SqlRefused(f"Table function {_qualified(fn.get('catalog'), fn.get('schema'), name)}() is not "
                                 f"allowed: queries may read only the public views; the table functions allowed "
                                 f"are {', '.join(sorted(SAFE_TABLE_FUNCTIONS))}.")
            self.expressions(fn.get("arguments"), ctes)
        elif kind == "EXPRESSION_LIST":
            self.expressions(ref.get("values"), ctes)
        elif kind == "SHOW_REF":
            # DESCRIBE/SUMMARIZE of a query over allowed views is fine; SHOW TABLES and the
            # like list the internal catalog.
            if ref.get("show_type") not in ("DESCRIBE", "SUMMARY") or not ref.get("query"):
                raise SqlRefused("SHOW of the catalog is not allowed; the public views are listed in docs/sql.md.")
            self.query_node(ref["query"], ctes)
        elif kind == "PIVOT":
            self.table_ref(ref.get("source"), ctes)
            self.expressions([v for k, v in ref.items() if k not in ("source", "type")], ctes)
        elif kind == "COLUMN_DATA":
            raise SqlRefused("The query reads from a source the sandbox does not allow (COLUMN_DATA).")

    def base_table(self, ref: dict[str, Any], ctes: frozenset[str]) -> None:
        name = str(ref.get("table_name", ""))
        schema = str(ref.get("schema_name", "") or "")
        catalog = str(ref.get("catalog_name", "") or "")
        if not schema and not catalog and name.lower() in ctes:
            return
        if catalog or schema.lower() not in ("", SCHEMA) or name.lower() not in PUBLIC_VIEWS:
            raise SqlRefused(f"Table {_qualified(catalog, schema, name)!s} is not allowed: queries may read only "
                             f"the public views ({', '.join(sorted(PUBLIC_VIEWS))}), not internal tables, "
                             f"files or other databases.")

    # ----- expressions: walked generically, so a subquery anywhere (SELECT list, IN, lambda
    # bodies, window frames) is checked like the top level.
    def expressions(self, value: Any, ctes: frozenset[str]) -> None:
        if isinstance(value, list):
            for item in value:
                self.expressions(item, ctes)
            return
        if not isinstance(value, dict):
            return
        cls = value.get("class")
        if cls in ("FUNCTION", "WINDOW", "AGGREGATE"):
            self.function(value)
        if cls == "SUBQUERY" and isinstance(value.get("subquery"), dict):
            self.query_node(value["subquery"]["node"], ctes)
            self.expressions([v for k, v in value.items() if k != "subquery"], ctes)
            return
        kind = value.get("type")
        if isinstance(kind, str) and kind in _TABLE_REFS and "class" not in value:
            self.table_ref(value, ctes)
            return
        if isinstance(kind, str) and kind in _QUERY_NODES and "class" not in value:
            self.query_node(value, ctes)
            return
        for v in value.values():
            if isinstance(v, (dict, list)):
                self.expressions(v, ctes)

    def function(self, fn: dict[str, Any]) -> None:
        name = str(fn.get("function_name", "")).lower()
        if fn.get("schema") or fn.get("catalog"):
            raise SqlRefused(f"Function {_qualified(fn.get('catalog'), fn.get('schema'), name)}() is not allowed: "
                             "qualified function names are refused.")
        if name in DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
            raise SqlRefused(f"Function {name}() is not allowed: it reads files, settings or session state, "
                             "or has side effects.")
        if name not in self.builtins and name not in SAFE_TABLE_FUNCTIONS and not _is_operator_name(name):
            raise SqlRefused(f"Function {name}() is not allowed: only DuckDB's built-in scalar, aggregate and "
                             "window functions are.")
        self.functions.add(name)


def _is_operator_name(name: str) -> bool:
    return bool(name) and not any(ch.isalnum() or ch == "_" for ch in name)


def _qualified(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p)


def allowed_functions() -> Iterable[str]:
    """The built-in functions queries may call (for docs and tests)."""
    p = _get_parser()
    return sorted(n for n in p.builtin_functions
                  if n not in DENIED_FUNCTIONS and not n.startswith(_DENIED_PREFIXES))
