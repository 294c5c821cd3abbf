"""Parser for MLflow-compatible search filters and order_by clauses.

This module only parses and validates; turning the result into SQL is the job of
``query.search_sql``. The grammar follows MLflow's ``runs/search`` and
``experiments/search`` (see the shared facts file, sections 7 and 8):

    filter     := [AND]* comparison ([AND]+ comparison)* [AND]*
    comparison := identifier comparator [value]
    identifier := [entity "."] key        -- bare key means an attribute
    comparator := = | != | > | >= | < | <= | [I]LIKE | [NOT] IN | IS [NOT] NULL
    value      := number | 'string' | "string" | "(" string ("," string)* [","] ")"
    order_item := identifier [ASC | DESC]

Every problem is reported as ``SearchFilterError`` whose message is meant for the
end user (the server turns it into an INVALID_PARAMETER_VALUE 400 response).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SearchFilterError", "Comparison", "OrderTerm",
    "parse_runs_filter", "parse_experiments_filter", "parse_runs_order_by", "parse_experiments_order_by",
]

Value = float | str | tuple[str, ...] | None


class SearchFilterError(ValueError):
    """A filter or order_by clause is malformed; the message is user-facing."""


@dataclass(frozen=True)
class Comparison:
    """One ``<entity>.<key> <op> <value>`` term of an AND-only filter.

    ``entity`` is one of metric/param/tag/attribute/dataset, ``key`` is unquoted
    (attribute keys canonicalised), ``op`` is upper-case. ``value`` is a float for
    numeric comparisons, a str for string ones, a tuple of str for IN / NOT IN and
    None for IS NULL / IS NOT NULL.
    """

    entity: str
    key: str
    op: str
    value: Value


@dataclass(frozen=True)
class OrderTerm:
    """One order_by element: sort on ``<entity>.<key>``, ascending or not."""

    entity: str
    key: str
    ascending: bool


# --- Vocabulary ---

_RUN_ENTITY_ALIASES = {
    "metric": "metric", "metrics": "metric",
    "param": "param", "params": "param", "parameter": "param", "parameters": "param",
    "tag": "tag", "tags": "tag",
    "attribute": "attribute", "attributes": "attribute", "attr": "attribute", "run": "attribute",
    "dataset": "dataset", "datasets": "dataset",
}
# MLflow deliberately accepts fewer prefixes for experiments (no "attributes").
_EXPERIMENT_ENTITY_ALIASES = {"attribute": "attribute", "tag": "tag", "tags": "tag"}

_RUN_ATTRIBUTE_ALIASES = {
    "created": "start_time", "Created": "start_time",
    "run name": "run_name", "Run name": "run_name", "Run Name": "run_name",
}
# Known run columns that MLflow refuses to filter on; named in a clearer error.
_RUN_UNFILTERABLE = {
    "experiment_id": "use the experiment_ids request field instead",
    "lifecycle_stage": "use the run_view_type request field instead",
}
_DATASET_KEYS = frozenset({"name", "digest", "context"})

_NUMERIC_OPS = ("=", "!=", ">", ">=", "<", "<=")
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
_LIST_OPS = ("IN", "NOT IN")
_NULL_OPS = ("IS NULL", "IS NOT NULL")

# --- Tokenizer ---

# A dotted run of word characters is one token (like an SQL identifier), so that
# `tags.mlflow.runName` and `metrics.1a` work unquoted, as they do in MLflow.
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<name>\w+(?:\.\w+)*)
  | (?P<op>!=|>=|<=|==|<>|=|<|>)
  | (?P<punct>[.,()])
  | (?P<quote>['"`])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number | name | op | punct | string ('/") | backtick
    text: str  # decoded text (quotes removed for string/backtick)
    raw: str  # as written, for error messages
    quote: str = ""


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise SearchFilterError(
                f"Invalid clause(s) in filter string: {text[pos]!r} (unexpected character at position {pos})"
            )
        kind = m.lastgroup
        if kind == "ws":
            pos = m.end()
        elif kind == "quote":
            tok, pos = _read_quoted(text, pos)
            tokens.append(tok)
        else:
            tokens.append(_Token(kind, m.group(), m.group()))
            pos = m.end()
    return tokens


def _read_quoted(text: str, start: int) -> tuple[_Token, int]:
    """Read a quoted literal; a doubled quote character stands for one quote."""
    quote = text[start]
    parts: list[str] = []
    pos = start + 1
    while True:
        end = text.find(quote, pos)
        if end < 0:
            raise SearchFilterError(
                f"Unterminated quoted value starting at position {start}: {text[start:]!r}"
            )
        parts.append(text[pos:end])
        if text.startswith(quote * 2, end):
            parts.append(quote)
            pos = end + 2
            continue
        kind = "backtick" if quote == "`" else "string"
        return _Token(kind, "".join(parts), text[start:end + 1], quote), end + 1


class _Cursor:
    """Sequential access to a token list with keyword helpers."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self, ahead: int = 0) -> _Token | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def next(self) -> _Token | None:
        tok = self.peek()
        if tok is not None:
            self.i += 1
        return tok

    def at_keyword(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok is not None and tok.kind == "name" and tok.text.upper() == word

    def at_punct(self, char: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "punct" and tok.text == char


# --- Grammar profiles: which entities / keys / comparators each endpoint accepts ---


@dataclass(frozen=True)
class _Profile:
    label: str
    entity_aliases: dict[str, str]
    attribute_ops: dict[str, tuple[str, ...]]  # canonical attribute -> allowed comparators
    attribute_aliases: dict[str, str]
    unfilterable: dict[str, str]
    orderable_entities: frozenset[str]
    integer_times: bool  # experiments' SQL store rejects fractional timestamps

    def allowed_ops(self, entity: str, key: str) -> tuple[str, ...]:
        if entity == "metric":
            return _NUMERIC_OPS
        if entity in ("param", "tag"):
            return _STRING_OPS + _NULL_OPS
        if entity == "dataset":
            return _STRING_OPS + _LIST_OPS
        return self.attribute_ops[key]

    def is_numeric(self, entity: str, key: str) -> bool:
        return entity == "metric" or (entity == "attribute" and self.attribute_ops[key] == _NUMERIC_OPS)


_RUNS = _Profile(
    label="runs",
    entity_aliases=_RUN_ENTITY_ALIASES,
    attribute_ops={
        "run_id": _STRING_OPS + _LIST_OPS, "run_name": _STRING_OPS, "user_id": _STRING_OPS,
        "status": _STRING_OPS, "artifact_uri": _STRING_OPS,
        "start_time": _NUMERIC_OPS, "end_time": _NUMERIC_OPS,
    },
    attribute_aliases=_RUN_ATTRIBUTE_ALIASES,
    unfilterable=_RUN_UNFILTERABLE,
    orderable_entities=frozenset({"metric", "param", "tag", "attribute"}),
    integer_times=False,
)
_EXPERIMENTS = _Profile(
    label="experiments",
    entity_aliases=_EXPERIMENT_ENTITY_ALIASES,
    attribute_ops={
        "name": _STRING_OPS,
        # experiment ids are nominal: MLflow's SQL store refuses LIKE / ILIKE on them
        "experiment_id": ("=", "!=") + _LIST_OPS,
        "creation_time": _NUMERIC_OPS, "last_update_time": _NUMERIC_OPS,
    },
    attribute_aliases={},
    unfilterable={},
    orderable_entities=frozenset({"attribute"}),
    integer_times=True,
)

# --- Parsing ---


def _parse_identifier(cur: _Cursor, profile: _Profile) -> tuple[str, str]:
    """Parse ``[entity.]key`` and return (canonical entity, canonical key)."""
    first = cur.next()
    if first is None:
        raise SearchFilterError("Expected an identifier but the clause ended")
    if first.kind == "punct" and first.text == "(":
        raise SearchFilterError(
            "Invalid clause(s) in filter string: '(' (parentheses are not supported; join comparisons with AND)"
        )
    if first.kind == "name" and first.text.upper() in ("OR", "NOT"):
        raise SearchFilterError(f"Invalid clause(s) in filter string: {first.raw!r}")

    if first.kind == "name" and "." in first.text:
        entity_text, key = first.text.split(".", 1)
        entity = _resolve_entity(entity_text, profile)
    elif first.kind in ("name", "backtick") and cur.at_punct("."):
        cur.next()
        entity = _resolve_entity(first.text, profile)
        key_tok = cur.next()
        if key_tok is None or key_tok.kind not in ("name", "string", "backtick"):
            shown = key_tok.raw if key_tok else "end of clause"
            raise SearchFilterError(f"Invalid key after '{first.raw}.': {shown!r}")
        if key_tok.kind == "string" and key_tok.quote == "'":
            raise SearchFilterError(
                f"Invalid key {key_tok.raw}: quote keys with double quotes or backticks"
            )
        key = key_tok.text
    elif first.kind in ("name", "backtick") or (first.kind == "string" and first.quote == '"'):
        entity, key = "attribute", first.text
    else:
        raise SearchFilterError(f"Invalid clause(s) in filter string: expected an identifier, found {first.raw!r}")
    return entity, _canonical_key(entity, key, profile)


def _resolve_entity(text: str, profile: _Profile) -> str:
    entity = profile.entity_aliases.get(text)
    if entity is None:
        valid = ", ".join(sorted(profile.entity_aliases))
        raise SearchFilterError(f"Invalid entity type '{text}'. Valid values are: {valid}")
    return entity


def _canonical_key(entity: str, key: str, profile: _Profile) -> str:
    if entity == "attribute":
        if key in profile.unfilterable:
            raise SearchFilterError(
                f"Attribute '{key}' cannot be used in a {profile.label} search filter or order_by; "
                f"{profile.unfilterable[key]}"
            )
        canonical = profile.attribute_aliases.get(key, key)
        if canonical not in profile.attribute_ops:
            valid = ", ".join(sorted(profile.attribute_ops))
            raise SearchFilterError(f"Invalid attribute key '{key}' specified. Valid keys are: {valid}")
        return canonical
    if entity == "dataset" and key not in _DATASET_KEYS:
        raise SearchFilterError(
            f"Invalid dataset key '{key}' specified. Valid keys are: {', '.join(sorted(_DATASET_KEYS))}"
        )
    if key == "":
        raise SearchFilterError(f"Empty key for {entity}")
    return key


def _parse_comparator(cur: _Cursor) -> str:
    tok = cur.next()
    if tok is None:
        raise SearchFilterError("Expected a comparator but the clause ended")
    if tok.kind == "op":
        return tok.text
    if tok.kind == "name":
        word = tok.text.upper()
        if word in ("LIKE", "ILIKE", "IN"):
            return word
        if word == "NOT" and (cur.at_keyword("IN") or cur.at_keyword("LIKE") or cur.at_keyword("ILIKE")):
            return "NOT " + cur.next().text.upper()
        if word == "IS":
            if cur.at_keyword("NULL"):
                cur.next()
                return "IS NULL"
            if cur.at_keyword("NOT") and cur.at_keyword("NULL", 1):
                cur.next()
                cur.next()
                return "IS NOT NULL"
    raise SearchFilterError(f"Invalid comparator {tok.raw!r}")


def _parse_string_list(cur: _Cursor, what: str) -> tuple[str, ...]:
    if not cur.at_punct("("):
        found = cur.peek().raw if cur.peek() else "end of clause"
        raise SearchFilterError(f"Expected a parenthesised list of quoted strings for {what}, found {found!r}")
    cur.next()
    items: list[str] = []
    while not cur.at_punct(")"):
        tok = cur.next()
        if tok is None or tok.kind != "string":
            shown = tok.raw if tok else "end of clause"
            raise SearchFilterError(f"Expected a quoted string in the list for {what}, found {shown!r}")
        items.append(tok.text)
        if cur.at_punct(","):
            cur.next()
        elif not cur.at_punct(")"):
            shown = cur.peek().raw if cur.peek() else "end of clause"
            raise SearchFilterError(f"Expected ',' or ')' in the list for {what}, found {shown!r}")
    cur.next()
    if not items:
        raise SearchFilterError(f"The list for {what} must contain at least one quoted string")
    return tuple(items)


def _parse_value(cur: _Cursor, entity: str, key: str, op: str, profile: _Profile) -> Value:
    what = f"{entity} '{key}'"
    if op in _NULL_OPS:
        return None
    if op in _LIST_OPS:
        return _parse_string_list(cur, what)
    tok = cur.next()
    if tok is None:
        raise SearchFilterError(f"Missing value for {what}")
    if profile.is_numeric(entity, key):
        if tok.kind != "number":
            raise SearchFilterError(f"Expected an unquoted numeric value for {what}, found {tok.raw!r}")
        if profile.integer_times and not re.fullmatch(r"-?\d+", tok.text):
            raise SearchFilterError(f"Expected an integer (milliseconds) for {what}, found {tok.raw!r}")
        return float(tok.text)
    if tok.kind != "string":
        raise SearchFilterError(
            f"Expected a quoted string value for {what} (e.g. 'my-value'), found {tok.raw!r}; "
            "use single or double quotes"
        )
    return tok.text


def _parse_comparison(cur: _Cursor, profile: _Profile) -> Comparison:
    entity, key = _parse_identifier(cur, profile)
    op = _parse_comparator(cur)
    allowed = profile.allowed_ops(entity, key)
    if op not in allowed:
        raise SearchFilterError(
            f"Invalid comparator '{op}' for {entity} key '{key}'; allowed comparators are: {', '.join(allowed)}"
        )
    return Comparison(entity, key, op, _parse_value(cur, entity, key, op, profile))


def _parse_filter(text: str | None, profile: _Profile) -> list[Comparison]:
    if text is None or not text.strip():
        return []
    cur = _Cursor(_tokenize(text))
    result: list[Comparison] = []
    while True:
        # Stray ANDs (leading, doubled, trailing) are ignored, as MLflow does.
        while cur.at_keyword("AND"):
            cur.next()
        if cur.peek() is None:
            return result
        result.append(_parse_comparison(cur, profile))
        tok = cur.peek()
        if tok is None:
            return result
        if not cur.at_keyword("AND"):
            if tok.kind == "name" and tok.text.upper() in ("OR", "NOT"):
                raise SearchFilterError(f"Invalid clause(s) in filter string: {tok.raw.upper()!r}")
            raise SearchFilterError(
                f"Invalid clause(s) in filter string: {tok.raw!r} (comparisons must be joined with AND)"
            )


def parse_runs_filter(text: str | None) -> list[Comparison]:
    """Parse a ``runs/search`` filter; None or blank gives ``[]``.

    Raises SearchFilterError for any syntax error, unknown entity/attribute,
    comparator not allowed for the entity, or value of the wrong kind.
    """
    return _parse_filter(text, _RUNS)


def parse_experiments_filter(text: str | None) -> list[Comparison]:
    """Parse an ``experiments/search`` filter; None or blank gives ``[]``.

    Attributes are name, experiment_id, creation_time, last_update_time; the only
    entity prefixes are attribute, tag and tags.
    """
    return _parse_filter(text, _EXPERIMENTS)


def _parse_order_by(items: list[str] | None, profile: _Profile) -> list[OrderTerm]:
    terms: list[OrderTerm] = []
    seen: set[tuple[str, str]] = set()
    for item in items or []:
        if item is None or not item.strip():
            raise SearchFilterError(f"Invalid order_by clause {item!r}: it is empty")
        try:
            cur = _Cursor(_tokenize(item))
            entity, key = _parse_identifier(cur, profile)
        except SearchFilterError as exc:
            raise SearchFilterError(f"Invalid order_by clause '{item}': {exc}") from None
        if entity not in profile.orderable_entities:
            raise SearchFilterError(f"Invalid order_by clause '{item}': cannot order {profile.label} by {entity}")
        ascending = True
        tok = cur.next()
        if tok is not None:
            if tok.kind != "name" or tok.text.upper() not in ("ASC", "DESC"):
                raise SearchFilterError(f"Invalid order_by clause '{item}': expected ASC or DESC, found {tok.raw!r}")
            ascending = tok.text.upper() == "ASC"
        if cur.peek() is not None:
            raise SearchFilterError(f"Invalid order_by clause '{item}': unexpected {cur.peek().raw!r}")
        if (entity, key) in seen:
            raise SearchFilterError(f"order_by contains duplicate fields: {entity} '{key}' appears more than once")
        seen.add((entity, key))
        terms.append(OrderTerm(entity, key, ascending))
    return terms


def parse_runs_order_by(items: list[str] | None) -> list[OrderTerm]:
    """Parse ``runs/search`` order_by items (``<identifier> [ASC|DESC]`` each).

    Orderable: run attributes, metrics, params, tags. Duplicates (after alias
    resolution, so ``created`` duplicates ``start_time``) raise SearchFilterError.
    """
    return _parse_order_by(items, _RUNS)


def parse_experiments_order_by(items: list[str] | None) -> list[OrderTerm]:
    """Parse ``experiments/search`` order_by items; only the four attributes are orderable."""
    return _parse_order_by(items, _EXPERIMENTS)
