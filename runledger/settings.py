"""Runledger's settings, read once from the environment (and the CLI's flags) at start-up.

Every setting is one field of `Settings` below, declared once: its default, its limits, its
environment variable (always `RUNLEDGER_*`) and its help text. pydantic-settings reads and
validates them; the CLI (runledger/cli.py) turns every field into a flag, so a setting added
here is a flag too. A bad value is one line naming the variable (or flag) and the value.

To add a setting: a field with `setting(default, "RUNLEDGER_NAME", "help text", ...limits)`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from runledger.projector.schema import LATEST_TABLES


log = logging.getLogger(__name__)

# Names from before every setting shared the RUNLEDGER_ prefix; still read, with a warning.
DEPRECATED_NAMES = {"RUNLEDGER_HOST": "HOST", "RUNLEDGER_PORT": "PORT", "RUNLEDGER_DATA_DIR": "DATA_DIR",
                    "RUNLEDGER_KAFKA_PORT": "KAFKA_PORT"}
# Kafka tooling's conventional name, kept as a plain alias (the design and compose files use it).
ALIASES = {"RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS": "KAFKA_BOOTSTRAP_SERVERS"}


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable and the value."""


def setting(default: Any, env: str, description: str, **limits: Any) -> Any:
    """A field read from the environment variable `env` (and the CLI flag named after the field)."""
    factory = limits.pop("default_factory", None)
    if factory is not None:
        return Field(default_factory=factory, validation_alias=env, description=description, **limits)
    return Field(default, validation_alias=env, description=description, **limits)


def default_duckdb_memory_limit() -> str:
    """A quarter of RAM, between 256 MiB and 384 MiB (docs/memory.md): the read model's hot part is small (latest
    values, recent runs) and DuckDB spills big sorts to disk, while the rest of the process
    (Python, Arrow buffers, the fold cache) needs the remainder. DuckDB fills its pool with the
    blocks it writes, so a replay or a long streaming burst held the whole limit: 1 GiB (the cap
    before) put the server at 1.2-1.6 GB in the bench, against a goal of 600 MB (issue 22)."""
    mib = physical_memory_bytes() // 4 >> 20
    return f"{max(256, min(mib, 384))}MiB"


