"""The GraphQL documents a wandb release sends, read out of its wheel (never copied by hand).

Two sources in a wheel:
* Python (`wandb/**/*.py`): string constants, `.format(...)` templates and f-strings that hold a
  GraphQL operation. Template holes are filled with every value the code can give them, found
  statically: constants, `a if c else b`, names assigned in the same function or module, and a
  function parameter's arguments at the call sites in the same module (how `Run` gets its
  fragment). Nothing is imported or executed.
* The Go helper `wandb/bin/wandb-core` (≥ 0.27), whose generated client embeds each document as a
  string: operations are cut out of the binary by balanced braces.

`operations(source)` returns {operation name: [document text, ...]} (one name can have several
documents, e.g. the three `UpsertBucket` mutations); each document holds the operation and the
fragments it uses.
"""

from __future__ import annotations

import ast
import itertools
import re
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

from graphql import (DocumentNode, FragmentDefinitionNode, FragmentSpreadNode, GraphQLError, OperationDefinitionNode,
                     parse, print_ast, visit, Visitor)

_OPERATION = re.compile(r"\b(query|mutation)\s+[A-Za-z_]\w*\s*[({]")
MAX_VARIANTS = 32


def python_sources(root: Path | zipfile.ZipFile) -> Iterator[tuple[str, str]]:
    """(path, text) of the public API's Python files (`wandb/apis/`), from an installed package
    folder or a wheel. wandb.init()'s own documents (wandb/sdk/) are another protocol."""
    if isinstance(root, zipfile.ZipFile):
        for name in root.namelist():
            if name.startswith("wandb/apis/") and name.endswith(".py"):
                yield name, root.read(name).decode("utf-8", "replace")
    else:
        for path in sorted((root / "apis").rglob("*.py")):
            yield str(path), path.read_text("utf-8", "replace")


def core_binary(root: Path | zipfile.ZipFile) -> bytes | None:
    if isinstance(root, zipfile.ZipFile):
        try:
            return root.read("wandb/bin/wandb-core")
        except KeyError:
            return None
    path = root / "bin" / "wandb-core"
    return path.read_bytes() if path.exists() else None


# ----- Python: static values of template holes

class _Module:
    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.constants: dict[str, list[ast.expr]] = {}
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        self.constants.setdefault(target.id, []).append(stmt.value)

    def function_of(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None

    def values(self, expr: ast.expr, depth: int = 0) -> list[str]:
        """Every string `expr` can be, as far as a static reading tells (empty: unknown)."""
        if depth > 6:
            return []
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, ast.IfExp):
            return self.values(expr.body, depth + 1) + self.values(expr.orelse, depth + 1)
        if isinstance(expr, ast.JoinedStr):
            return self.joined(expr, depth + 1)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "format":
            return self.formatted(expr, depth + 1)
        if isinstance(expr, ast.Name):
            return self.name_values(expr, depth + 1)
        return []

    def name_values(self, name: ast.Name, depth: int) -> list[str]:
        func = self.function_of(name)
        if func is not None:
            params = [a.arg for a in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]]
            if name.id in params:
                return self.argument_values(func, name.id, depth)
            assigned = [n.value for n in ast.walk(func) if isinstance(n, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == name.id for t in n.targets)]
            if assigned:
                return [v for e in assigned for v in self.values(e, depth)]
        return [v for e in self.constants.get(name.id, []) for v in self.values(e, depth)]

    def argument_values(self, func: ast.FunctionDef | ast.AsyncFunctionDef, param: str, depth: int) -> list[str]:
        positional = [a.arg for a in [*func.args.posonlyargs, *func.args.args]]
        index = positional.index(param) if param in positional else None
        if index is not None and positional and positional[0] in ("self", "cls"):
            index -= 1
        out: list[str] = []
        for call in ast.walk(self.tree):
            if not isinstance(call, ast.Call):
                continue
            callee = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
            if callee != func.name:
                continue
            for kw in call.keywords:
                if kw.arg == param:
                    out += self.values(kw.value, depth)
            if index is not None and 0 <= index < len(call.args):
                out += self.values(call.args[index], depth)
        return out

    def joined(self, expr: ast.JoinedStr, depth: int) -> list[str]:
        parts: list[list[str]] = []
        for value in expr.values:
            if isinstance(value, ast.Constant):
                parts.append([str(value.value)])
            elif isinstance(value, ast.FormattedValue):
                found = self.values(value.value, depth)
                if not found:
                    return []
                parts.append(list(dict.fromkeys(found)))
        return ["".join(p) for p in itertools.islice(itertools.product(*parts), MAX_VARIANTS)]

    def formatted(self, call: ast.Call, depth: int) -> list[str]:
        assert isinstance(call.func, ast.Attribute)
        templates = self.values(call.func.value, depth)
        args = [list(dict.fromkeys(self.values(a, depth))) for a in call.args]
        if not templates or any(not a for a in args) or call.keywords:
            return []
        out = []
        for template in templates:
            for combo in itertools.islice(itertools.product(*args), MAX_VARIANTS):
                try:
                    out.append(template.format(*combo))
                except (IndexError, KeyError, ValueError):
                    pass
        return out


