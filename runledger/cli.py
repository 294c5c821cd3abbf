"""`runledger`: run the Runledger server and its tools.

\b
  runledger up            Kafka (a local broker, unless one is given) and the server
  runledger serve         the server alone, against --kafka-bootstrap-servers
  runledger kafka ACTION  the local broker on its own (start, stop, status)
  runledger replay        rebuild a read model from the log into a new folder
  runledger verify        prove the live read model equal to a rebuild from the log
  runledger sql QUERY     run a read-only SQL query on a running server
  runledger users|tokens  users and API tokens of an authenticated server (docs/auth.md)

Every setting is a flag of up, serve, kafka, replay and verify, and also an environment
variable (shown in each command's --help): a flag wins over its variable.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

from runledger.data_lock import DataDirInUse, DataDirLock
from runledger.kafka_local import KafkaProvisioningError, LocalKafka, LocalKafkaCluster
from runledger.progress import ProgressLine
from runledger.settings import Settings, SettingsError, env_name, flag_name

log = logging.getLogger("runledger")


def local_kafka(settings: Settings) -> LocalKafka:
    return LocalKafka(home=settings.kafka_home.resolve(), port=settings.kafka_port,
                      controller_port=settings.kafka_port + 1)


def _serve(settings: Settings) -> None:
    import uvicorn

    from runledger.app import create_app
    from runledger.header_deadline import protocol_with_header_deadline

    if not settings.auth and not _loopback(settings.host):
        log.warning("!" * 78)
        log.warning("AUTHENTICATION IS OFF and Runledger listens on %s: anyone who can reach port %s can "
                    "read, change and delete every experiment. Set RUNLEDGER_AUTH=on (docs/auth.md).",
                    settings.host, settings.port)
        log.warning("!" * 78)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                timeout_keep_alive=settings.keep_alive_timeout, limit_concurrency=settings.max_concurrency,
                http=protocol_with_header_deadline(settings.header_timeout))


def _import_server() -> None:
    """What `_serve` imports, done ahead (on a thread while the broker starts)."""
    try:
        import uvicorn  # noqa: F401

        import runledger.app  # noqa: F401
        import runledger.header_deadline  # noqa: F401
    except Exception:  # noqa: BLE001 - `_serve` imports them again and reports any error
        log.debug("importing the server ahead failed", exc_info=True)


def _loopback(host: str) -> bool:
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _port_free(settings: Settings) -> None:
    """Say so before starting a broker when the API's port is taken (uvicorn would only fail after)."""
    from runledger.kafka_local import port_open

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    if port_open(host, settings.port):
        raise KafkaProvisioningError(
            f"port {settings.port} on {settings.host} is taken by another process: stop it, or choose another "
            f"with --port / RUNLEDGER_PORT")


def cmd_up(settings: Settings) -> int:
    # The lock first: a second `up` on this folder must not touch the first one's broker.
    with DataDirLock(settings.data_dir):
        _port_free(settings)
        broker = None
        started = False
        if settings.bootstrap_servers is None:
            broker = local_kafka(settings)
            t0 = time.monotonic()
            print(f"starting Apache Kafka (KRaft, single node) in {broker.home} ...", flush=True)
            line = ProgressLine()
            # The server's imports (a few seconds of the start-up) overlap the broker's JVM start.
            threading.Thread(target=_import_server, name="import-server", daemon=True).start()
            started = broker.start(on_progress=line.update)
            line.done(f"Kafka ready on {broker.bootstrap_servers} after {time.monotonic() - t0:.1f}s" if started else
                      f"Kafka already running on {broker.bootstrap_servers} (pid {broker.running_pid()}): using it, "
                      f"and leaving it running on exit")
            settings = settings.replace(bootstrap_servers=broker.bootstrap_servers)
        url = f"http://{settings.host}:{settings.port}"
        print(f"""
Runledger is starting on {url}
  data (DuckDB read model):  {settings.duckdb_path.resolve()}
  event log (Kafka):         {settings.bootstrap_servers}, topic {settings.topic}
  point mlflow at it:        export MLFLOW_TRACKING_URI={url}
  API reference:             {url}/docs
Ctrl-C stops everything this command started.
""", flush=True)
        # uvicorn handles SIGTERM itself, then restores this handler and raises the signal again
        # once it has shut down: with the default handler the process would die right there,
        # before stopping the Kafka it started.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            _serve(settings)
        finally:
            if broker is not None and started:
                print("stopping Kafka ...", flush=True)
                broker.stop()
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cmd_serve(settings: Settings) -> int:
    if settings.bootstrap_servers is None:
        print("runledger serve needs --kafka-bootstrap-servers (or RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS, "
              "KAFKA_BOOTSTRAP_SERVERS), or use `runledger up`", file=sys.stderr)
        return 2
    with DataDirLock(settings.data_dir):
        _port_free(settings)
        _serve(settings)
    return 0


