"""Runledger's settings, read once from the environment at start-up."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
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
    duckdb_memory_limit: str = field(default_factory=lambda: default_duckdb_memory_limit())
    allowed_hosts_override: tuple[str, ...] | None = None  # RUNLEDGER_ALLOWED_HOSTS
    body_timeout: float = 30.0                  # RUNLEDGER_BODY_TIMEOUT: max wait for the next body chunk
    header_timeout: float = 10.0                # RUNLEDGER_HEADER_TIMEOUT: max time to send request headers
    keep_alive_timeout: int = 5                 # RUNLEDGER_KEEP_ALIVE_TIMEOUT: idle keep-alive connections
    max_concurrency: int = 1000                 # RUNLEDGER_MAX_CONCURRENCY: connections + tasks before 503s
    sql_time_limit_ms: int = 30_000             # RUNLEDGER_SQL_TIME_LIMIT_MS: per SQL query
    sql_memory_mb: int = 512                    # RUNLEDGER_SQL_MEMORY_MB: per SQL query's intermediates
    sql_max_rows: int = 10_000                  # RUNLEDGER_SQL_MAX_ROWS: JSON answers, truncated beyond
    sql_max_bytes: int = 2 << 30                # RUNLEDGER_SQL_MAX_MB (in bytes here): streamed answers
    sql_max_concurrent: int = 4                 # RUNLEDGER_SQL_MAX_CONCURRENT: more get 429
    wandb_entity: str = "runledger"             # RUNLEDGER_WANDB_ENTITY: the entity W&B clients see

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
    def allowed_hosts(self) -> tuple[str, ...]:
        """Host header values the API answers (see runledger.http_guards.AllowedHostsMiddleware)."""
        if self.allowed_hosts_override is not None:
            return self.allowed_hosts_override
        from runledger.http_guards import default_allowed_hosts

        return tuple(default_allowed_hosts(self.host))

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
            duckdb_memory_limit=_size(env, "RUNLEDGER_DUCKDB_MEMORY_LIMIT") or default_duckdb_memory_limit(),
            allowed_hosts_override=_hosts(env.get("RUNLEDGER_ALLOWED_HOSTS")),
            body_timeout=float(_int(env, "RUNLEDGER_BODY_TIMEOUT", 30)),
            header_timeout=float(_int(env, "RUNLEDGER_HEADER_TIMEOUT", 10)),
            keep_alive_timeout=_int(env, "RUNLEDGER_KEEP_ALIVE_TIMEOUT", 5),
            max_concurrency=_int(env, "RUNLEDGER_MAX_CONCURRENCY", 1000),
            sql_time_limit_ms=_int(env, "RUNLEDGER_SQL_TIME_LIMIT_MS", 30_000),
            sql_memory_mb=_int(env, "RUNLEDGER_SQL_MEMORY_MB", 512),
            sql_max_rows=_int(env, "RUNLEDGER_SQL_MAX_ROWS", 10_000),
            sql_max_bytes=_int(env, "RUNLEDGER_SQL_MAX_MB", 2048) << 20,
            sql_max_concurrent=_int(env, "RUNLEDGER_SQL_MAX_CONCURRENT", 4),
            wandb_entity=env.get("RUNLEDGER_WANDB_ENTITY") or "runledger",
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


_SIZE = re.compile(r"\s*[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.IGNORECASE)


def _size(env: Mapping[str, str], name: str) -> str | None:
    """A memory size as DuckDB spells it ("512MiB", "2GB")."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    if not _SIZE.fullmatch(raw):
        raise SettingsError(f"{name}={raw!r}: use a size such as '512MiB' or '2GB'")
    return raw.strip()


def _hosts(raw: str | None) -> tuple[str, ...] | None:
    if raw is None or raw.strip() == "":
        return None
    return tuple(h.strip() for h in raw.split(",") if h.strip())


def physical_memory_bytes() -> int:
    """RAM this process may use: the cgroup (container) limit when there is one, else the machine's."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def default_duckdb_memory_limit() -> str:
    """A quarter of RAM, between 256 MiB and 4 GiB: the read model's hot part is small (latest
    values, recent runs) and DuckDB spills big sorts to disk, while the rest of the process
    (Python, Arrow buffers, the fold cache) needs the remainder."""
    mib = physical_memory_bytes() // 4 >> 20
    return f"{max(256, min(mib, 4096))}MiB"
