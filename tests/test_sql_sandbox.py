"""The SQL sandbox (docs/design.md, invariant 9): every refusal is tried as an attack.

Three layers are tested separately: the parser check on its own (pure: DuckDB's parser, no
data), the instance lockdown on a real DuckDB file as if the check were bypassed, and the
endpoint of a real server, which must answer each attack with a 400 in MLflow's error shape and
still hold its data afterwards (the `COPY ... TO '<db>.wal'` trap loses committed rows).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import duckdb
import httpx
import pytest

from runledger.projector.store import Store
from runledger.query.sql import sandbox
from runledger.query.sql.engine import SqlEngine, SqlLimits
from tests.conftest import RunledgerServer

# (attack, a word the refusal message must contain)
ATTACKS = [
    # writes and DDL
    ("INSERT INTO runs SELECT * FROM runs", "INSERT"),
    ("UPDATE runs SET status = 'FAILED'", "UPDATE"),
    ("DELETE FROM metrics", "DELETE"),
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("CREATE TEMP TABLE t AS SELECT 1", "CREATE"),
    ("CREATE OR REPLACE VIEW analytics.runs AS SELECT 1", "CREATE"),
    ("DROP TABLE runs", "DROP"),
    ("ALTER TABLE runs ADD COLUMN x INT", "ALTER"),
    # files, databases, extensions, settings
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
    ("COPY (SELECT 'x') TO '{db}.wal' (FORMAT csv, USE_TMP_FILE false)", "COPY"),
    ("COPY runs FROM '/etc/passwd'", "COPY"),
    ("EXPORT DATABASE '/tmp/out'", "EXPORT"),
    ("IMPORT DATABASE '/tmp/out'", "PRAGMA"),
    ("ATTACH ':memory:' AS m", "ATTACH"),
    ("ATTACH '/tmp/other.duckdb' AS o", "ATTACH"),
    ("DETACH runledger", "DETACH"),
    ("USE main", "SET"),
    ("INSTALL httpfs", "LOAD"),
    ("LOAD json", "LOAD"),
    ("SET memory_limit = '100GB'", "SET"),
    ("RESET threads", "SET"),
    ("SET VARIABLE x = 1", "SET"),
    ("PRAGMA database_list", "PRAGMA"),
    ("CALL checkpoint()", "CALL"),
    ("CHECKPOINT", "CALL"),
    ("BEGIN TRANSACTION", "TRANSACTION"),
    ("VACUUM", "VACUUM"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x'", "EXPLAIN"),
    # several statements, however hidden
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELECT 1; DROP TABLE runs", "one statement"),
    ("SELECT 1 /* ; */ ; COPY (SELECT 1) TO '/tmp/x'", "one statement"),
    ("SELECT 1 -- comment\n; DELETE FROM metrics", "one statement"),
    # table functions with side effects or file/network access, anywhere in the tree
    ("SELECT * FROM checkpoint()", "checkpoint"),
    ("FROM force_checkpoint()", "force_checkpoint"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto"),
    ("SELECT * FROM read_parquet('/tmp/x.parquet')", "read_parquet"),
    ("SELECT * FROM read_json('/tmp/x.json')", "read_json"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
    ("SELECT * FROM read_blob('/etc/passwd')", "read_blob"),
    ("SELECT * FROM glob('/*')", "glob"),
    ("SELECT * FROM sniff_csv('/etc/passwd')", "sniff_csv"),
    ("SELECT * FROM parquet_metadata('/tmp/x.parquet')", "parquet_metadata"),
    ("SELECT * FROM read_csv('https://example.com/x.csv')", "read_csv"),
    ("WITH x AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM x", "read_text"),
    ("SELECT (SELECT content FROM read_text('/etc/passwd'))", "read_text"),
    ("SELECT * FROM runs WHERE run_id IN (SELECT filename FROM glob('/*'))", "glob"),
    ("SELECT list_transform([1], x -> (SELECT count(*) FROM read_text('/etc/passwd')))", "read_text"),
    ("SELECT * FROM runs r JOIN LATERAL (SELECT * FROM read_csv('/etc/passwd')) ON true", "read_csv"),
    # dynamic table access
    ("SELECT * FROM query('SELECT * FROM main.event_log')", "query"),
    ("SELECT * FROM query_table('consumer_offsets')", "query_table"),
    ("SELECT * FROM query_table('con' || 'sumer_offsets')", "query_table"),
    # host and instance introspection
    ("SELECT getenv('HOME')", "getenv"),
    ("SELECT current_setting('temp_directory')", "current_setting"),
    ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
    ("SELECT * FROM duckdb_databases()", "duckdb_databases"),
    ("SELECT * FROM duckdb_tables()", "duckdb_tables"),
    ("SELECT * FROM duckdb_secrets()", "duckdb_secrets"),
    ("SELECT * FROM pragma_database_size()", "pragma_database_size"),
    ("SELECT * FROM information_schema.tables", "information_schema"),
    ("SHOW TABLES", "SHOW"),
    ("SHOW ALL TABLES", "SHOW"),
    ("SELECT getvariable('x')", "getvariable"),
    ("SELECT current_database()", "current_database"),
    ("SELECT setseed(0.5)", "setseed"),
    ("SELECT write_log('x')", "write_log"),
    ("SELECT nextval('seq')", "nextval"),
    # internal tables, files by name, other catalogs, CTE scoping tricks
    ("SELECT * FROM main.event_log", "main.event_log"),
    ("SELECT * FROM event_log", "event_log"),
    ("SELECT * FROM consumer_offsets", "consumer_offsets"),
    ("SELECT * FROM main.runs", "main.runs"),
    ('SELECT * FROM "main"."metrics"', "main.metrics"),
    ("SELECT * FROM runledger.main.runs", "runledger.main.runs"),
    ("SELECT * FROM latest_points", "latest_points"),
    ("FROM '/etc/passwd'", "/etc/passwd"),
    ("SELECT * FROM 'data.csv'", "data.csv"),
    ("SELECT * FROM 'https://example.com/x.parquet'", "https://example.com/x.parquet"),
    ("SELECT * FROM (WITH consumer_offsets AS (SELECT 1) SELECT 1), consumer_offsets", "consumer_offsets"),
    ("SELECT * FROM system.main.duckdb_settings", "duckdb_settings"),
    ("SELECT * FROM temp.main.t", "temp.main.t"),
    ("SELECT main.getenv('HOME')", "main.getenv"),
    ("SELECT * FROM runs AT (VERSION => 1)", "AT"),
    ("PIVOT params ON key USING first(value)", "PIVOT"),
    # internal tables reached from every clause that can hold a subquery
    ("SELECT * FROM runs ORDER BY (SELECT count(*) FROM consumer_offsets)", "consumer_offsets"),
    ("SELECT * FROM runs LIMIT (SELECT count(*) FROM main.event_log)", "main.event_log"),
    ("SELECT * FROM runs QUALIFY (SELECT 1 FROM event_log) = 1", "event_log"),
    ("SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM consumer_offsets)) FROM runs", "consumer_offsets"),
    ("SELECT sum(value) OVER (ORDER BY (SELECT 1 FROM consumer_offsets)) FROM metrics", "consumer_offsets"),
    ("SELECT * FROM range((SELECT count(*) FROM consumer_offsets))", "consumer_offsets"),
    ("SELECT * FROM range(3) UNION ALL SELECT * FROM event_log", "event_log"),
    ("SELECT * FROM runs POSITIONAL JOIN event_log", "event_log"),
    ("WITH x AS MATERIALIZED (SELECT * FROM event_log) SELECT 1", "event_log"),
    ("SELECT * FROM runs WHERE run_id IN (WITH t AS (SELECT run_id FROM event_log) SELECT * FROM t)", "event_log"),
    ("SELECT * FROM (FROM event_log)", "event_log"),
    ("SELECT * FROM unnest((SELECT list(content) FROM read_text('/etc/passwd')))", "read_text"),
    ("SELECT * FROM runs USING SAMPLE (SELECT count(*) FROM event_log)", ""),
    ('SELECT "GETENV"(\'HOME\')', "getenv"),
    # not a query at all
    ("", "empty"),
    ("SELEC 1", "parse"),
]


def _message(q: str) -> str:
    with pytest.raises(sandbox.SqlRefused) as err:
        sandbox.check(q)
    return err.value.message


@pytest.mark.parametrize("attack,word", ATTACKS, ids=[a for a, _ in ATTACKS])
def test_parser_refuses(attack: str, word: str) -> None:
    message = _message(attack.format(db="/tmp/runledger.duckdb"))
    assert word.lower() in message.lower(), message


ALLOWED = [
    "SELECT * FROM runs",
    "FROM runs",
    "SELECT * FROM analytics.runs",
    "WITH best AS (SELECT run_id, max(value) v FROM metrics GROUP BY run_id) SELECT * FROM best JOIN runs USING (run_id)",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
    "SELECT run_id, quantile_cont(value, [0.1, 0.5, 0.9]) FROM metrics GROUP BY ALL",
    "SELECT row_number() OVER (PARTITION BY run_id ORDER BY step DESC) FROM metrics",
    "SELECT corr(try_cast(p.value AS DOUBLE), m.value) FROM params p JOIN latest_metrics m USING (run_id)",
    "SELECT * FROM range(10)",
    "SELECT unnest([1, 2, 3])",
    "SELECT a FROM (VALUES (1), (2)) t(a)",
    "SELECT list_transform([1, 2], x -> x * 2), 'a' || 'b', '5'::INT, [1, 2][1], {'a': 1}.a",
    "SELECT * FROM events WHERE ingest_time > now() - INTERVAL 7 DAY",
    "DESCRIBE runs",
    "SUMMARIZE SELECT value FROM metrics",
    "PIVOT params ON key IN ('lr', 'batch_size') USING first(value) GROUP BY run_id",
    "SELECT * FROM runs WHERE run_id IN (SELECT run_id FROM tags WHERE key = 'mlflow.user')",
    "SELECT max(value) FILTER (WHERE key = 'loss') FROM metrics",
    "SELECT count(*) FROM runs a, runs b",
]


@pytest.mark.parametrize("query", ALLOWED)
def test_parser_allows_analytical_sql(query: str) -> None:
    sandbox.check(query)


def test_allowed_functions_exclude_the_denied_ones() -> None:
    allowed = set(sandbox.allowed_functions())
    assert {"quantile_cont", "corr", "regexp_matches", "epoch_ms", "list_transform"} <= allowed
    assert not allowed & {"getenv", "current_setting", "write_log", "setseed", "nextval", "read_csv"}


# ----- defence in depth: the instance itself, as if a query got past the parser

@pytest.fixture
def locked_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "runledger.duckdb")
    SqlEngine(store, "t", SqlLimits()).prepare("latest_metrics")
    yield store
    store.close()


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "COPY (SELECT 1) TO '/tmp/runledger-sql-escape.csv'",
    "ATTACH '/tmp/runledger-sql-escape.duckdb' AS o",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    # memory_limit stays settable on the locked instance: the idle trim lowers it for a moment
    # (Store.release_buffers); SQL queries still cannot set it (the parser refuses every SET).
    "SET temp_directory = '/tmp/runledger-sql-escape'",
])
def test_locked_instance_refuses_without_the_parser(locked_store: Store, statement: str) -> None:
    with locked_store.con.cursor() as cur:
        with pytest.raises(duckdb.Error):
            cur.execute(statement)


def test_locked_instance_still_serves_the_projector(locked_store: Store) -> None:
    """The lockdown is instance-wide: the projector's Arrow-registered batches and per-cursor
    SQL settings must still work."""
    import pyarrow as pa
    with locked_store.con.cursor() as cur:
        cur.register("b", pa.table({"k": ["x"]}))
        assert cur.execute("SELECT count(*) FROM b").fetchone() == (1,)
        cur.execute("SET SESSION max_execution_time = 1000")
        cur.execute("SET SESSION operator_memory_limit = '64MB'")


# ----- through a real server

@pytest.fixture(scope="module")
def rl(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/runledger/v1", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(server: RunledgerServer) -> str:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": f"sandbox-{uuid.uuid4().hex}"}).json()["experiment_id"]
        run = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
        points = [{"key": "loss", "value": 1.0 / (i + 1), "timestamp": 1_700_000_000_000 + i, "step": i} for i in range(5)]
        assert api.post("runs/log-batch", json={"run_id": run, "metrics": points}).status_code == 200
    return run


@pytest.mark.kafka
@pytest.mark.parametrize("attack,word", ATTACKS, ids=[a for a, _ in ATTACKS])
def test_endpoint_refuses(rl: httpx.Client, server: RunledgerServer, seeded: str, attack: str, word: str) -> None:
    query = attack.format(db=str(server.duckdb_path.resolve()))
    r = rl.post("sql", json={"query": query})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert word.lower() in body["message"].lower()
    # GET runs the same checks
    assert rl.get("sql", params={"query": query, "format": "csv"}).status_code == 400


@pytest.mark.kafka
def test_wal_trap_refused_and_data_survives_a_crash(make_server) -> None:
    """The escape found in DuckDB 2.0: COPY into the database's own WAL succeeds even with
    external access off and the configuration locked. Refused here; and after a SIGKILL the
    committed rows are all there (nothing overwrote the WAL)."""
    s = make_server()
    with httpx.Client(base_url=f"{s.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": "wal"}).json()["experiment_id"]
        run = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
        points = [{"key": "m", "value": float(i), "timestamp": 1, "step": i} for i in range(50)]
        assert api.post("runs/log-batch", json={"run_id": run, "metrics": points}).status_code == 200
    wal = str(s.duckdb_path.resolve()) + ".wal"
    with httpx.Client(base_url=f"{s.url}/api/runledger/v1", timeout=30) as rl:
        for attack in (f"COPY (SELECT 'x') TO '{wal}' (FORMAT csv, USE_TMP_FILE false)",
                       f"SELECT 1; COPY (SELECT 'x') TO '{wal}' (FORMAT csv, USE_TMP_FILE false)",
                       f"EXPLAIN ANALYZE COPY (SELECT 'x') TO '{wal}'"):
            assert rl.post("sql", json={"query": attack}).status_code == 400
        # A read waits for the commits of answered writes: the 50 rows are in DuckDB (its
        # file or WAL) before the crash, not only in the log.
        counted = rl.post("sql", json={"query": f"SELECT count(*) FROM metrics WHERE run_id = '{run}'"})
        assert counted.json()["rows"] == [[50]]
    s.kill()
    con = duckdb.connect(str(s.duckdb_path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM metrics WHERE run_id = ?", [run]).fetchone() == (50,)
    finally:
        con.close()


def test_a_new_instance_is_prepared_again(tmp_path: Path) -> None:
    """When the store opens a new DuckDB instance (a damaged file rebuilt), the next query
    recreates the views and locks the new instance down before it runs."""
    store = Store(tmp_path / "runledger.duckdb")
    engine = SqlEngine(store, "t", SqlLimits())
    engine.prepare("latest_metrics")
    try:
        store.close()
        (tmp_path / "runledger.duckdb").unlink()
        store.con = duckdb.connect(str(tmp_path / "runledger.duckdb"))
        from runledger.projector.schema import create_schema
        create_schema(store.con)
        store._writer = store.con.cursor()
        engine.acquire()
        q = engine.open("SELECT count(*) AS n FROM runs")
        try:
            assert q.next_batch().column(0).to_pylist() == [0]
        finally:
            q.close()
        with store.con.cursor() as cur, pytest.raises(duckdb.Error):
            cur.execute("SELECT * FROM read_text('/etc/passwd')")
    finally:
        store.close()


def test_the_check_names_the_functions_a_query_calls_including_in_subqueries() -> None:
    functions = sandbox.check("WITH b AS (SELECT step, quantile_cont(value, [0.1, 0.9]) AS q FROM metrics GROUP BY step) "
                              "SELECT b.step, q[1] FROM b WHERE step IN (SELECT max(step) FROM metrics)")
    assert {"quantile_cont", "max"} <= functions
    assert "median" not in functions
    # The answer comes from the cache the second time; it must be the same set.
    assert sandbox.check("SELECT median(value) FROM metrics") == sandbox.check("SELECT median(value) FROM metrics")
