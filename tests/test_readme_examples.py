"""The streaming client's example in README.md and client/README.md runs as written (only the
server address is this test server's): it streams into the script's MLflow run, or a new one."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

README_URL = "http://127.0.0.1:5000"


def _example(readme: Path) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme.read_text(), re.S) if "MetricStream(" in b]
    assert len(blocks) == 1, f"{readme}: expected one MetricStream example"
    return blocks[0]


def _run(code: str, url: str) -> None:
    done = subprocess.run([sys.executable, "-c", code.replace(README_URL, url)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)})
    assert done.returncode == 0, done.stderr


def _points(url: str, run_id: str, expected: int) -> int:
    deadline = time.monotonic() + 60
    while True:
        got = httpx.get(f"{url}/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"},
                        timeout=60).json().get("metrics", [])
        if len(got) >= expected or time.monotonic() > deadline:
            return len(got)
        time.sleep(0.5)


def _runs(url: str) -> list[dict]:
    found = httpx.post(f"{url}/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"]}).json()
    return found.get("runs", [])


@pytest.mark.parametrize("readme", ["README.md", "client/README.md"])
def test_the_example_creates_a_run_when_none_is_active(make_server, readme: str) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    _run(_example(ROOT / readme), server.url)
    runs = _runs(server.url)
    assert len(runs) == 1
    run = runs[0]["info"]
    assert run["status"] == "FINISHED"
    assert _points(server.url, run["run_id"], 100_000) == 100_000


def test_the_example_streams_into_the_scripts_active_run(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    mine = (f'import mlflow\nmlflow.set_tracking_uri("{README_URL}")\nmlflow.start_run(run_name="mine")\n'
            + _example(ROOT / "README.md"))
    _run(mine, server.url)
    runs = _runs(server.url)
    assert [r["info"]["run_name"] for r in runs] == ["mine"]
    assert _points(server.url, runs[0]["info"]["run_id"], 100_000) == 100_000
