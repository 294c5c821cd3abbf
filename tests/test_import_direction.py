"""DESIGN.md layout: imports point one way. Nothing imports `query` but the composition root
(`runledger.app`); `ingest` never imports `projector` (nor `query`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


ROOMS = {"ingest", "projector", "query"}


def _room(module: str) -> str:
    """`runledger.ingest.writer` -> "ingest"; `runledger.app` -> "runledger"; `duckdb` -> "duckdb"."""
    parts = module.split(".")
    if parts[0] == "runledger" and len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    return parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {_room(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_room(node.module))
            if node.module == "runledger":
                found |= {_room(f"runledger.{a.name}") for a in node.names}
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("ingest"), ids=lambda p: str(p.relative_to(ROOT)))
def test_ingest_imports_neither_projector_nor_query(path: Path) -> None:
    assert not _imports(path) & {"projector", "query", "runledger"}


@pytest.mark.parametrize("path", _modules("projector"), ids=lambda p: str(p.relative_to(ROOT)))
def test_projector_does_not_import_query(path: Path) -> None:
    assert not _imports(path) & {"query", "runledger"}


def test_only_the_app_and_the_dialect_rooms_import_query_outside_query_itself() -> None:
    importers = {str(p.relative_to(ROOT)) for pkg in ("ingest", "projector", "runledger")
                 for p in _modules(pkg) if "query" in _imports(p)}
    rooms = {p for p in importers if p.startswith("runledger/dialects/")}  # HTTP rooms read via query
    assert importers - rooms == {"runledger/app.py"}


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_rooms_are_never_imported_by_their_old_top_level_names(room: str) -> None:
    offenders = [str(p.relative_to(ROOT)) for pkg in (*ROOMS, "runledger", "tests", "bench")
                 for p in _modules(pkg) if _raw_top_levels(p) & {room}]
    assert offenders == []


def _raw_top_levels(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found
