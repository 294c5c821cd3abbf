"""The local broker's class-data-sharing archive (runledger.kafka_local): the first broker that
stops cleanly leaves one next to the jars, later starts map it. Start-up time only; the
brokers the other tests start use it for real."""

from __future__ import annotations

from pathlib import Path

from runledger.kafka_local import LocalKafka, class_archive


def _broker(tmp_path: Path) -> tuple[LocalKafka, Path]:
    libs = tmp_path / "cache" / "kafka-x" / "libs"
    libs.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    return LocalKafka(home=home), libs


def test_without_an_archive_the_broker_is_asked_to_dump_one_at_exit(tmp_path: Path) -> None:
    broker, libs = _broker(tmp_path)
    assert broker._class_sharing(libs) == [f"-XX:ArchiveClassesAtExit={broker.home / 'classes.jsa.draft'}"]


def test_a_clean_stop_keeps_the_dumped_archive_for_every_later_start(tmp_path: Path) -> None:
    broker, libs = _broker(tmp_path)
    broker._class_sharing(libs)
    (broker.home / "classes.jsa.draft").write_bytes(b"archive")   # what the JVM wrote as it exited
    broker._keep_class_archive(clean_exit=True)
    archive = class_archive(libs)
    assert archive.read_bytes() == b"archive"
    assert archive.parent == libs.parent
    assert broker._class_sharing(libs) == [f"-XX:SharedArchiveFile={archive}"]


def test_a_killed_broker_leaves_no_archive(tmp_path: Path) -> None:
    broker, libs = _broker(tmp_path)
    broker._class_sharing(libs)
    (broker.home / "classes.jsa.draft").write_bytes(b"half an archi")
    broker._keep_class_archive(clean_exit=False)
    assert not class_archive(libs).exists()
    assert not (broker.home / "classes.jsa.draft").exists()
