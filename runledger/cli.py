"""`runledger` console script: `up` (everything), `serve` (no broker), `kafka start|stop|status`,
`sql "SELECT ..."` (ask a running server)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time

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
        settings = dataclasses.replace(settings, bootstrap_servers=broker.bootstrap_servers)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set) and Runledger")
    sub.add_parser("serve", help="start Runledger against KAFKA_BOOTSTRAP_SERVERS")
    kafka = sub.add_parser("kafka", help="run the local broker on its own")
    kafka.add_argument("action", choices=["start", "stop", "status"])
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
        return cmd_kafka(settings, args.action)
    except (SettingsError, KafkaProvisioningError) as e:
        print(f"runledger: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
