"""The `runledger` command line as an operator meets it: flags for every setting, each naming its
variable and default; a version; help on every command; one clear line for every bad start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runledger.kafka_local import free_port
from runledger.settings import Settings, env_name, flag_name
from tests.conftest import ROOT

COMMANDS = ("up", "serve", "kafka", "replay", "verify", "sql")
WITH_SETTINGS = ("up", "serve", "kafka", "replay", "verify")


def _runledger(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run([sys.executable, "-m", "runledger.cli", *args], env={**base, "COLUMNS": "200", **(env or {})},
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _help(*args: str) -> str:
    """--help output, in-process (click's runner; the console script is the same `cli` group)."""
    from click.testing import CliRunner

    from runledger.cli import cli

    done = CliRunner().invoke(cli, [*args, "--help"], prog_name="runledger", terminal_width=200)
    assert done.exit_code == 0, done.output
    return done.output


def test_version_prints_the_distribution_version() -> None:
    from importlib.metadata import version

    done = _runledger("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"runledger {version('runledger-server')}"


def _all_commands() -> list[list[str]]:
    """Every command and subcommand path, e.g. ["up"], ["users", "create"]."""
    import click

    from runledger.cli import cli

    found: list[list[str]] = []

    def walk(group: click.Group, path: list[str]) -> None:
        for name, command in group.commands.items():
            found.append([*path, name])
            if isinstance(command, click.Group):
                walk(command, [*path, name])

    walk(cli, [])
    return found


def test_every_command_has_a_help_text() -> None:
    top = _help()
    commands = _all_commands()
    assert {c[0] for c in commands} >= set(COMMANDS)
    for command in commands:
        if len(command) == 1:
            assert command[0] in top
        shown = _help(*command)
        description = shown.split("Options:")[0].split("\n", 1)[1]
        assert len(description.strip()) > 20, f"{' '.join(command)} has no help text:\n{shown}"


@pytest.mark.parametrize("command", WITH_SETTINGS)
def test_every_setting_is_a_flag_showing_its_variable_and_default(command: str) -> None:
    shown = " ".join(_help(command).split())
    for field in Settings.model_fields:
        assert flag_name(field) in shown, f"{command} lacks {flag_name(field)}"
        assert f"[env: {env_name(field)}; default: " in shown, f"{command} does not show {env_name(field)}"
    assert "--kafka-bootstrap-servers" in shown and "[env: RUNLEDGER_PORT; default: 5000]" in shown


def test_a_bad_variable_is_one_line_naming_it() -> None:
    done = _runledger("serve", env={"RUNLEDGER_PORT": "five"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["Error: RUNLEDGER_PORT='five' is not an integer"]


def test_a_bad_flag_is_one_line_naming_it(tmp_path: Path) -> None:
    done = _runledger("up", "--data-dir", str(tmp_path), "--latest-metric", "newest")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["Error: --latest-metric='newest': use 'step' or 'timestamp'"]


def test_a_flag_wins_over_its_variable(tmp_path: Path) -> None:
    # `kafka status` reads the settings and says where the broker would be, without starting anything.
    done = _runledger("kafka", "status", "--kafka-port", "19555", "--data-dir", str(tmp_path),
                      env={"RUNLEDGER_KAFKA_PORT": "19444"})
    assert done.returncode == 3 and done.stdout.strip() == "not running"
    assert not (tmp_path / "kafka").exists()


def test_missing_java_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    # A PATH with python but neither java nor mvn on it: what a fresh machine looks like.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    done = _runledger("up", "--data-dir", str(tmp_path / "data"), "--kafka-port", str(free_port()),
                      "--port", str(free_port()), env={"PATH": str(bin_dir)})
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Java" in errors[0] and "install" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_missing_maven_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    from runledger.kafka_local import KafkaProvisioningError, ensure_jars

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(tmp_path))   # no mvn here; the jar cache is empty too
        with pytest.raises(KafkaProvisioningError, match="Maven is needed once.*install it"):
            ensure_jars(tmp_path / "cache")


def test_a_taken_api_port_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _runledger("up", "--data-dir", str(tmp_path), "--port", str(port), "--kafka-port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is taken by another process: stop it, or choose another with "
        f"--port / RUNLEDGER_PORT"]
    assert not (tmp_path / "kafka").exists()


def test_the_kafka_download_says_what_it_fetched_and_how_far_along_it_is() -> None:
    from runledger.kafka_local import DownloadProgress

    progress = DownloadProgress()
    # Maven's own lines (mvn -B), as printed while resolving the broker's jars.
    assert progress.feed("[INFO] Scanning for projects...") is None
    progress.feed("Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/kafka/kafka-clients/"
                  "4.1.1/kafka-clients-4.1.1.pom (1.9 kB at 21 kB/s)")
    said = progress.feed("Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/kafka/"
                         "kafka-server/4.1.1/kafka-server-4.1.1.jar (29 MB at 8.2 MB/s)")
    assert said == ("fetching Apache Kafka 4.1.1 from Maven Central: 2 files, 29.0 of about 58 MB (50%) - "
                    "kafka-server-4.1.1.jar")
