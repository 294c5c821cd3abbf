"""Settings: one RUNLEDGER_ prefix; the names from before it keep working, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runledger.settings import Settings, SettingsError


def test_prefixed_names_are_read() -> None:
    s = Settings.from_env({"RUNLEDGER_HOST": "0.0.0.0", "RUNLEDGER_PORT": "5123", "RUNLEDGER_DATA_DIR": "/tmp/x",
                           "RUNLEDGER_KAFKA_PORT": "19999", "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS": "h:1"})
    assert (s.host, s.port, s.data_dir, s.kafka_port, s.bootstrap_servers) == ("0.0.0.0", 5123, Path("/tmp/x"),
                                                                                19999, "h:1")


def test_old_names_still_work_and_say_they_are_deprecated(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runledger.settings"):
        s = Settings.from_env({"HOST": "0.0.0.0", "PORT": "5124", "DATA_DIR": "/tmp/y", "KAFKA_PORT": "19998"})
    assert (s.host, s.port, s.data_dir, s.kafka_port) == ("0.0.0.0", 5124, Path("/tmp/y"), 19998)
    warned = " ".join(r.getMessage() for r in caplog.records)
    for old, new in (("HOST", "RUNLEDGER_HOST"), ("PORT", "RUNLEDGER_PORT"), ("DATA_DIR", "RUNLEDGER_DATA_DIR"),
                     ("KAFKA_PORT", "RUNLEDGER_KAFKA_PORT")):
        assert f"{old} is deprecated; set {new}" in warned


def test_the_prefixed_name_wins_over_the_old_one() -> None:
    assert Settings.from_env({"PORT": "5001", "RUNLEDGER_PORT": "5002"}).port == 5002


def test_kafka_bootstrap_servers_is_an_alias_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runledger.settings"):
        assert Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}).bootstrap_servers == "k:9092"
    assert caplog.records == []


def test_latest_metric_defaults_to_the_mlflow_server_rule() -> None:
    assert Settings.from_env({}).latest_metric == "step"
    assert Settings.from_env({"RUNLEDGER_LATEST_METRIC": "timestamp"}).latest_metric == "timestamp"


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="RUNLEDGER_PORT='x' is not an integer"):
        Settings.from_env({"RUNLEDGER_PORT": "x"})
    with pytest.raises(SettingsError, match="RUNLEDGER_LATEST_METRIC"):
        Settings.from_env({"RUNLEDGER_LATEST_METRIC": "newest"})


def test_a_bad_value_under_an_old_name_names_the_old_name() -> None:
    with pytest.raises(SettingsError, match="^PORT='abc' is not an integer$"):
        Settings.from_env({"PORT": "abc"})


def test_limits_are_checked_and_named() -> None:
    with pytest.raises(SettingsError, match="^RUNLEDGER_PORT='0' must be positive$"):
        Settings.from_env({"RUNLEDGER_PORT": "0"})
    with pytest.raises(SettingsError, match="^RUNLEDGER_CLOCK_MARGIN_MS='-1' must be at least 0$"):
        Settings.from_env({"RUNLEDGER_CLOCK_MARGIN_MS": "-1"})
    with pytest.raises(SettingsError, match="RUNLEDGER_DUCKDB_MEMORY_LIMIT='lots': use a size"):
        Settings.from_env({"RUNLEDGER_DUCKDB_MEMORY_LIMIT": "lots"})


def test_flags_win_over_the_environment_and_errors_name_the_flag() -> None:
    assert Settings.from_env({"RUNLEDGER_PORT": "5001"}, {"port": "5002"}).port == 5002
    assert Settings.from_env({"RUNLEDGER_PORT": "5001"}, {"port": None}).port == 5001
    with pytest.raises(SettingsError, match="^--port='x' is not an integer$"):
        Settings.from_env({}, {"port": "x"})


def test_an_empty_variable_means_the_default() -> None:
    s = Settings.from_env({"RUNLEDGER_DATA_DIR": "", "RUNLEDGER_PORT": "", "RUNLEDGER_ALLOWED_HOSTS": " "})
    assert (s.data_dir, s.port, s.allowed_hosts_override) == (Path("data"), 5000, None)


def test_comma_separated_hosts_and_sizes_in_mb() -> None:
    s = Settings.from_env({"RUNLEDGER_ALLOWED_HOSTS": "a.example, b.example", "RUNLEDGER_SQL_MAX_MB": "3"})
    assert s.allowed_hosts == ("a.example", "b.example")
    assert s.sql_max_bytes == 3 << 20


def test_settings_built_in_code_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNLEDGER_PORT", "5999")
    assert Settings().port == 5000
    assert Settings(port=5100).replace(host="0.0.0.0").port == 5100
