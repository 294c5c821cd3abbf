"""Imports point one way (docs/design.md, "Rooms"): dialects -> query, ingest; query ->
projector -> ingest. `ingest` imports no other room; only the dialect rooms and the composition
root (`runledger.app`) import `query`; no dialect reaches past the reader into `projector`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


ROOMS = {"ingest", "projector", "query"}


def _room(module: str) -> str:
    """`runledger.ingest.writer` -> "ingest"; `runledger.dialects.mlflow.reads` -> "dialects";
    `runledger.app` -> "runledger"; `duckdb` -> "duckdb"."""
    parts = module.split(".")
    if parts[0] == "runledger" and len(parts) > 1 and parts[1] in ROOMS | {"dialects", "client"}:
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
    """The package's own modules (not a virtual environment kept inside it, as bench/ keeps MLflow's)."""
    return sorted(p for p in (ROOT / package).rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


DIALECTS = ROOT / "runledger" / "dialects"
# The web UI (runledger/ui) is a room like a dialect: an HTTP surface over the reader.
UI = ROOT / "runledger" / "ui"


@pytest.mark.parametrize("path", _modules("ingest"), ids=lambda p: str(p.relative_to(ROOT)))
def test_ingest_imports_no_other_room(path: Path) -> None:
    """The client's published limits (runledger.client.limits) are the one exception: the
    contract both sides read."""
    assert not _imports(path) & {"projector", "query", "dialects", "runledger"}


@pytest.mark.parametrize("path", _modules("projector"), ids=lambda p: str(p.relative_to(ROOT)))
def test_projector_imports_only_ingest(path: Path) -> None:
    assert not _imports(path) & {"query", "dialects", "runledger"}


@pytest.mark.parametrize("path", _modules("query"), ids=lambda p: str(p.relative_to(ROOT)))
def test_query_imports_no_dialect(path: Path) -> None:
    assert not _imports(path) & {"dialects", "runledger"}


@pytest.mark.parametrize("path", sorted([*DIALECTS.rglob("*.py"), *UI.rglob("*.py")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_dialects_reach_the_read_model_only_through_query(path: Path) -> None:
    assert "projector" not in _imports(path)


def test_only_dialects_and_the_app_import_query() -> None:
    importers = {str(p.relative_to(ROOT)) for pkg in ("ingest", "projector", "runledger")
                 for p in _modules(pkg) if "query" in _imports(p) and DIALECTS not in p.parents and UI not in p.parents}
    assert importers == {"runledger/app.py"}


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


CLIENT = ROOT / "client" / "runledger" / "client"


def _full_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(CLIENT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_client_imports_nothing_from_the_server(path: Path) -> None:
    """Only the opt-in straight-to-Kafka transport, imported when asked for, lives server-side."""
    server_side = {m for m in _full_imports(path) if m.startswith("runledger.") and not m.startswith("runledger.client")}
    assert server_side <= {"runledger.kafka_transport"}
    assert not _full_imports(path) & {"duckdb", "aiokafka", "fastapi", "uvicorn", "starlette"}


def test_ingest_reads_only_the_published_limits_from_the_client() -> None:
    readers = {str(p.relative_to(ROOT)): {m for m in _full_imports(p) if m.startswith("runledger.client")}
               for p in _modules("ingest")}
    assert {m for found in readers.values() for m in found} <= {"runledger.client"}
    assert {k for k, v in readers.items() if v} == {"ingest/limits.py"}
