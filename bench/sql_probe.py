"""CPU per SQL question, in process, without Kafka or HTTP (issue 13's performance work).

Builds a read model with the data `bench/workloads/sql.py` seeds (N runs, each a `loss` curve of
S points, a final `accuracy`, a late point for some finished runs, two params, two tags, the
events that would have logged them) straight into DuckDB, then times the ten worked questions
of docs/sql.md three ways, back to back in one process, so that a busy machine inflates all of
them alike:

- `engine`: through runledger.query.sql.engine (sandbox check, cursor, read-only transaction,
  log position, Arrow result) and the JSON encoding the endpoint does;
- `inprocess`: DuckDB in-process on a Parquet export of the views (what the bench compares with);
- CPU seconds (process time) next to each wall-clock figure: on a loaded machine the CPU
  figure is the one to compare;
- `busiest`: the CPU time of the busiest thread (Linux, /proc/self/task). A query's wall time
  on a quiet machine is at least this, and about this when its threads do not wait on each
  other, so it shows on a loaded machine whether a change shortened the longest thread (one
  that moves work onto an idle core does not lower the CPU figure). Read at the kernel's clock
  tick (10 ms).

    .venv/bin/python bench/sql_probe.py --runs 20000 --steps 500 --db /tmp/sqlprobe.duckdb
    .venv/bin/python bench/sql_probe.py --db /tmp/sqlprobe.duckdb --only 0,2,8   # reuse the file

Question 0 is `SELECT 1` (the fixed cost of a request).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sql.md"
T0_MS = 1_700_000_000_000
VIEWS = ["experiments", "runs", "params", "tags", "metrics", "latest_metrics", "run_activity", "events", "rejections"]
TOPIC = "runledger-probe"


def questions() -> dict[int, str]:
    found = re.findall(r"^### (\d+)\. (.+?)\n.*?```sql\n(.*?)```", DOC.read_text(), re.S | re.M)
    return {0: "SELECT 1", **{int(n): q for n, _, q in found}}


def build(path: str, runs: int, steps: int) -> None:
    """The bench's data (bench/workloads/sql.py, run_spec), written with SQL in run order (the
    order the projector appends a run's points in)."""
    from runledger.projector.store import Store

    Path(path).unlink(missing_ok=True)
    Path(path + ".wal").unlink(missing_ok=True)
    store = Store(path)
    con = store.con
    con.execute(f"""
        CREATE TEMP TABLE spec AS
        SELECT i, md5(i::VARCHAR) AS run_id, printf('run-%06d', i) AS run_name,
               (i * 2654435761) % 4294967296 AS h, ['0.001', '0.01', '0.1'][i % 3 + 1] AS lr, i % 3 AS lr_index,
               (32 << (i % 3))::VARCHAR AS batch_size, ['cnn', 'mlp', 'vit'][(i // 3) % 3 + 1] AS model,
               {T0_MS} + i * 1000 AS start, i % 10 <> 0 AS finished, {T0_MS} + i * 1000 + {steps} + 10 AS "end",
               i % 10 <> 0 AND i % 100 = 1 AS late, CASE WHEN i % 2 = 1 THEN 'alice' ELSE 'bob' END AS "user"
        FROM range({runs}) t(i)""")
    con.execute("INSERT INTO experiments VALUES ('0', 'Default', '/tmp/a/0', 'active', 0, 0, NULL), "
                f"('1', 'sql-docs', '/tmp/a/1', 'active', {T0_MS}, {T0_MS}, NULL)")
    con.execute("""INSERT INTO runs SELECT run_id, '1', run_name, "user",
                   CASE WHEN finished THEN 'FINISHED' ELSE 'RUNNING' END, start,
                   CASE WHEN finished THEN "end" END, 'active', NULL, '/tmp/a/1/' || run_id || '/artifacts'
                   FROM spec ORDER BY i""")
    con.execute("INSERT INTO params SELECT run_id, 'lr', lr FROM spec UNION ALL "
                "SELECT run_id, 'batch_size', batch_size FROM spec")
    con.execute("INSERT INTO tags SELECT run_id, 'mlflow.runName', run_name FROM spec UNION ALL "
                "SELECT run_id, 'model', model FROM spec")
    # Per run: accuracy (RunBatchLogged), the loss curve (MetricsLogged), the late point.
    con.execute(f"""
        INSERT INTO metrics
        SELECT run_id, key, value, timestamp, step FROM (
            SELECT i, 0 AS o, run_id, 'accuracy' AS key, 0.5 + (h % 5000) / 10000 AS value,
                   start + {steps} AS timestamp, {steps - 1} AS step FROM spec
            UNION ALL
            SELECT i, 1 + s, run_id, 'loss', 1.0 / (1 + (0.002 + (h % 1000) / 200000 * (1 + lr_index)) * s)
                   + ((h >> (s % 13)) % 100) / 10000, start + s, s FROM spec, range({steps}) r(s)
            UNION ALL
            SELECT i, 1 + {steps}, run_id, 'late', 1.0, "end" + 5, 0 FROM spec WHERE late)
        ORDER BY i, o""")
    con.execute("""
        INSERT INTO latest_points
        SELECT run_id, key, arg_max(value, (timestamp, step, value)), max(timestamp),
               arg_max(step, (timestamp, step, value)), arg_max(value, (step, timestamp, value)),
               arg_max(timestamp, (step, timestamp, value)), max(step)
        FROM metrics GROUP BY run_id, key""")
    con.execute(f"""
        INSERT INTO event_log
        SELECT md5(run_id || o::VARCHAR), (i % 4)::INTEGER, row_number() OVER (PARTITION BY i % 4 ORDER BY i, o),
               type, '1', run_id, {T0_MS} + i * 1000, "user", NULL, NULL, '{{"x": 1}}', false, NULL, 'mlflow'
        FROM (SELECT i, 0 AS o, run_id, 'RunCreated' AS type, "user" FROM spec
              UNION ALL SELECT i, 1, run_id, 'RunBatchLogged', "user" FROM spec
              UNION ALL SELECT i, 2, run_id, 'MetricsLogged', "user" FROM spec
              UNION ALL SELECT i, 3, run_id, 'RunUpdated', "user" FROM spec WHERE finished
              UNION ALL SELECT i, 4, run_id, 'MetricsLogged', "user" FROM spec WHERE late)""")
    con.execute(f"""INSERT INTO consumer_offsets SELECT '{TOPIC}', "partition", max("offset") + 1
                    FROM event_log GROUP BY ALL""")
    con.execute("DROP TABLE spec")
    con.execute("CHECKPOINT")
    store.close()


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process; empty where /proc has none."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:   # the thread ended meanwhile
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/sqlprobe.duckdb")
    ap.add_argument("--runs", type=int, default=0, help="build the file with this many runs first")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--only", default="", help="comma-separated question numbers (0 = SELECT 1)")
    ap.add_argument("--threads", type=int, default=2, help="RUNLEDGER_SQL_THREADS")
    ap.add_argument("--no-inprocess", action="store_true")
    ap.add_argument("--memory-limit", default=None,
                    help="RUNLEDGER_DUCKDB_MEMORY_LIMIT (default: the server's own default)")
    args = ap.parse_args()
    if args.runs:
        t = time.monotonic()
        build(args.db, args.runs, args.steps)
        print(f"built {args.db}: {args.runs:,} runs x {args.steps} steps in {time.monotonic() - t:.0f}s")

    import duckdb
    from runledger.dialects.native.sql import SqlRequest, _JsonJob
    from runledger.projector.store import Store
    from runledger.query.sql import formats
    from runledger.query.sql.engine import SqlEngine, SqlLimits

    qs = questions()
    if args.only:
        qs = {n: qs[n] for n in map(int, args.only.split(","))}
    from runledger.settings import default_duckdb_memory_limit
    # The server's own default limit unless told otherwise: the buffer pool's size decides
    # whether a 10M-point scan is served from memory (the probe used 1GiB and the server
    # 384MiB, which is why in-process and server figures for Q2 disagreed).
    memory_limit = args.memory_limit or default_duckdb_memory_limit()
    print(f"DuckDB memory_limit {memory_limit}")
    store = Store(args.db, threads=1, memory_limit=memory_limit)
    from runledger.cli import size_bytes
    # As the server does (runledger/app.py): the memory limit is raised by the SQL budget while
    # SQL queries run.
    engine = SqlEngine(store, TOPIC, SqlLimits(threads=args.threads, idle_threads=1,
                                               idle_memory_mb=size_bytes(memory_limit) >> 20))
    engine.partitions = [0, 1, 2, 3]
    engine.prepare("latest_metrics")
    if hasattr(store, "committed_offsets"):
        store.offsets(TOPIC)   # as the projector does at start-up

    def via_engine(q: str) -> bytes:
        req = SqlRequest(query=q)
        engine.acquire()
        return _JsonJob(engine, req, min(122_880, engine.limits.max_rows + 1), None).run()

    local = None
    if not args.no_inprocess:
        folder = Path(args.db + ".parquet")
        folder.mkdir(exist_ok=True)
        for view in VIEWS:
            target = folder / f"{view}.parquet"
            if target.exists():
                continue
            engine.acquire()
            q = engine.open(f"SELECT * FROM {view}")
            enc = formats.ENCODERS["parquet"]()
            with open(target, "wb") as f:
                f.write(enc.begin(q.schema))
                while (b := q.next_batch()) is not None:
                    f.write(enc.batch(b))
                f.write(enc.end(None))
            q.close()
        local = duckdb.connect()
        local.execute(f"SET threads = {args.threads}")
        for view in VIEWS:
            local.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{folder / (view + '.parquet')}')")

    def timed(fn, q: str) -> tuple[float, float, float]:
        walls, cpus, busiest = [], [], []
        fn(q)
        for _ in range(args.reps):
            before = thread_cpu()
            c, t = time.process_time(), time.perf_counter()
            fn(q)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            after = thread_cpu()
            busiest.append(max((v - before.get(k, 0.0) for k, v in after.items()), default=0.0))
        return (statistics.median(walls) * 1000, statistics.median(cpus) * 1000,
                statistics.median(busiest) * 1000)

    print(f"{'Q':>3} {'engine ms':>10} {'cpu ms':>8} {'busiest':>8} {'local ms':>9} {'cpu ms':>8} {'busiest':>8} "
          f"{'ratio':>6}")
    for n, q in qs.items():
        ew, ec, eb = timed(via_engine, q)
        if local is not None:
            lw, lc, lb = timed(lambda s: local.sql(s).to_arrow_table(), q)
            print(f"{n:>3} {ew:>10.2f} {ec:>8.2f} {eb:>8.0f} {lw:>9.2f} {lc:>8.2f} {lb:>8.0f} {ew / lw:>6.2f}")
        else:
            print(f"{n:>3} {ew:>10.2f} {ec:>8.2f} {eb:>8.0f}")
    store.close()


if __name__ == "__main__":
    main()
