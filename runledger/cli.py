"""`runledger` console script: `up` (everything), `serve` (no broker), `kafka start|stop|status`,
`sql "SELECT ..."` (ask a running server), `replay` (rebuild a read model from the log into a
new folder) and `verify` (prove the live read model equal to a rebuild)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

import uvicorn

from runledger import sql_cli
from runledger.app import create_app
from runledger.header_deadline import protocol_with_header_deadline
from runledger.kafka_local import KafkaProvisioningError, LocalKafka
from runledger.settings import Settings, SettingsError

log = logging.getLogger("runledger")


def local_kafka(settings: Settings) -> LocalKafka:
    return LocalKafka(home=settings.kafka_home.resolve(), port=settings.kafka_port,
                      controller_port=settings.kafka_port + 1)


def _serve(settings: Settings) -> None:
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                timeout_keep_alive=settings.keep_alive_timeout, limit_concurrency=settings.max_concurrency,
                http=protocol_with_header_deadline(settings.header_timeout))


def cmd_up(settings: Settings) -> int:
    broker = None
    if settings.bootstrap_servers is None:
        broker = local_kafka(settings)
        t0 = time.monotonic()
        print(f"starting Apache Kafka (KRaft, single node) in {broker.home} ...", flush=True)
        broker.start()
        print(f"Kafka ready on {broker.bootstrap_servers} after {time.monotonic() - t0:.1f}s", flush=True)
        settings = settings.replace(bootstrap_servers=broker.bootstrap_servers)
    url = f"http://{settings.host}:{settings.port}"
    print(f"""
Runledger is starting on {url}
  data (DuckDB read model):  {settings.duckdb_path.resolve()}
  event log (Kafka):         {settings.bootstrap_servers}, topic {settings.topic}
  point mlflow at it:        export MLFLOW_TRACKING_URI={url}
Ctrl-C stops everything this command started.
""", flush=True)
    # uvicorn handles SIGTERM itself, then restores this handler and raises the signal again
    # once it has shut down: with the default handler the process would die right there,
    # before stopping the Kafka it started.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _serve(settings)
    finally:
        if broker is not None:
            print("stopping Kafka ...", flush=True)
            broker.stop()
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cmd_serve(settings: Settings) -> int:
    if settings.bootstrap_servers is None:
        print("runledger serve needs RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS), or use `runledger up`", file=sys.stderr)
        return 2
    _serve(settings)
    return 0


def cmd_kafka(settings: Settings, action: str) -> int:
    broker = local_kafka(settings)
    if action == "start":
        broker.start()
        print(f"Kafka running on {broker.bootstrap_servers} (pid {broker.running_pid()}, home {broker.home})")
    elif action == "stop":
        print("stopped" if broker.stop() else "not running")
    else:
        pid = broker.running_pid()
        print(f"running on {broker.bootstrap_servers} (pid {pid})" if pid else "not running")
        return 0 if pid else 3
    return 0


def _bootstrap(settings: Settings) -> str | None:
    """The broker to read: KAFKA_BOOTSTRAP_SERVERS, else the local one if it is running."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    broker = local_kafka(settings)
    return broker.bootstrap_servers if broker.running_pid() else None


def _print_progress(p: Any) -> None:
    print("\r" + p.line(), end="", file=sys.stderr, flush=True)


def _replay_into(settings: Settings, bootstrap: str, folder: Path, *, ends: dict[int, int] | None = None,
                 until_time: int | None = None, quiet: bool = False) -> Any:
    from runledger.projector.replay import replay
    from runledger.projector.store import Store

    store = Store(folder / "runledger.duckdb", threads=settings.duckdb_threads)
    try:
        progress = asyncio.run(replay(bootstrap, settings.topic, store, ends=ends, until_time=until_time,
                                      on_progress=None if quiet else _print_progress))
    finally:
        store.close()
    if not quiet:
        _print_progress(progress)
        print(file=sys.stderr)
    return progress


def cmd_replay(settings: Settings, to: str, until: str | None, until_position: str | None) -> int:
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
    running server (which computes them in one transaction)."""
    from runledger.projector.replay import snapshot

    try:
        con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    except duckdb.IOException:
        url = f"http://{settings.host}:{settings.port}/api/runledger/v1/verify/checksums"
        answer = httpx.get(url, timeout=300)
        answer.raise_for_status()
        return answer.json()
    try:
        return snapshot(con, settings.topic)
    finally:
        con.close()


def cmd_verify(settings: Settings) -> int:
    from runledger.projector.replay import compare, snapshot

    if not settings.duckdb_path.exists():
        print(f"runledger verify: no read model at {settings.duckdb_path}", file=sys.stderr)
        return 2
    bootstrap = _bootstrap(settings)
    if bootstrap is None:
        print("runledger verify needs KAFKA_BOOTSTRAP_SERVERS or a running local broker", file=sys.stderr)
        return 2
    live = _live_snapshot(settings)
    ends = {int(p): o for p, o in live["offsets"].items()}
    with tempfile.TemporaryDirectory(prefix="runledger-verify-") as tmp:
        progress = _replay_into(settings, bootstrap, Path(tmp), ends=ends)
        con = duckdb.connect(str(Path(tmp) / "runledger.duckdb"), read_only=True)
        try:
            rebuilt = snapshot(con, settings.topic)
        finally:
            con.close()
    report = compare(live, rebuilt)
    width = max(len(r[0]) for r in report)
    print(f"{'table':<{width}}  result     live / rebuilt from the log")
    for name, a, b, same in report:
        print(f"{name:<{width}}  {'same' if same else 'DIFFERENT':<9}  {a}" + ("" if same else f"  /  {b}"))
    bad = [r[0] for r in report if not r[3]]
    rate = progress.points / progress.seconds if progress.seconds else 0.0
    print(f"replayed {progress.records:,} events, {progress.points:,} points in {progress.seconds:.1f}s "
          f"({rate:,.0f} points/s)")
    if bad:
        print(f"verify FAILED: {len(bad)} table(s) differ from the log: {', '.join(bad)}")
        return 1
    print(f"verify passed: all {len(report)} tables equal the log's replay")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set) and Runledger")
    sub.add_parser("serve", help="start Runledger against KAFKA_BOOTSTRAP_SERVERS")
    kafka = sub.add_parser("kafka", help="run the local broker on its own")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    replay = sub.add_parser("replay", help="rebuild a read model from the log into a new data folder")
    replay.add_argument("--to", required=True, help="an empty or new folder for the rebuilt runledger.duckdb")
    until = replay.add_mutually_exclusive_group()
    until.add_argument("--until", help="stop at this moment (Unix ms or ISO 8601): the world as it was then")
    until.add_argument("--until-position", help="stop after this log position '<partition>:<offset>' "
                                                "(comma-separated for several partitions)")
    sub.add_parser("verify", help="replay the log into a temporary folder and compare every table with DATA_DIR's")
    sql_cli.add_parser(sub)
    args = parser.parse_args(argv)
    # Everything this process creates (the data folder, DuckDB files, the local broker's log
    # segments) holds experiment data: readable by its owner only.
    os.umask(0o077)
    if args.command == "sql":
        return sql_cli.run(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        if args.command == "up":
            return cmd_up(settings)
        if args.command == "serve":
            return cmd_serve(settings)
        if args.command == "replay":
            return cmd_replay(settings, args.to, args.until, args.until_position)
        if args.command == "verify":
            return cmd_verify(settings)
        return cmd_kafka(settings, args.action)
    except (SettingsError, KafkaProvisioningError) as e:
        print(f"runledger: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
