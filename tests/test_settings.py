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
