"""The two distributions as users install them: wheels built from this checkout, each installed
into a fresh virtual environment (real pip, real PyPI for third-party dependencies).

- runledger-server installs exactly one top-level import package, `runledger` (a user's own
  `ingest/` folder cannot shadow it, and nothing else in site-packages is overwritten);
- runledger-client pulls no server dependency (duckdb, aiokafka, fastapi, uvicorn, pyarrow)
  and imports nothing from the server;
- installed together, `runledger.client` and the server live in one `runledger` namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER_ONLY = {"duckdb", "aiokafka", "fastapi", "uvicorn", "pyarrow", "starlette", "rbloom"}


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=900)
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for source in (ROOT / "client", ROOT):
        _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, source)
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"runledger_client", "runledger_server"}, found
    return found


def _venv(path: Path) -> Path:
    _run(sys.executable, "-m", "venv", path)
    return path / "bin" / "python"


def _top_levels(python: Path, distribution: str) -> set[str]:
    """Top-level import names a distribution installed, from its RECORD (run outside the
    checkout, whose egg-info would otherwise answer)."""
    script = textwrap.dedent(f"""
        import importlib.metadata as m, json
        files = m.distribution({distribution!r}).files or []
        tops = {{f.parts[0].removesuffix(".py") for f in files
                 if not f.parts[0].endswith((".dist-info", ".data")) and f.parts[0] not in ("..", "__pycache__")}}
        print(json.dumps(sorted(tops)))
    """)
    return set(json.loads(_run(python, "-c", script, cwd=python.parent)))


def _installed(python: Path) -> set[str]:
    listing = json.loads(_run(python, "-m", "pip", "list", "--format=json"))
    return {p["name"].lower().replace("_", "-") for p in listing}


def test_the_client_alone_pulls_no_server_dependency(wheels: dict[str, Path], tmp_path: Path) -> None:
    python = _venv(tmp_path / "client-venv")
    _run(python, "-m", "pip", "install", "-q", wheels["runledger_client"])
    assert not _installed(python) & SERVER_ONLY
    assert _top_levels(python, "runledger-client") == {"runledger"}
    # A user's own `ingest/` folder next to the training script changes nothing.
    (tmp_path / "job" / "ingest").mkdir(parents=True)
    (tmp_path / "job" / "ingest" / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    out = _run(python, "-c", "from runledger.client import MetricStream, limits; print(limits.MAX_EVENT_POINTS)",
               cwd=tmp_path / "job")
    assert out.strip() == "50000"


def test_the_server_installs_one_top_level_package_beside_the_client(wheels: dict[str, Path], tmp_path: Path) -> None:
    python = _venv(tmp_path / "server-venv")
    _run(python, "-m", "pip", "install", "-q", wheels["runledger_client"], wheels["runledger_server"])
    assert _top_levels(python, "runledger-server") == {"runledger"}
    (tmp_path / "job" / "ingest").mkdir(parents=True)
    (tmp_path / "job" / "ingest" / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    out = _run(python, "-c", "import runledger.app, runledger.ingest.limits, runledger.client as c; "
                             "print(c.MetricStream.__module__, runledger.ingest.limits.MAX_KEY_LENGTH)",
               cwd=tmp_path / "job")
    assert out.split() == ["runledger.client.stream", "250"]