def cmd_kafka(settings: Settings, action: str, brokers: int | None = None) -> int:
    home = settings.kafka_home.resolve()
    # A cluster lives in broker-<n> folders; stop and status find it without being told its size.
    size = brokers or len(list(home.glob("broker-*"))) or 1
    if size > 1:
        return _cmd_kafka_cluster(LocalKafkaCluster(home, size, port=settings.kafka_port), action)
    broker = local_kafka(settings)
    if action == "start":
        line = ProgressLine()
        broker.start(on_progress=line.update)
        line.done(f"Kafka running on {broker.bootstrap_servers} (pid {broker.running_pid()}, home {broker.home})")
    elif action == "stop":
        print("stopped" if broker.stop() else "not running")
    else:
        pid = broker.running_pid()
        print(f"running on {broker.bootstrap_servers} (pid {pid})" if pid else "not running")
        return 0 if pid else 3
    return 0


def _cmd_kafka_cluster(cluster: LocalKafkaCluster, action: str) -> int:
    if action == "start":
        cluster.start()
        print(f"Kafka cluster of {len(cluster.nodes)} running on {cluster.bootstrap_servers} (home {cluster.home}); "
              f"pass --kafka-bootstrap-servers {cluster.bootstrap_servers}")
    elif action == "stop":
        print("stopped" if cluster.stop() else "not running")
    else:
        running = cluster.running()
        print(f"{len(running)} of {len(cluster.nodes)} brokers running ({running}) on {cluster.bootstrap_servers}")
        return 0 if running else 3
    return 0


def _bootstrap(settings: Settings) -> str | None:
    """The broker to read: KAFKA_BOOTSTRAP_SERVERS, else the local one if it is running."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    broker = local_kafka(settings)
    return broker.bootstrap_servers if broker.running_pid() else None


def _print_progress(p: Any) -> None:
    print("\r" + p.line(), end="", file=sys.stderr, flush=True)


def _lean() -> None:
    """replay and verify: no pandas (a third of their start-up), fewer GC passes (docs in the module)."""
    from runledger import tool_process

    tool_process.lean()


def _replay_into(settings: Settings, bootstrap: str, folder: Path, *, ends: dict[int, int] | None = None,
                 until_time: int | None = None, quiet: bool = False) -> Any:
    from runledger.projector.replay import replay
    from runledger.projector.store import Store

    # Created on a thread while the replay connects to the broker (see `replay`).
    store_result = _in_background(lambda: Store(folder / "runledger.duckdb", threads=settings.duckdb_threads))
    try:
        progress = asyncio.run(replay(bootstrap, settings.topic, store_result, ends=ends, until_time=until_time,
                                      on_progress=None if quiet else _print_progress))
    finally:
        store_result().close()
    if not quiet:
        _print_progress(progress)
        print(file=sys.stderr)
    return progress


def cmd_replay(settings: Settings, to: str, until: str | None, until_position: str | None) -> int:
    _lean()
    from runledger.ingest.positions import parse_position, parse_time
    from runledger.ingest.errors import MlflowError

    folder = Path(to)
    target = folder / "runledger.duckdb"
    if target.exists():
        print(f"runledger replay: {target} exists; replay builds a new read model into an empty folder",
              file=sys.stderr)
        return 2
    if folder.resolve() == settings.data_dir.resolve():
        print("runledger replay: --to must not be the server's DATA_DIR", file=sys.stderr)
        return 2
    bootstrap = _bootstrap(settings)
    if bootstrap is None:
        print("runledger replay needs KAFKA_BOOTSTRAP_SERVERS or a running local broker", file=sys.stderr)
        return 2
    ends = None
    until_time = None
    try:
        if until is not None:
            until_time = parse_time(until, "--until")
        if until_position is not None:
            ends = {}
            for part in until_position.split(","):
                p, o = parse_position(part, "--until-position")
                ends[p] = o + 1
    except MlflowError as e:
        print(f"runledger replay: {e.message}", file=sys.stderr)
        return 2
    if ends is not None:
        # Partitions not named are read to the end of the log as it is now.
        ends = _complete(bootstrap, settings.topic, ends)
    folder.mkdir(parents=True, exist_ok=True)
    progress = _replay_into(settings, bootstrap, folder, ends=ends, until_time=until_time)
    print(f"replayed {progress.records:,} events ({progress.points:,} metric points) in {progress.seconds:.1f}s "
          f"into {target}")
    return 0


def _complete(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from runledger.ingest.topic import existing_partitions

    async def log_ends() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = await existing_partitions(bootstrap, topic) or []
            found = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
            return {tp.partition: o for tp, o in found.items()}
        finally:
            await consumer.stop()

    return {**asyncio.run(log_ends()), **ends}


def _live_snapshot(settings: Settings) -> dict[str, Any]:
    """The live read model's checksums: from its file when no server holds it, else from the
    running server (which computes them in one transaction). Plain urllib: httpx costs a
    noticeable part of the command's start-up to import."""
    import json
    import urllib.request

    import duckdb

    from runledger.projector.replay import snapshot

    try:
        con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    except duckdb.IOException:
        url = f"http://{settings.host}:{settings.port}/api/runledger/v1/verify/checksums"
        with urllib.request.urlopen(url, timeout=300) as answer:
            return json.loads(answer.read())
    try:
        return snapshot(con, settings.topic)
    finally:
        con.close()


