"""The Docker files agree with the README and with pyproject.toml: every runtime dependency is
pinned for the image, the health checks probe readiness, the documented command is the file's."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_runtime_dependency_is_pinned_for_the_image() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {_name(line): line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    missing = [d for d in deps if _name(d) not in pinned and not _name(d).startswith("runledger")]
    assert missing == [], "add them to constraints.txt (see its header)"
    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()


def test_the_images_are_pinned() -> None:
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base.group(1))
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", compose["services"]["kafka"]["image"])


def test_health_checks_probe_readiness() -> None:
    assert "/health/ready" in (ROOT / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert "/health/ready" in " ".join(compose["services"]["runledger"]["healthcheck"]["test"])


def test_the_readme_and_the_compose_header_give_the_same_command() -> None:
    header = (ROOT / "compose.yaml").read_text().split("services:", 1)[0]
    command = re.search(r"docker compose up[^\n]*", header)
    assert command is not None
    assert command.group(0).strip() in (ROOT / "README.md").read_text()


def test_the_artifact_root_is_set_and_the_data_volume_mounted() -> None:
    runledger = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["runledger"]
    assert "RUNLEDGER_ARTIFACT_ROOT" in runledger["environment"]
    assert any(v.endswith(":/data") for v in runledger["volumes"])
