"""Apache Kafka (KRaft) provisioned from Maven Central jars: one node, or a cluster of N on
this machine (`LocalKafkaCluster`, `runledger kafka start --brokers 3`).

Used by `runledger kafka start|stop|status`, by `runledger up`, and by the test fixture, so
the broker users run and the broker tests run are the same thing.

Pinned to Kafka 4.1.1: aiokafka 0.14 negotiates API versions per connection and every API we
use (produce v3-8, fetch v4-11, list-offsets, metadata, idempotent InitProducerId, create
topics) overlaps with 4.1's accepted ranges; checked on this machine with a real broker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Callable
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
_READY_LINE = "Kafka Server started"
# How often start-up looks for the ready line (part of `make up`'s time to the first answer).
_READY_POLL_S = 0.05
# What a first download weighs in jars, to say how far along it is: measured with an empty
# Maven repository, 93 jars and 58 MB (46 jars, 43 MB, are the broker; the rest Maven's own
# dependency plugin, already there on a machine that has used Maven, where it ends early).
_EXPECTED_JAR_MB = 58
_DOWNLOADED = re.compile(r"Downloaded from \S+: (\S+) \(([0-9.]+) (B|kB|MB|GB)")
_UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}

# A dev broker's JVM (docs/memory.md, "The local broker"). Measured RSS with the defaults of
# before (-Xms256m -Xmx512m, G1): 420-500 MB under the bench, 630 MB after hours of tests. What
# held it: a G1 heap that grows to -Xmx and is never given back, the log cleaner's 128 MiB
# dedupe buffer (allocated once __consumer_offsets is compacted), NIO's per-thread cache of
# temporary direct buffers (one per request size seen, kept for the thread's life) and a glibc
# arena per JVM thread.
DEV_HEAP = "-Xms32m -Xmx192m"
DEV_JVM_FLAGS: tuple[str, ...] = (
    # One GC thread, no region bookkeeping (G1's remembered sets cost ~10% of the heap), and
    # a heap that shrinks after a full collection; pauses of a few ms on a 192 MB heap.
    "-XX:+UseSerialGC", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=30",
    "-XX:MaxMetaspaceSize=128m", "-XX:ReservedCodeCacheSize=48m", "-XX:MaxDirectMemorySize=64m",
    "-Xss512k",
    # Temporary direct buffers above this are freed after use instead of cached per thread.
    "-Djdk.nio.maxCachedBufferSize=262144",
)

Progress = Callable[[str], None]

JAVA_HINT = ("Java (17 or newer) is needed to run the local Kafka broker and `java` is not on PATH: install a JRE "
             "(e.g. `apt install openjdk-21-jre-headless`, `brew install openjdk`), or point Runledger at a broker "
             "you run with --kafka-bootstrap-servers / RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS")
MAVEN_HINT = ("Maven is needed once, to fetch the Kafka broker's jars, and `mvn` is not on PATH: install it "
              "(e.g. `apt install maven`, `brew install maven`), or point Runledger at a broker you run with "
              "--kafka-bootstrap-servers / RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS")


class KafkaProvisioningError(RuntimeError):
    """The local broker could not be provisioned, formatted or started; the message says why."""


def default_cache_dir() -> Path:
    base = os.environ.get("RUNLEDGER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "runledger"
    )
    return Path(base)


def ensure_jars(cache_dir: Path | None = None, on_progress: Progress | None = None) -> Path:
    """Resolve the broker jars with Maven into the cache (first call only); return the folder.
    `on_progress` gets a line per file Maven downloads (what, how many, how many MB so far).

    The folder is filled in a temporary sibling and renamed into place, so an interrupted
    download never leaves a half-filled folder that later starts would trust.
    """
    cache_dir = cache_dir or default_cache_dir()
    libs = cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise KafkaProvisioningError(MAVEN_HINT)
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    pom = staging / "pom.xml"
    pom.write_text(resources.files("runledger.kafka").joinpath("pom.xml").read_text())
    log.info("resolving Apache Kafka %s jars from Maven Central into %s", KAFKA_VERSION, libs)
    # Not -q: Maven's "Downloaded from central: URL (size ...)" lines are the progress we report.
    proc = subprocess.Popen(
        ["mvn", "-B", "-f", str(pom), _DEPENDENCY_PLUGIN,
         f"-DoutputDirectory={staging / 'jars'}", "-DincludeScope=runtime"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    progress = DownloadProgress()
    for line in proc.stdout:
        output.append(line)
        said = progress.feed(line)
        if said is not None and on_progress is not None:
            on_progress(said)
    if proc.wait() != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaProvisioningError(f"mvn could not resolve Kafka jars:\n{''.join(output)[-3000:]}")
    os.replace(staging / "jars", libs)
    shutil.rmtree(staging, ignore_errors=True)
    return libs


class DownloadProgress:
    """Maven's "Downloaded from central: <url> (<size> at <speed>)" lines, as a progress line."""

    def __init__(self) -> None:
        self.files = 0
        self.jar_bytes = 0.0

    def feed(self, line: str) -> str | None:
        found = _DOWNLOADED.search(line)
        if found is None:
            return None
        self.files += 1
        name = found.group(1).rsplit("/", 1)[-1]
        if name.endswith(".jar"):
            self.jar_bytes += float(found.group(2)) * _UNITS[found.group(3)]
        mb = self.jar_bytes / 1e6
        share = min(99, int(100 * mb / _EXPECTED_JAR_MB))
        return (f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central: {self.files} files, {mb:.1f} of "
                f"about {_EXPECTED_JAR_MB} MB ({share}%) - {name}")


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
    heap: str = DEV_HEAP
    jvm_flags: tuple[str, ...] = DEV_JVM_FLAGS
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
            *self.jvm_flags, "-XX:+ExitOnOutOfMemoryError",
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
            # Only __consumer_offsets is compacted, and it is tiny: the default 128 MiB dedupe
            # buffer would sit in the heap for nothing.
            "log.cleaner.dedupe.buffer.size=8388608",
            "log.cleaner.threads=1",
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

    def start(self, cache_dir: Path | None = None, timeout: float = 90.0,
              on_progress: Progress | None = None) -> bool:
        """Provision (first time), format (first time) and start the broker; wait until it serves.
        Returns whether this call started it.

        Idempotent: if this home's broker is already running, returns False at once. Raises
        KafkaProvisioningError with the tail of the broker log when it does not come up in time.
        """
        proc = self.launch(cache_dir, on_progress)
        if proc is None:
            return False
        self.wait_ready(proc, timeout, on_progress)
        return True

    def launch(self, cache_dir: Path | None = None, on_progress: Progress | None = None
               ) -> subprocess.Popen[bytes] | None:
        """Provision, format (first time) and spawn the broker without waiting for it; None if
        this home's broker already runs. A cluster launches every node before waiting: none
        is ready until a majority of the controllers are up."""
        if self.running_pid() is not None and port_open("127.0.0.1", self.port):
            return None
        if port_open("127.0.0.1", self.port):
            raise KafkaProvisioningError(
                f"port {self.port} is taken by another process: stop it, or choose another port for the local "
                f"broker with --kafka-port / RUNLEDGER_KAFKA_PORT")
        if shutil.which("java") is None:
            raise KafkaProvisioningError(JAVA_HINT)
        libs = ensure_jars(cache_dir, on_progress)
        classpath = f"{libs}/*"
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.home / "logs" / "meta.properties").exists():
            cluster_id = self.cluster_id or _cluster_id()
            # Static voters (a cluster) are formatted without --standalone, which 4.1 refuses with them.
            standalone = ["--standalone"] if self.voters is None else []
            fmt = subprocess.run(
                ["java", "-Xmx256m", *self._java_opts()[len(self.heap.split()):], *_shared_archive(libs),
                 "-cp", classpath,
                 "kafka.tools.StorageTool",
                 # "=" form: a random id may start with "-", which argparse would read as an option
                 "format", *standalone, f"--cluster-id={cluster_id}", "-c", str(config)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise KafkaProvisioningError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        with open(self.log_file, "ab") as out:
            out.truncate(0)
            proc = subprocess.Popen(
                ["java", *self._java_opts(), *self._class_sharing(libs), "-cp", classpath, "kafka.Kafka", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_jvm_env(),
                start_new_session=True,  # Ctrl-C in the terminal is handled by us, not sent to the JVM
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 90.0,
                   on_progress: Progress | None = None) -> None:
        """Return once the spawned broker serves; KafkaProvisioningError with its log if not."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaProvisioningError(f"Kafka exited with code {proc.returncode}:\n{self._log_tail()}")
            if port_open("127.0.0.1", self.port) and _READY_LINE in self._log_tail(200_000):
                return
            if on_progress is not None:
                on_progress(f"starting Apache Kafka {KAFKA_VERSION} (pid {proc.pid}): {time.monotonic() - t0:.0f}s, "
                            f"waiting for it to serve on {self.bootstrap_servers} (log: {self.log_file})")
            time.sleep(_READY_POLL_S)
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
        self._keep_class_archive(clean_exit=not _alive(pid))
        self.pid_file.unlink(missing_ok=True)
        return True

    # ----- class-data sharing: start-up time
    # Loading and verifying the broker's classes is about half of its start (measured: 9 s
    # to ready without an archive, 3 to 5.5 s with one, on a loaded 2-core machine). The first
    # broker that stops cleanly leaves an archive of the classes it loaded (JDK 13+
    # ArchiveClassesAtExit, dumped as the JVM exits); every later start on this machine maps it
    # (SharedArchiveFile). An archive that does not match the JVM or the jars is ignored by the
    # JVM (-Xshare:auto, the default), which then starts as before.

    @property
    def _archive_draft(self) -> Path:
        return self.home / "classes.jsa.draft"

    def _class_sharing(self, libs: Path) -> list[str]:
        archive = class_archive(libs)
        (self.home / "classes.jsa.target").write_text(str(archive))
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}"]
        self._archive_draft.unlink(missing_ok=True)
        return [f"-XX:ArchiveClassesAtExit={self._archive_draft}"]

    def _keep_class_archive(self, clean_exit: bool) -> None:
        """Move the archive the stopped broker dumped next to the jars (only after a clean exit:
        a broker killed while dumping leaves half a file)."""
        draft, target_file = self._archive_draft, self.home / "classes.jsa.target"
        try:
            if clean_exit and draft.is_file() and draft.stat().st_size > 0 and target_file.is_file():
                target = Path(target_file.read_text().strip())
                if not target.exists():
                    os.replace(draft, target)
        except OSError as e:
            log.info("could not keep the broker's class archive: %r", e)
        draft.unlink(missing_ok=True)

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

    def __init__(self, home: Path, brokers: int = 3, port: int = 19092, heap: str = DEV_HEAP) -> None:
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


def _jvm_env() -> dict[str, str]:
    # glibc gives each thread that mallocs its own arena (up to 8 per core), ~80 broker threads:
    # two arenas are plenty for the JVM's few native allocations (its heap is its own mmap).
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def class_archive(libs: Path) -> Path:
    """Where the broker's class archive for this JVM lives: next to the jars, one per `java`
    binary (an archive only fits the JVM build that wrote it)."""
    java = os.path.realpath(shutil.which("java") or "java")
    try:
        stamp = f"{java}:{os.stat(java).st_mtime_ns}"
    except OSError:
        stamp = java
    return libs.parent / f"classes-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}.jsa"


def _shared_archive(libs: Path) -> list[str]:
    """The broker's class archive for a short-lived tool JVM on the same jars (formatting)."""
    archive = class_archive(libs)
    return [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else []


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
