"""The local broker provisioning (real JVM, real jars)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runledger import kafka_local
from runledger.kafka_local import LocalKafka, free_port, port_open


def test_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {kafka_local._cluster_id() for _ in range(500)}
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert all(len(i) == 22 and set(i) <= alphabet for i in ids)


def test_a_cluster_id_starting_with_a_dash_formats_and_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # About 1 in 64 random ids starts with "-"; passed as a separate argument, the storage
    # tool read it as an option and `make up` failed on a fresh machine.
    monkeypatch.setattr(kafka_local, "_cluster_id", lambda: "-dashFirst0123456789ab")
    broker = LocalKafka(home=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    try:
        assert port_open("127.0.0.1", broker.port)
        assert "cluster.id=-dashFirst0123456789ab" in (tmp_path / "kafka" / "logs" / "meta.properties").read_text()
    finally:
        broker.stop()
    assert not port_open("127.0.0.1", broker.port)