def python_documents(sources: Iterable[tuple[str, str]]) -> Iterator[str]:
    for _path, text in sources:
        if "query" not in text and "mutation" not in text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        module = _Module(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
                candidates = module.formatted(node, 0)
            elif isinstance(node, ast.JoinedStr):
                candidates = module.joined(node, 0)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                candidates = [node.value]
            else:
                continue
            for candidate in candidates:
                if _OPERATION.search(candidate):
                    yield candidate


# ----- Go helper: documents embedded in the binary

_GO_START = re.compile(rb"(?:query|mutation) [A-Za-z_]\w* ?(?:\([^)]{0,2000}\))? ?\{")
_GO_FRAGMENT = re.compile(rb"\s*fragment [A-Za-z_]\w* on [A-Za-z_]\w* ?\{")


def _balanced(data: bytes, start: int) -> int | None:
    """Index just past the brace block opening at or after `start`."""
    depth = 0
    for i in range(data.index(b"{", start), min(len(data), start + 200_000)):
        c = data[i]
        if c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
        elif c < 0x09:  # binary data: not a document
            return None
    return None


def go_documents(binary: bytes) -> Iterator[str]:
    for m in _GO_START.finditer(binary):
        end = _balanced(binary, m.start())
        if end is None:
            continue
        while True:  # genqlient appends the fragments an operation uses
            f = _GO_FRAGMENT.match(binary, end)
            if f is None:
                break
            fragment_end = _balanced(binary, f.start())
            if fragment_end is None:
                break
            end = fragment_end
        try:
            yield binary[m.start():end].decode()
        except UnicodeDecodeError:
            continue


# ----- operations by name

class _Spreads(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_args: object) -> None:
        self.names.add(node.name.value)


def _used_fragments(node: OperationDefinitionNode | FragmentDefinitionNode,
                    fragments: dict[str, FragmentDefinitionNode], seen: set[str]) -> None:
    spreads = _Spreads()
    visit(node, spreads)
    for name in spreads.names - seen:
        seen.add(name)
        if name in fragments:
            _used_fragments(fragments[name], fragments, seen)


def split_operations(text: str) -> dict[str, str]:
    """Each named operation of a document text with the fragments it uses, printed."""
    try:
        doc = parse(text)
    except GraphQLError:
        return {}
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
    out = {}
    for op in doc.definitions:
        if isinstance(op, OperationDefinitionNode) and op.name is not None:
            used: set[str] = set()
            _used_fragments(op, fragments, used)
            parts = [op, *(fragments[n] for n in sorted(used) if n in fragments)]
            out[op.name.value] = "\n\n".join(print_ast(DocumentNode(definitions=(p,))) for p in parts)
    return out


def _consistent(doc: str) -> bool:
    """False for a template variant no code path sends: holes filled independently can pair a
    variable use with a declaration left out (DeleteRun's two `deleteArtifacts` holes)."""
    from graphql import validate
    from graphql.validation import KnownFragmentNamesRule, NoUndefinedVariablesRule, NoUnusedVariablesRule

    rules = [NoUndefinedVariablesRule, NoUnusedVariablesRule, KnownFragmentNamesRule]
    return not validate(_EMPTY_SCHEMA, parse(doc), rules)


def _empty_schema():  # type: ignore[no-untyped-def]
    from graphql import build_schema

    return build_schema("type Query { ok: Boolean }")


_EMPTY_SCHEMA = _empty_schema()


def operations(root: Path | zipfile.ZipFile, source: str) -> dict[str, list[str]]:
    """`source` is "python" (the public API's modules) or "core" (the Go helper; {} before 0.27)."""
    found: dict[str, list[str]] = {}
    if source == "python":
        texts = list(python_documents(python_sources(root)))
    else:
        binary = core_binary(root)
        texts = list(go_documents(binary)) if binary is not None else []
    for text in texts:
        for name, doc in split_operations(text).items():
            if not _consistent(doc):
                continue
            if doc not in found.setdefault(name, []):
                found[name].append(doc)
    return found
