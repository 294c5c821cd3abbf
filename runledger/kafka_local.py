"""A single-node Apache Kafka (KRaft) broker provisioned from Maven Central jars.

Used by `runledger kafka start|stop|status`, by `runledger up`, and by the test fixture, so
the broker users run and the broker tests run are the same thing.

Pinned to Kafka 4.1.1: aiokafka 0.14 negotiates API versions per connection and every API we
use (produce v3-8, fetch v4-11, list-offsets, metadata, idempotent InitProducerId, create
topics) overlaps with 4.1's accepted ranges; checked on this machine with a real broker.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
_READY_LINE = "Kafka Server started"


class KafkaProvisioningError(RuntimeError):
    """The local broker could not be provisioned, formatted or started; the message says why."""


def default_cache_dir() -> Path:
    base = os.environ.get("RUNLEDGER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "runledger"
    )
    return Path(base)


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Resolve the broker jars with Maven into the cache (first call only); return the folder.

    The folder is filled in a temporary sibling and renamed into place, so an interrupted
    download never leaves a half-filled folder that later starts would trust.
    """
    cache_dir = cache_dir or default_cache_dir()
    libs = cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise KafkaProvisioningError("Maven ('mvn') is needed to fetch the Kafka jars but is not on PATH")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    pom = staging / "pom.xml"
    pom.write_text(resources.files("runledger.kafka").joinpath("pom.xml").read_text())
    log.info("resolving Apache Kafka %s jars from Maven Central into %s", KAFKA_VERSION, libs)
    proc = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), _DEPENDENCY_PLUGIN,
         f"-DoutputDirectory={staging / 'jars'}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaProvisioningError(f"mvn could not resolve Kafka jars:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    os.replace(staging / "jars", libs)
    shutil.rmtree(staging, ignore_errors=True)
    return libs


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LocalKafka:
    """One broker+controller whose storage, config, log and PID file live in `home`."""

    home: Path
    port: int = 19092
    controller_port: int = 19093
    heap: str = "-Xms256m -Xmx512m"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    def _java_opts(self) -> list[str]:
        log_config = resources.files("runledger.kafka").joinpath("log4j2.properties")
        return [
            *self.heap.split(),
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
            # C1 only: a test broker lives for minutes, so start-up time beats peak speed.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
        ]

    def _write_config(self) -> Path:
        config = self.home / "server.properties"
        config.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "inter.broker.listener.name=PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.home / 'logs'}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "group.initial.rebalance.delay.ms=0",
            # The log is the source of truth: never expire it by age or size.
            "log.retention.ms=-1",
            "log.retention.bytes=-1",
            "num.network.threads=2",
            "num.io.threads=2",
            "background.threads=2",
            "",
        ]))
        return config

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def start(self, cache_dir: Path | None = None, timeout: float = 90.0) -> None:
        """Provision (first time), format (first time) and start the broker; wait until it serves.

        Idempotent: if this home's broker is already running, returns at once. Raises
        KafkaProvisioningError with the tail of the broker log when it does not come up in time.
        """
        if self.running_pid() is not None and port_open("127.0.0.1", self.port):
            return
        if port_open("127.0.0.1", self.port):
            raise KafkaProvisioningError(f"port {self.port} is taken by another process; set KAFKA_PORT or stop it")
        libs = ensure_jars(cache_dir)
        classpath = f"{libs}/*"
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.home / "logs" / "meta.properties").exists():
            cluster_id = _cluster_id()
            fmt = subprocess.run(
                ["java", "-Xmx256m", *self._java_opts()[2:], "-cp", classpath, "kafka.tools.StorageTool",
                 # "=" form: a random id may start with "-", which argparse would read as an option
                 "format", "--standalone", f"--cluster-id={cluster_id}", "-c", str(config)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise KafkaProvisioningError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        with open(self.log_file, "ab") as out:
            out.truncate(0)
            proc = subprocess.Popen(
                ["java", *self._java_opts(), "-cp", classpath, "kafka.Kafka", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal is handled by us, not sent to the JVM
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaProvisioningError(f"Kafka exited with code {proc.returncode}:\n{self._log_tail()}")
            if port_open("127.0.0.1", self.port) and _READY_LINE in self._log_tail(200_000):
                return
            time.sleep(0.2)
        self.stop()
        raise KafkaProvisioningError(f"Kafka did not become ready within {timeout:.0f}s:\n{self._log_tail()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker by PID (SIGTERM, then SIGKILL after `timeout`). Returns whether one ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _log_tail(self, size: int = 4000) -> str:
        try:
            data = self.log_file.read_bytes()
        except OSError:
            return ""
        return data[-size:].decode("utf-8", "replace")


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _cluster_id() -> str:
    # KRaft cluster ids are 16 random bytes in URL-safe base64 without padding (22 chars).
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
