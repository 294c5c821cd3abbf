"""The multi-broker provisioner's settings and the event topic's replication, without a JVM
(the cluster itself is exercised by tests/test_cluster.py, `make cluster-test`)."""

from __future__ import annotations

from pathlib import Path

from runledger.cli import main
from runledger.ingest.topic import replication_for
from runledger.kafka_local import LocalKafkaCluster


def _config(node_home: Path) -> dict[str, str]:
    lines = (node_home / "server.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_three_brokers_share_static_voters_and_replicate_internal_topics(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster(tmp_path, brokers=3, port=30000)
    assert cluster.bootstrap_servers == "127.0.0.1:30000,127.0.0.1:30002,127.0.0.1:30004"
    for n, node in enumerate(cluster.nodes, start=1):
        node.home.mkdir(parents=True)
        node._write_config()
        config = _config(node.home)
        assert config["node.id"] == str(n)
        assert config["controller.quorum.voters"] == "1@127.0.0.1:30001,2@127.0.0.1:30003,3@127.0.0.1:30005"
        assert config["listeners"] == f"PLAINTEXT://127.0.0.1:{30000 + 2 * (n - 1)},CONTROLLER://127.0.0.1:{30001 + 2 * (n - 1)}"
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["transaction.state.log.min.isr"] == "2"
        assert "controller.quorum.bootstrap.servers" not in config
    assert len({node.cluster_id for node in cluster.nodes}) == 1
    # The id is kept: a cluster started again is the same cluster.
    assert LocalKafkaCluster(tmp_path, brokers=3, port=30000).nodes[0].cluster_id == cluster.nodes[0].cluster_id


def test_the_event_topic_gets_three_replicas_and_two_in_sync_with_three_brokers_or_more() -> None:
    assert replication_for(1) == (1, replication_for(1)[1]) and "min.insync.replicas" not in replication_for(1)[1]
    assert replication_for(2)[0] == 2 and "min.insync.replicas" not in replication_for(2)[1]
    for brokers in (3, 5):
        replicas, config = replication_for(brokers)
        assert replicas == 3 and config["min.insync.replicas"] == "2"
        assert config["message.timestamp.type"] == "LogAppendTime" and config["retention.ms"] == "-1"


def test_kafka_status_of_a_cluster_that_is_not_running(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RUNLEDGER_DATA_DIR", str(tmp_path))  # the local broker lives in DATA_DIR/kafka
    assert main(["kafka", "status", "--brokers", "3"]) == 3
    assert "0 of 3 brokers running" in capsys.readouterr().out