def _in_background(fn: Any) -> Any:
    """Start `fn()` on a thread; the returned callable waits for its result (or raises its error)."""
    import threading

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by the caller's thread
            box["error"] = e
    thread = threading.Thread(target=run, name="tool-background", daemon=True)
    thread.start()

    def result() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]
    return result


# `verify` rebuilds the read model in an in-memory DuckDB database when it fits: the rebuilt
# tables are only summed and thrown away, so writing them to a file (compressing each row
# group, the WAL, an fsync per commit) was pure cost, about 0.1 s of CPU of a 1M-point verify,
# most of it in the commits of the points. Same Store, Projector and schema as the live file.
# In memory the rows are not compressed: the audit bench's 1M points and 10k events take ~90 MB
# there against 13 MB of live file and WAL. So a read model whose live file (and WAL) is more
# than 1/_IN_MEMORY_GROWTH of the memory limit is rebuilt in a file in the temporary folder as
# before: spilling that much uncompressed would take several times the disk and time.
_IN_MEMORY_GROWTH = 12
# ... and a file rebuild writes its tables only when this much WAL has piled up (the default,
# 16 MiB, checkpointed several times for 1M points), and never on close.
_VERIFY_CHECKPOINT_THRESHOLD = "256MB"
_UNITS = {"b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def size_bytes(text: str) -> int:
    """'384MiB', '2GB', '1.5 GiB' (the sizes settings.py accepts) in bytes."""
    number = text.strip().rstrip("BbIiKkMmGgTt ")
    return int(float(number) * _UNITS[text.strip()[len(number):].strip().lower()])


def rebuild_in_memory(live_bytes: int, memory_limit: str | None) -> bool:
    """Whether a read model whose live file and WAL take `live_bytes` is rebuilt in memory."""
    return memory_limit is not None and live_bytes * _IN_MEMORY_GROWTH <= size_bytes(memory_limit)


def in_memory_store(spill_to: str, threads: int, memory_limit: str | None) -> Any:
    """A new read model in an in-memory DuckDB database; past `memory_limit` DuckDB spills it
    to `spill_to` (slower, but a rebuild larger than expected still completes)."""
    from runledger.projector.store import Store

    store = Store(":memory:", threads=threads, memory_limit=memory_limit)
    store.con.execute("SET temp_directory = ?", [spill_to])
    return store


def file_store(folder: str, threads: int) -> Any:
    """A new read model in `folder`/runledger.duckdb, checkpointed as rarely as DuckDB allows."""
    from runledger.projector.store import Store

    store = Store(Path(folder) / "runledger.duckdb", threads=threads)
    store.con.execute(f"SET checkpoint_threshold = '{_VERIFY_CHECKPOINT_THRESHOLD}'")
    return store


def _live_bytes(settings: Settings) -> int:
    path = settings.duckdb_path
    wal = Path(str(path) + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def cmd_verify(settings: Settings) -> int:
    from runledger.tool_process import Phases

    phases = Phases()
    if not settings.duckdb_path.exists():
        print(f"runledger verify: no read model at {settings.duckdb_path}", file=sys.stderr)
        return 2
    bootstrap = _bootstrap(settings)
    if bootstrap is None:
        print("runledger verify needs KAFKA_BOOTSTRAP_SERVERS or a running local broker", file=sys.stderr)
        return 2
    _lean()
    # The live side first, on a thread: a running server computes its checksums while this
    # process is still importing what the replay needs (most of the command's start-up).
    live_result = _in_background(_timed(lambda: _live_snapshot(settings)))
    import runledger.projector.store  # noqa: F401 - loaded here, not by two threads at once

    with tempfile.TemporaryDirectory(prefix="runledger-verify-") as tmp:
        # The new database's schema is created on a thread (DuckDB works without the GIL) while the
        # rest is imported, the live checksums are awaited and the replay connects to the broker
        # (`replay` waits for it only before the first fold).
        in_memory = rebuild_in_memory(_live_bytes(settings), settings.duckdb_memory_limit)
        phases.note("rebuilt in memory" if in_memory else "rebuilt in a file (too large for memory)")
        store_result = _in_background(
            (lambda: in_memory_store(tmp, settings.duckdb_threads, settings.duckdb_memory_limit)) if in_memory
            else (lambda: file_store(tmp, settings.duckdb_threads)))
        try:
            from runledger.projector.replay import compare, replay, snapshot

            phases.mark("imports")

            def live_ends() -> dict[int, int]:
                # The replay connects to the broker while the live server still computes.
                live, _ = live_result()
                return {int(p): o for p, o in live["offsets"].items()}
            progress = asyncio.run(replay(bootstrap, settings.topic, store_result, ends=live_ends,
                                          on_progress=_print_progress))
            live, live_seconds = live_result()
            phases.note(f"live checksums {live_seconds:.2f}s")
            store = store_result()
            phases.mark("replay")
            phases.note(f"replay = connect {progress.connect:.2f}s (of which waiting for the live checksums and the new "
                        f"file {progress.waited:.2f}s) + fold {progress.seconds - progress.last_commit:.2f}s"
                        f" + last commit {progress.last_commit:.2f}s + the rest")
            _print_progress(progress)
            print(file=sys.stderr)
            # Taken on the replay's own connection: no closing, reopening and re-reading.
            with store.con.cursor() as cur:
                # The replay is over: the sums may use every core (~0.01-0.02 s of 0.05 s for 1M points).
                cur.execute(f"SET threads = {max(settings.duckdb_threads, os.cpu_count() or 1)}")
                rebuilt = snapshot(cur, settings.topic)
            phases.mark("checksums")
        finally:
            store = store_result()
            if not in_memory:
                store.con.execute("PRAGMA disable_checkpoint_on_shutdown")   # deleted right after
            store.close()
    phases.mark("tear-down")
    report = compare(live, rebuilt)
    width = max(len(r[0]) for r in report)
    print(f"{'table':<{width}}  result     live / rebuilt from the log")
    for name, a, b, same in report:
        print(f"{name:<{width}}  {'same' if same else 'DIFFERENT':<9}  {a}" + ("" if same else f"  /  {b}"))
    bad = [r[0] for r in report if not r[3]]
    rate = progress.points / progress.seconds if progress.seconds else 0.0
    phases.mark("report")
    # Where the command's time went (start-up is the interpreter and the CLI's own imports).
    print(phases.line())
    print(f"replayed {progress.records:,} events, {progress.points:,} points in {progress.seconds:.1f}s "
          f"({rate:,.0f} points/s)")
    if bad:
        print(f"verify FAILED: {len(bad)} table(s) differ from the log: {', '.join(bad)}")
        return 1
    print(f"verify passed: all {len(report)} tables equal the log's replay")
    return 0


def _timed(fn: Callable[[], Any]) -> Callable[[], tuple[Any, float]]:
    def run() -> tuple[Any, float]:
        t = time.monotonic()
        return fn(), time.monotonic() - t
    return run


# ----- the command line (click) -----

def _version() -> str:
    try:
        return metadata.version("runledger-server")
    except metadata.PackageNotFoundError:
        from runledger.app import VERSION

        return VERSION


def _default_text(field: str) -> str:
    info = Settings.model_fields[field]
    if info.default_factory is not None:
        return str(info.default_factory())  # type: ignore[call-arg]
    return "unset" if info.default is None else str(info.default)


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per Settings field (runledger/settings.py), each naming its variable and default.
    Flags are passed on as text: Settings validates them with the variables, in one place."""
    for field in reversed(list(Settings.model_fields)):
        info = Settings.model_fields[field]
        help_text = f"{info.description or ''}  [env: {env_name(field)}; default: {_default_text(field)}]"
        if info.annotation is bool:
            name = flag_name(field)
            decl = f"{name}/--no-{name[2:]}"
            command = click.option(decl, field, default=None, help=help_text)(command)
        else:
            metavar = {int: "INT", float: "SECONDS" if field.endswith("timeout") else "NUMBER",
                       Path: "DIR"}.get(info.annotation, "TEXT")  # type: ignore[call-overload]
            command = click.option(flag_name(field), field, default=None, metavar=metavar, help=help_text)(command)

    @functools.wraps(command)
    def with_settings(**kwargs: Any) -> Any:
        flags = {f: kwargs.pop(f) for f in list(Settings.model_fields) if f in kwargs}
        try:
            settings = Settings.from_env(os.environ, flags)
        except SettingsError as e:
            raise click.ClickException(str(e)) from None
        return command(settings, **kwargs)

    return with_settings


def _exit_now(code: int) -> NoReturn:
    """End a replay or verify process once its work is done and its output flushed, without the
    interpreter's shutdown: that frees, one by one, the millions of objects a replay leaves
    (the fold's cache, imported modules) and joins DuckDB's threads, which took ~0.15 s of CPU
    for nothing (the process's memory goes back to the OS at once). The commands close their
    DuckDB files and remove their temporary folders themselves before returning."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(body: Callable[[], int]) -> int:
    # Everything this process creates (the data folder, DuckDB files, the local broker's log
    # segments) holds experiment data: readable by its owner only.
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        return body()
    except (SettingsError, KafkaProvisioningError, DataDirInUse) as e:
        raise click.ClickException(str(e)) from None


@click.group(help=__doc__, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(_version(), "--version", "-V", prog_name="runledger", message="%(prog)s %(version)s")
def cli() -> None:
    pass


@cli.command(short_help="Kafka (local, unless given) and the server; what `make up` runs.",
             help="Start Kafka (a local single-node broker in DATA_DIR/kafka, unless --kafka-bootstrap-servers "
                  "is given) and the server; Ctrl-C stops both. What `make up` runs.")
@settings_options
def up(settings: Settings) -> int:
    return _run(lambda: cmd_up(settings))


@cli.command(short_help="The server alone, against --kafka-bootstrap-servers.",
             help="Start the server alone against the broker in --kafka-bootstrap-servers (what the Docker image "
                  "runs).")
@settings_options
def serve(settings: Settings) -> int:
    return _run(lambda: cmd_serve(settings))


@cli.command(short_help="The local broker on its own: start, stop, status.",
             help="Run the local broker on its own: start it (downloading it the first time), stop it, or say "
                  "whether it runs (exit status 3 when not).")
@click.argument("action", type=click.Choice(["start", "stop", "status"]))
@click.option("--brokers", type=click.IntRange(min=1), default=None,
              help="a cluster of this many brokers on this machine (ports KAFKA_PORT, +2, +4, ...); with 3 or more "
                   "the event topic gets 3 replicas and min.insync.replicas=2")
@settings_options
def kafka(settings: Settings, action: str, brokers: int | None) -> int:
    return _run(lambda: cmd_kafka(settings, action, brokers))


@cli.command(short_help="Rebuild a read model from the log into a new folder.",
             help="Rebuild a read model from the Kafka log into a new folder (the live one is not touched); "
                  "--until/--until-position rebuild the world as it was then.")
@click.option("--to", required=True, help="an empty or new folder for the rebuilt runledger.duckdb")
@click.option("--until", default=None, help="stop at this moment (Unix ms or ISO 8601): the world as it was then")
@click.option("--until-position", default=None, help="stop after this log position '<partition>:<offset>' "
                                                     "(comma-separated for several partitions)")
@settings_options
def replay(settings: Settings, to: str, until: str | None, until_position: str | None) -> int:
    if until is not None and until_position is not None:
        raise click.UsageError("--until and --until-position exclude each other")
    _exit_now(_run(lambda: cmd_replay(settings, to, until, until_position)))


@cli.command(short_help="Prove the live read model equal to a rebuild from the log.",
             help="Replay the log into a temporary folder and compare every table with the live read model "
                  "in --data-dir (exit status 1 when any differs).")
@settings_options
def verify(settings: Settings) -> int:
    _exit_now(_run(lambda: cmd_verify(settings)))


@cli.command(short_help="Run a read-only SQL query on a running server.",
             help="Run one read-only SQL query on a running server (docs/sql.md). On a terminal the answer is an "
                  "aligned table; piped, or with --format, the server's csv/json/ndjson/parquet/arrow body.")
@click.argument("query")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "csv", "json", "ndjson", "parquet", "arrow"]),
              default=None, help="default: table on a terminal, csv otherwise (or from -o's extension)")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="write the answer to this file")
@click.option("--max-rows", type=int, default=None, help="at most this many rows (table: 100)")
@click.option("--url", default=None, help="the server (default: RUNLEDGER_URL, MLFLOW_TRACKING_URI or "
                                           "http://RUNLEDGER_HOST:RUNLEDGER_PORT)")
def sql(query: str, fmt: str | None, output: Path | None, max_rows: int | None, url: str | None) -> int:
    from runledger import sql_cli

    os.umask(0o077)
    return sql_cli.run(argparse.Namespace(query=query, format=fmt, output=output, max_rows=max_rows, url=url))


# ----- users and tokens (docs/auth.md): straight to the log and the data folder's vault

@cli.group(short_help="Users of an authenticated server (RUNLEDGER_AUTH=on).",
           help="Manage users without a running server (the first admin, a lost password): facts go to the "
                "log, password hashes to DATA_DIR's vault; a running server picks both up.")
def users() -> None:
    pass


@users.command("add", help="Create a user; the password is asked for (or read from stdin).")
@click.argument("username")
@click.option("--admin", is_flag=True, help="the user is an admin")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@settings_options
def users_add(settings: Settings, username: str, admin: bool, password_stdin: bool) -> int:
    from runledger.auth import cli as auth_cli

    return _run(lambda: auth_cli.add_user(settings, _bootstrap(settings), username, admin, password_stdin))


@users.command("password", help="Set a user's password (asked for, or read from stdin).")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@settings_options
def users_password(settings: Settings, username: str, password_stdin: bool) -> int:
    from runledger.auth import cli as auth_cli

    return _run(lambda: auth_cli.set_password(settings, _bootstrap(settings), username, password_stdin))


@users.command("grant", help="Grant USERNAME a permission (READ, EDIT, MANAGE, NO_PERMISSIONS) on an experiment.")
@click.argument("username")
@click.argument("experiment_id")
@click.argument("permission", type=click.Choice(["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"]))
@settings_options
def users_grant(settings: Settings, username: str, experiment_id: str, permission: str) -> int:
    from runledger.auth import cli as auth_cli

    return _run(lambda: auth_cli.grant(settings, _bootstrap(settings), username, experiment_id, permission))


@cli.group(short_help="API tokens (shown once, stored hashed, revocable).",
           help="Create or revoke API tokens without a running server.")
def tokens() -> None:
    pass


@tokens.command("create", help="Create a token for USERNAME and print it (the only time it is shown).")
@click.argument("username")
@click.option("--name", default="", help="a label for listings")
@click.option("--expires-days", type=float, default=None, help="expire after this many days")
@settings_options
def tokens_create(settings: Settings, username: str, name: str, expires_days: float | None) -> int:
    from runledger.auth import cli as auth_cli

    return _run(lambda: auth_cli.create_token(settings, _bootstrap(settings), username, name, expires_days))


@tokens.command("revoke", help="Revoke the token with this id.")
@click.argument("token_id")
@settings_options
def tokens_revoke(settings: Settings, token_id: str) -> int:
    from runledger.auth import cli as auth_cli

    return _run(lambda: auth_cli.revoke_token(settings, _bootstrap(settings), token_id))


def main(argv: list[str] | None = None) -> int:
    """The console script: the command's exit status (1 with one line on stderr for a bad setting,
    a missing Java or Maven, or a data folder in use)."""
    try:
        result = cli.main(args=argv, prog_name="runledger", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
