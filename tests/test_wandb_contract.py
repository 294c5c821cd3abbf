"""Contract: every GraphQL document a pinned wandb release sends on the paths Runledger serves,
read out of the release's wheel (tests/wandb_documents.py), validates against our schema. A
new client version that asks for a field we lack fails here, not in a user's script.

The installed wandb (the one the real-client tests run) is read from site-packages; the other
pinned releases are downloaded as wheels by pip (no install) into a cache folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from graphql import parse, validate

from runledger.dialects.wandb.routes import SCHEMA
from tests.wandb_documents import operations

INSTALLED = "0.31.0"
# Older releases the dialect also serves (contract only): 0.28 is the last before the current
# Go history reader changes, 0.26 the last whose scan_history ran in Python.
OTHER_PINNED = ("0.28.2", "0.26.1")

# Operation name -> who sends it. Every one must be in each pinned release (a rename would mean
# the client moved to a document we have never checked).
SERVED = {
    "Runs": "api.runs()", "Run": "api.run(), run.load()", "RunSampledHistory": "run.history(keys=...)",
    "RunFullHistory": "run.history()", "RunHistoryKeys": "run.lastHistoryStep, run.scan_history()",
    "RunState": "run.wait_until_finished()", "UpsertBucket": "run.update(), run.summary.update()",
    "DeleteRun": "run.delete()", "GetDefaultEntity": "api.runs() without an entity",
    "GetProject": "api.project()", "GetProjects": "api.projects()", "GetViewer": "api.viewer",
}
# Sent by the Go helper (wandb-core) from 0.27 on.
SERVED_BY_CORE = {
    "Viewer": "wandb.Api() login check", "HistoryPage": "run.scan_history() pages",
    "RunParquetHistory": "run.scan_history() start", "SampledHistoryPage": "run.scan_history(keys=...)",
    "ServerFeaturesQuery": "feature checks",
}
SERVED_BEFORE_CORE = {"HistoryPage": "run.scan_history() pages"}


def _installed_root() -> Path:
    import wandb

    assert wandb.__version__ == INSTALLED, f"the test extra pins wandb=={INSTALLED}, found {wandb.__version__}"
    return Path(wandb.__file__).parent


def _wheel(version: str) -> zipfile.ZipFile:
    cache = Path(os.environ.get("RUNLEDGER_WHEEL_CACHE", Path.home() / ".cache" / "runledger-wheels"))
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"wandb-{version}-*manylinux*x86_64.whl")) or sorted(cache.glob(f"wandb-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                        "--dest", str(cache), f"wandb=={version}"], check=True, timeout=600)
        found = sorted(cache.glob(f"wandb-{version}-*.whl"))
    assert found, f"pip did not download wandb {version}"
    return zipfile.ZipFile(found[0])


_extracted: dict[tuple[str, str], dict[str, list[str]]] = {}


def documents(version: str, source: str) -> dict[str, list[str]]:
    if (version, source) not in _extracted:
        root = _installed_root() if version == INSTALLED else _wheel(version)
        _extracted[version, source] = operations(root, source)
    return _extracted[version, source]


def _has_core(version: str) -> bool:
    return tuple(int(p) for p in version.split(".")[:2]) >= (0, 27)


def _expected(version: str) -> list[tuple[str, str, str]]:
    """(source, operation, who sends it) the release must contain."""
    python = {**SERVED, **({} if _has_core(version) else SERVED_BEFORE_CORE)}
    core = SERVED_BY_CORE if _has_core(version) else {}
    return [("python", n, w) for n, w in python.items()] + [("core", n, w) for n, w in core.items()]


@pytest.mark.parametrize("version", [INSTALLED, *OTHER_PINNED])
def test_every_served_operation_is_in_the_wheel(version: str) -> None:
    missing = sorted(f"{name} ({source})" for source, name, _ in _expected(version)
                     if not documents(version, source).get(name))
    assert not missing, f"wandb {version} no longer sends {missing}: check what replaced them"


@pytest.mark.parametrize("version", [INSTALLED, *OTHER_PINNED])
def test_every_document_the_client_sends_validates_against_our_schema(version: str) -> None:
    problems = []
    checked = 0
    for source, name, who in _expected(version):
        for text in documents(version, source).get(name, []):
            checked += 1
            for error in validate(SCHEMA, parse(text)):
                problems.append(f"{name} ({who}): {error.message}")
    assert not problems, "\n".join(problems)
    assert checked >= len(_expected(version))


def test_the_extractor_sees_a_field_we_do_not_serve() -> None:
    """The check can fail: a document naming an unknown field is reported."""
    text = documents(INSTALLED, "python")["RunState"][0].replace("state", "stateOfTheArt")
    assert any("stateOfTheArt" in e.message for e in validate(SCHEMA, parse(text)))