_SIZE = re.compile(r"\s*[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.IGNORECASE)
Port = Annotated[int, Field(gt=0, le=65535)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=True,        # environment variables are; `port` the field is not `PORT` the old name
        env_ignore_empty=True,      # VAR= (empty) means the default, as it always has
        frozen=True,
        validate_by_name=True,      # Settings(port=...) in code and tests; RUNLEDGER_PORT from the environment
        validate_by_alias=True,
        extra="ignore",
    )

    host: str = setting("127.0.0.1", "RUNLEDGER_HOST", "address the HTTP API listens on")
    port: Port = setting(5000, "RUNLEDGER_PORT", "port the HTTP API listens on")
    data_dir: Path = setting(Path("data"), "RUNLEDGER_DATA_DIR",
                             "folder of the read model (runledger.duckdb), the local broker and artifacts")
    bootstrap_servers: str | None = setting(
        None, "RUNLEDGER_KAFKA_BOOTSTRAP_SERVERS",
        "Kafka to use (host:port[,host:port]); unset: `runledger up` starts a local broker "
        "(also read from KAFKA_BOOTSTRAP_SERVERS)")
    kafka_port: Port = setting(19092, "RUNLEDGER_KAFKA_PORT",
                               "port of the local broker `runledger up` starts (its controller takes the next one)")
    topic: str = setting("runledger.events", "RUNLEDGER_TOPIC", "Kafka topic of the event log")
    partitions: int = setting(4, "RUNLEDGER_PARTITIONS", "partitions of the topic when Runledger creates it", gt=0)
    latest_metric: Literal["step", "timestamp"] = setting(
        "step", "RUNLEDGER_LATEST_METRIC",
        "which point is a metric's latest: 'step' (the MLflow server's rule) or 'timestamp' (its API reference's)")
    sync_timeout: float = setting(30.0, "RUNLEDGER_SYNC_TIMEOUT",
                                  "seconds a read waits for the read model to reach the writer's position", gt=0)
    kafka_timeout: float = setting(30.0, "RUNLEDGER_KAFKA_TIMEOUT",
                                   "seconds a write waits for Kafka's acknowledgement before answering 503", gt=0)
    clock_margin_ms: int = setting(1000, "RUNLEDGER_CLOCK_MARGIN_MS",
                                   "how far (ms) the broker's clock may lag the server's", ge=0)
    artifact_root_override: str | None = setting(
        None, "RUNLEDGER_ARTIFACT_ROOT",
        "artifact root of new experiments; default: mlflow-artifacts:/ (served by this server); a file: or s3: "
        "URI makes clients write there themselves")
    duckdb_threads: int = setting(1, "RUNLEDGER_DUCKDB_THREADS", "DuckDB threads of the read model", gt=0)
    stream_max_lag_ms: int = setting(300, "RUNLEDGER_STREAM_MAX_LAG_MS", "streaming backpressure bound (ms)", gt=0)
    run_cache_mb: int = setting(64, "RUNLEDGER_RUN_CACHE_MB", "MB of rendered runs kept for reads; 0 = none", ge=0)
    duckdb_memory_limit: str = setting(None, "RUNLEDGER_DUCKDB_MEMORY_LIMIT",
                                       "DuckDB memory limit, e.g. '512MiB' or '2GB'; default: a quarter of RAM, "
                                       "between 256MiB and 384MiB", default_factory=default_duckdb_memory_limit)
    allowed_hosts_override: Annotated[tuple[str, ...] | None, NoDecode] = setting(
        None, "RUNLEDGER_ALLOWED_HOSTS", "comma-separated Host header values answered; default: derived from HOST")
    body_timeout: float = setting(30.0, "RUNLEDGER_BODY_TIMEOUT", "max seconds to wait for the next body chunk", gt=0)
    header_timeout: float = setting(10.0, "RUNLEDGER_HEADER_TIMEOUT", "max seconds to send request headers", gt=0)
    keep_alive_timeout: int = setting(5, "RUNLEDGER_KEEP_ALIVE_TIMEOUT", "seconds idle keep-alive connections live",
                                      gt=0)
    max_concurrency: int = setting(1000, "RUNLEDGER_MAX_CONCURRENCY", "connections + tasks before 503s", gt=0)
    sql_time_limit_ms: int = setting(30_000, "RUNLEDGER_SQL_TIME_LIMIT_MS", "time limit (ms) per SQL query", gt=0)
    sql_memory_mb: int = setting(512, "RUNLEDGER_SQL_MEMORY_MB", "MB per SQL query's intermediates", gt=0)
    sql_max_rows: int = setting(10_000, "RUNLEDGER_SQL_MAX_ROWS", "rows in a JSON SQL answer (truncated beyond)",
                                gt=0)
    sql_max_mb: int = setting(2048, "RUNLEDGER_SQL_MAX_MB", "MB of a streamed SQL answer", gt=0)
    sql_max_concurrent: int = setting(4, "RUNLEDGER_SQL_MAX_CONCURRENT", "concurrent SQL queries (more get 429)",
                                      gt=0)
    sql_threads: int = setting(None, "RUNLEDGER_SQL_THREADS",
                               "DuckDB threads while SQL queries run (RUNLEDGER_DUCKDB_THREADS otherwise); "
                               "default: the CPU count, at most 8", default_factory=lambda: min(os.cpu_count() or 1, 8),
                               gt=0)
    comet_workspace: str = setting("runledger", "RUNLEDGER_COMET_WORKSPACE",
                                   "the one workspace Comet's API shows (docs/comet.md)", min_length=1)
    # Authentication and per-experiment permissions (docs/auth.md).
    auth: bool = setting(False, "RUNLEDGER_AUTH", "'on': users, tokens and per-experiment permissions (default off)")
    auth_default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = setting(
        "READ", "RUNLEDGER_AUTH_DEFAULT_PERMISSION", "permission of a user without a grant on an experiment")
    admin_user: str | None = setting(None, "RUNLEDGER_ADMIN_USER", "the first admin, created at start if missing")
    admin_password: str | None = setting(None, "RUNLEDGER_ADMIN_PASSWORD", "the first admin's password", repr=False)
    auth_free_failures: int = setting(5, "RUNLEDGER_AUTH_FREE_FAILURES",
                                      "failed sign-ins per client per minute before each is slowed down", gt=0)
    wandb_entity: str = setting("runledger", "RUNLEDGER_WANDB_ENTITY",
                                "the entity (workspace) W&B's public API clients see (docs/wandb.md)", min_length=1)
    wandb_url_key: str | None = setting(None, "RUNLEDGER_WANDB_URL_KEY",
                                        "key signing W&B history-export URLs; replicas behind one address share "
                                        "it (default: random per process)", repr=False)
    artifact_store_override: str | None = setting(
        None, "RUNLEDGER_ARTIFACT_STORE",
        "where served artifact bytes are kept: a folder or s3://bucket/prefix; default: DATA_DIR/artifacts")
    s3_endpoint_url: str | None = setting(None, "RUNLEDGER_S3_ENDPOINT_URL",
                                          "S3-compatible server of an s3:// artifact store (default: AWS)")
    artifact_max_mb: int = setting(10240, "RUNLEDGER_ARTIFACT_MAX_MB", "MB one uploaded artifact file may have", gt=0)
    # Memory bounds (docs/memory.md).
    memory_release_mb: int = setting(16, "RUNLEDGER_MEMORY_RELEASE_MB",
                                     "MB of RSS growth after which freed memory is handed back to the OS", gt=0)
    malloc_arenas: int = setting(2, "RUNLEDGER_MALLOC_ARENAS", "glibc malloc arenas; 0 = glibc's default (8 per core)",
                                 ge=0)
    malloc_mmap_threshold_kb: int = setting(0, "RUNLEDGER_MALLOC_MMAP_THRESHOLD_KB",
                                            "KiB from which a glibc malloc block gets its own mapping, returned "
                                            "when freed, e.g. 256; 0 = glibc's default (rises up to 32 MiB)", ge=0)
    arrow_memory_pool: Literal["system", "default"] = setting(
        "system", "RUNLEDGER_ARROW_MEMORY_POOL",
        "Arrow's allocator: 'system' (glibc malloc, hands memory back) or 'default' (Arrow's mimalloc/jemalloc)")
    duckdb_allocator_flush_mb: int = setting(16, "RUNLEDGER_DUCKDB_ALLOCATOR_FLUSH_MB",
                                             "MB a DuckDB task may peak at before its allocator's caches are "
                                             "flushed to the OS", gt=0)
    duckdb_checkpoint_mb: int = setting(16, "RUNLEDGER_DUCKDB_CHECKPOINT_MB",
                                        "MB of DuckDB write-ahead log after which it checkpoints (rows written "
                                        "since are held in memory uncompressed until then)", gt=0)
    duckdb_vacuum_tasks: int = setting(0, "RUNLEDGER_DUCKDB_VACUUM_TASKS",
                                       "DuckDB's max_vacuum_tasks: row-group merges a checkpoint may do (DuckDB's "
                                       "default is 100; 0 keeps checkpoints short while streaming)", ge=0)
    # Where memory sits, sampled into a file (runledger.memory_trace; docs/memory.md): for soak runs.
    memory_trace: Path | None = setting(None, "RUNLEDGER_MEMORY_TRACE",
                                        "file to append a JSON line of the server's memory accounts to, every "
                                        "RUNLEDGER_MEMORY_TRACE_SECONDS; unset: off")
    memory_trace_seconds: float = setting(5.0, "RUNLEDGER_MEMORY_TRACE_SECONDS",
                                          "seconds between two memory trace samples", gt=0)
    memory_trace_python: int = setting(0, "RUNLEDGER_MEMORY_TRACE_PYTHON",
                                       "with the memory trace: also trace Python's allocations (tracemalloc) with "
                                       "this many frames, and log the places that grew most; 0 = off (it slows "
                                       "the server down)", ge=0)
    memory_idle_trim_s: float = setting(3.0, "RUNLEDGER_MEMORY_IDLE_TRIM_S",
                                        "seconds without requests or commits after which DuckDB's cached blocks "
                                        "and freed memory are handed back to the OS (once per quiet spell); "
                                        "0 = never", ge=0)
    memory_purge_s: float = setting(30.0, "RUNLEDGER_MEMORY_PURGE_S",
                                    "seconds between two walks of DuckDB's eviction queues on a server that never "
                                    "goes quiet, at a moment with no request in flight (drops the bookkeeping of "
                                    "blocks queries freed, and cached blocks); 0 = never", ge=0)
    memory_checkpoint_s: float = setting(0.0, "RUNLEDGER_MEMORY_CHECKPOINT_S",
                                         "opt-in: seconds between two housekeeping checkpoints of DuckDB's WAL "
                                         "(256 KiB to 4 MiB) between the purges; 0 = only with the purges and idle "
                                         "trims (docs/memory.md)", ge=0)
    # As-of reads fold from the nearest checkpoint of a run's state (docs/audit.md).
    audit_checkpoint_events: int = setting(200, "RUNLEDGER_AUDIT_CHECKPOINT_EVENTS",
                                           "checkpoint a run's state for as-of reads every this many of its events; "
                                           "0 = never by events", ge=0)
    audit_checkpoint_points: int = setting(50_000, "RUNLEDGER_AUDIT_CHECKPOINT_POINTS",
                                           "... or every this many of its metric points; 0 = never by points", ge=0)
    # The projector's folded state of its most recently written runs (~2.4 KB each for a run with
    # 5 params, 4 tags and 3 metrics); runs/search renders the runs it holds without reading
    # DuckDB (docs/search.md, "What a page costs").
    fold_cache_runs: int = setting(5000, "RUNLEDGER_FOLD_CACHE_RUNS",
                                   "runs whose folded state the projector keeps in memory", gt=0)

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _a_size(cls, raw: str) -> str:
        if not _SIZE.fullmatch(raw):
            raise ValueError("use a size such as '512MiB' or '2GB'")
        return raw.strip()

    @field_validator("allowed_hosts_override", mode="before")
    @classmethod
    def _comma_separated(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            hosts = tuple(h.strip() for h in raw.split(",") if h.strip())
            return hosts or None
        return raw

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **others: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings()` is the defaults (plus keyword arguments): code and tests that build one must
        # not pick up whatever RUNLEDGER_* the shell has. The environment is read by from_env only.
        return (init_settings,)

    # ----- derived values -----

    @property
    def sql_max_bytes(self) -> int:
        return self.sql_max_mb << 20

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "runledger.duckdb"

    @property
    def kafka_home(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def artifact_root(self) -> str:
        """Where new experiments put artifacts: by default `mlflow-artifacts:/`, served by this
        server (docs/artifacts.md), so clients anywhere upload through HTTP. RUNLEDGER_ARTIFACT_ROOT
        (e.g. a file: or s3: URI) makes clients write there themselves instead."""
        return self.artifact_root_override or "mlflow-artifacts:/"

    @property
    def artifact_store(self) -> str:
        """Where the server keeps the artifact bytes it serves: a folder, or s3://bucket/prefix."""
        return self.artifact_store_override or str(self.data_dir / "artifacts")

    @property
    def artifact_max_bytes(self) -> int:
        return self.artifact_max_mb << 20

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

    # ----- construction -----

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, flags: Mapping[str, Any] | None = None) -> "Settings":
        """Settings from `env` (the process environment by default), with `flags` (field name ->
        value, e.g. the CLI's --port) taking precedence. SettingsError names a bad variable or flag."""
        env, renamed = _with_old_names(env)
        values = _MappingSource(cls, env)()
        given = {k: v for k, v in (flags or {}).items() if v is not None}
        for name in given:
            values.pop(env_name(name), None)
        try:
            return cls(**values, **given)
        except ValidationError as e:
            raise SettingsError(_one_line(e, renamed)) from None

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed (by field name), validated like the original."""
        try:
            return type(self)(**{**self.model_dump(), **changes})
        except ValidationError as e:
            raise SettingsError(_one_line(e, {})) from None


def env_name(field: str) -> str:
    """The environment variable of a Settings field."""
    alias = Settings.model_fields[field].validation_alias
    assert isinstance(alias, str)
    return alias


def flag_name(field: str) -> str:
    """The CLI flag of a Settings field: its variable without the prefix (RUNLEDGER_KAFKA_PORT: --kafka-port)."""
    return "--" + env_name(field).removeprefix("RUNLEDGER_").lower().replace("_", "-")


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over any mapping (tests pass plain dicts); it
    otherwise reads os.environ only."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _with_old_names(env: Mapping[str, str]) -> tuple[Mapping[str, str], dict[str, str]]:
    """`env` with each RUNLEDGER_ name filled in from its old or alias name when only that is set;
    and which names were so filled (new -> old), so an error names what the user actually set."""
    renamed: dict[str, str] = {}
    for name, old in (*DEPRECATED_NAMES.items(), *ALIASES.items()):
        if env.get(name) or not env.get(old):
            continue
        if name in DEPRECATED_NAMES:
            log.warning("%s is deprecated; set %s instead (the old name still works for now)", old, name)
        env = {**env, name: env[old]}
        renamed[name] = old
    return env, renamed


def _one_line(error: ValidationError, renamed: Mapping[str, str]) -> str:
    """The first problem as `NAME='value' <what is wrong>`, NAME the variable or flag the user set."""
    first = error.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else "?"
    if key in Settings.model_fields:
        name = flag_name(key)
    else:
        name = renamed.get(key, key)
    value = first.get("input")
    ctx = first.get("ctx") or {}
    kind = first["type"]
    if kind == "int_parsing":
        why = "is not an integer"
    elif kind == "float_parsing":
        why = "is not a number"
    elif kind == "greater_than":
        why = "must be positive" if ctx.get("gt") == 0 else f"must be greater than {ctx.get('gt')}"
    elif kind == "greater_than_equal":
        why = f"must be at least {ctx.get('ge')}"
    elif kind == "less_than_equal":
        why = f"must be at most {ctx.get('le')}"
    elif kind == "literal_error":
        why = f": use {ctx.get('expected')}"
    else:
        why = ": " + str(first["msg"]).removeprefix("Value error, ")
    return f"{name}={value!r} {why}".replace(" :", ":")


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
