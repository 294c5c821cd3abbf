"""Apache Kafka (KRaft) provisioned from Maven Central jars: one node, or a cluster of N on
this machine (`LocalKafkaCluster`, `runledger kafka start --brokers 3`).

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
    """One broker+controller whose storage, config, log and PID file live in `home`.

    Alone (`voters` None) it forms its own quorum (formatted --standalone). In a cluster every
    node gets the same static `voters` list and `cluster_id`, and internal topics are
    replicated `replication` times."""

    home: Path
    port: int = 19092
    controller_port: int = 19093
    heap: str = "-Xms256m -Xmx512m"
    node_id: int = 1
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1

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
        # Internal topics (transactions, share state) keep a write going with one node down.
        isr = max(1, min(2, self.replication - 1))
        if self.voters is None:
            quorum = [f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                      f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"]
        else:
            quorum = [f"controller.quorum.voters={self.voters}",
                      f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                      # The controller declares a silent broker dead after this long and moves
                      # its partitions' leadership (default 9 s): on one machine a broker that
                      # misses three heartbeats is gone, and writes wait for the new leader.
                      "broker.heartbeat.interval.ms=1000",
                      "broker.session.timeout.ms=3000"]
        config.write_text("\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            *quorum,
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "inter.broker.listener.name=PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.home / 'logs'}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            f"offsets.topic.replication.factor={self.replication}",
            "offsets.topic.num.partitions=1",
            f"share.coordinator.state.topic.replication.factor={self.replication}",
            f"share.coordinator.state.topic.min.isr={isr}",
            f"transaction.state.log.replication.factor={self.replication}",
            f"transaction.state.log.min.isr={isr}",
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
        proc = self.launch(cache_dir)
        if proc is not None:
            self.wait_ready(proc, timeout)

    def launch(self, cache_dir: Path | None = None) -> subprocess.Popen[bytes] | None:
        """Provision, format (first time) and spawn the broker without waiting for it; None if
        this home's broker already runs. A cluster launches every node before waiting: none
        is ready until a majority of the controllers are up."""
        if self.running_pid() is not None and port_open("127.0.0.1", self.port):
            return None
        if port_open("127.0.0.1", self.port):
            raise KafkaProvisioningError(f"port {self.port} is taken by another process; set KAFKA_PORT or stop it")
        libs = ensure_jars(cache_dir)
        classpath = f"{libs}/*"
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.home / "logs" / "meta.properties").exists():
            cluster_id = self.cluster_id or _cluster_id()
            # Static voters (a cluster) are formatted without --standalone, which 4.1 refuses with them.
            standalone = ["--standalone"] if self.voters is None else []
            fmt = subprocess.run(
                ["java", "-Xmx256m", *self._java_opts()[2:], "-cp", classpath, "kafka.tools.StorageTool",
                 # "=" form: a random id may start with "-", which argparse would read as an option
                 "format", *standalone, f"--cluster-id={cluster_id}", "-c", str(config)],
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
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
        """Return once the spawned broker serves; KafkaProvisioningError with its log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaProvisioningError(f"Kafka exited with code {proc.returncode}:\n{self._log_tail()}")
            if port_open("127.0.0.1", self.port) and _READY_LINE in self._log_tail(200_000):
                return
            time.sleep(0.2)
        self.stop()
        raise KafkaProvisioningError(f"Kafka did not become ready within {timeout:.0f}s:\n{self._log_tail()}")

    def kill(self) -> None:
        """SIGKILL the broker (fault tests: a crash, no clean shutdown)."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

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


class LocalKafkaCluster:
    """`brokers` KRaft nodes on this machine, each broker and controller, under `home/broker-<n>`.

    Node n (from 1) listens on `port + 2(n-1)` and its controller on the port after, so a
    cluster of one uses the same ports as LocalKafka. Internal topics are replicated
    min(3, brokers) times; the event topic's replication is chosen by ingest.topic."""

    def __init__(self, home: Path, brokers: int = 3, port: int = 19092, heap: str = "-Xms128m -Xmx384m") -> None:
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        self.home = home
        id_file = home / "cluster.id"
        home.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            id_file.write_text(_cluster_id())
        cluster_id = id_file.read_text().strip()
        voters = ",".join(f"{n}@127.0.0.1:{port + 2 * (n - 1) + 1}" for n in range(1, brokers + 1))
        self.nodes = [LocalKafka(home=home / f"broker-{n}", port=port + 2 * (n - 1), controller_port=port + 2 * (n - 1) + 1,
                                 heap=heap, node_id=n, voters=voters, cluster_id=cluster_id,
                                 replication=min(3, brokers))
                      for n in range(1, brokers + 1)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def start(self, cache_dir: Path | None = None, timeout: float = 120.0) -> None:
        ensure_jars(cache_dir)
        launched = [(node, node.launch(cache_dir)) for node in self.nodes]
        for node, proc in launched:
            if proc is not None:
                node.wait_ready(proc, timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        stopped = [node.stop(timeout) for node in self.nodes]
        return any(stopped)

    def running(self) -> list[int]:
        return [node.node_id for node in self.nodes if node.running_pid() is not None]


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
