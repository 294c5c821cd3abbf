"""Runledger's settings, read once from the environment at start-up."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from runledger.projector.schema import LATEST_TABLES


log = logging.getLogger(__name__)

# Names from before every setting shared the RUNLEDGER_ prefix; still read, with a warning.
DEPRECATED_NAMES = {"RUNLEDGER_HOST": "HOST", "RUNLEDGER_PORT": "PORT", "RUNLEDGER_DATA_DIR": "DATA_DIR",
                    "RUNLEDGER_KAFKA_PORT": "KAFKA_PORT"}
# Kafka tooling's conventional name, kept as a plain alias (the design and compose files use it).
ALIASES = {"RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS": "KAFKA_BOOTSTRAP_SERVERS"}


def _env(env: Mapping[str, str], name: str) -> dict[str, str]:
    """`env` with `name` filled in from its old or alias name when only that is set."""
    old = DEPRECATED_NAMES.get(name) or ALIASES.get(name)
    if old is None or env.get(name) or not env.get(old):
        return env
    if name in DEPRECATED_NAMES:
        log.warning("%s is deprecated; set %s instead (the old name still works for now)", old, name)
    return {**env, name: env[old]}


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable and the value."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5000
    data_dir: Path = Path("data")
    bootstrap_servers: str | None = None   # None: start the local broker
    kafka_port: int = 19092
    topic: str = "runledger.events"
    partitions: int = 4
    latest_metric: str = "step"             # MLflow server's rule; or "timestamp" (its API reference's)
    sync_timeout: float = 30.0
    kafka_timeout: float = 30.0                 # RUNLEDGER_KAFKA_TIMEOUT: wait for an ack before a 503
    clock_margin_ms: int = 1000                 # RUNLEDGER_CLOCK_MARGIN_MS: how far the broker's clock may lag ours
    artifact_root_override: str | None = None  # RUNLEDGER_ARTIFACT_ROOT
    duckdb_threads: int = 1                     # RUNLEDGER_DUCKDB_THREADS
    stream_max_lag_ms: int = 100                # RUNLEDGER_STREAM_MAX_LAG_MS: streaming backpressure bound
    run_cache_mb: int = 64                      # RUNLEDGER_RUN_CACHE_MB: rendered runs kept for reads; 0 = none

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "runledger.duckdb"

    @property
    def kafka_home(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def artifact_root(self) -> str:
        """Where new experiments put artifacts. Clients write there themselves (Runledger does
        not proxy artifacts), so behind Docker set RUNLEDGER_ARTIFACT_ROOT to a shared location."""
        return self.artifact_root_override or (self.data_dir / "artifacts").resolve().as_uri()

    @property
    def latest_table(self) -> str:
        return LATEST_TABLES[self.latest_metric]

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        for name in (*DEPRECATED_NAMES, *ALIASES):
            env = _env(env, name)
        latest = env.get("RUNLEDGER_LATEST_METRIC", "step")
        if latest not in LATEST_TABLES:
            raise SettingsError(f"RUNLEDGER_LATEST_METRIC={latest!r}: use 'step' (default) or 'timestamp'")
        return cls(
            host=env.get("RUNLEDGER_HOST", "127.0.0.1"),
            port=_int(env, "RUNLEDGER_PORT", 5000),
            data_dir=Path(env.get("RUNLEDGER_DATA_DIR") or "data"),
            bootstrap_servers=env.get("RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS") or None,
            kafka_port=_int(env, "RUNLEDGER_KAFKA_PORT", 19092),
            topic=env.get("RUNLEDGER_TOPIC", "runledger.events"),
            partitions=_int(env, "RUNLEDGER_PARTITIONS", 4),
            latest_metric=latest,
            sync_timeout=float(_int(env, "RUNLEDGER_SYNC_TIMEOUT", 30)),
            kafka_timeout=float(_int(env, "RUNLEDGER_KAFKA_TIMEOUT", 30)),
            clock_margin_ms=_int(env, "RUNLEDGER_CLOCK_MARGIN_MS", 1000, minimum=0),
            artifact_root_override=env.get("RUNLEDGER_ARTIFACT_ROOT") or None,
            stream_max_lag_ms=_int(env, "RUNLEDGER_STREAM_MAX_LAG_MS", 100),
            duckdb_threads=_int(env, "RUNLEDGER_DUCKDB_THREADS", 1),
            run_cache_mb=_int(env, "RUNLEDGER_RUN_CACHE_MB", 64, minimum=0),
        )


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be positive" if minimum == 1 else f"{name}={raw!r} must be at least {minimum}")
    return value
