"""The ten worked questions of docs/sql.md, run as written against a real server with seeded
runs; each answer is checked against what the seed implies (computed here, not copied)."""

from __future__ import annotations

import collections
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.kafka

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql.md"
NOW_MS = int(time.time() * 1000)
OLD = NOW_MS - 3 * 24 * 3600 * 1000      # three days ago: finished runs and the quiet one

# name, lr, batch_size, model tag, loss per step, final accuracy, actor, finished?, recent points?
RUNS = [
    ("a", "0.01", "32", "cnn", [1.0, 0.8, 0.6, 0.5, 0.4], 0.80, "alice", True, False),
    ("b", "0.01", "64", "mlp", [1.0, 0.7, 0.5, 0.3, 0.2], 0.85, "alice", True, False),
    ("c", "0.1", "32", "cnn", [1.0, 0.5, 0.6, 0.7, 0.9], 0.60, "bob", True, False),
    ("d", "0.1", "64", "mlp", [0.9, 0.6, 0.4, 0.45, 0.5], 0.70, "bob", True, False),
    ("e", "0.001", "128", "cnn", [1.2, 1.1, 1.0, 0.95, 0.9], 0.75, "alice", False, False),
    ("f", "0.001", "32", "mlp", [1.1, 1.0, 1.05, 1.1, 1.2], 0.65, "bob", False, True),
]


def doc_queries() -> dict[int, str]:
    found = re.findall(r"^### (\d+)\. .+?\n.*?```sql\n(.*?)```", DOC.read_text(), re.S | re.M)
    return {int(n): q for n, q in found}


def quantile_cont(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@pytest.fixture(scope="module")
def seeded(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import uuid
    from tests.conftest import RunledgerServer
    server = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("docs"), f"test-{uuid.uuid4().hex[:12]}")
    server.start()
    sent: collections.Counter[tuple[str, str]] = collections.Counter()
    ids: dict[str, str] = {}
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        def call(actor: str, path: str, body: dict[str, Any], event: str, ok: bool = True) -> dict[str, Any]:
            r = api.post(path, json=body, headers={"X-Runledger-User": actor})
            assert (r.status_code == 200) == ok, r.text
            if ok:
                sent[(actor, event)] += 1
            return r.json()

        exp = call("alice", "experiments/create", {"name": "sql-docs"}, "ExperimentCreated")["experiment_id"]
        for name, lr, bs, model, losses, acc, actor, finished, recent in RUNS:
            base = NOW_MS - 60_000 if recent else OLD
            run = call(actor, "runs/create", {"experiment_id": exp, "run_name": name, "start_time": base},
                       "RunCreated")["run"]["info"]["run_id"]
            ids[name] = run
            metrics = [{"key": "loss", "value": v, "timestamp": base + 1000 * s, "step": s} for s, v in enumerate(losses)]
            metrics.append({"key": "accuracy", "value": acc, "timestamp": base + 5000, "step": 4})
            call(actor, "runs/log-batch", {"run_id": run, "metrics": metrics,
                                           "params": [{"key": "lr", "value": lr}, {"key": "batch_size", "value": bs}],
                                           "tags": [{"key": "model", "value": model}]}, "RunBatchLogged")
            if finished:
                call(actor, "runs/update", {"run_id": run, "status": "FINISHED", "end_time": base + 10_000}, "RunUpdated")
        # Run a keeps logging after it finished; bob tries to change a's learning rate.
        call("alice", "runs/log-batch", {"run_id": ids["a"], "metrics": [
            {"key": "late", "value": 1.0, "timestamp": OLD + 15_000, "step": 0},
            {"key": "late", "value": 2.0, "timestamp": OLD + 20_000, "step": 1}]}, "RunBatchLogged")
        call("bob", "runs/log-parameter", {"run_id": ids["a"], "key": "lr", "value": "0.5"}, "ParamsLogged", ok=False)
    yield server, ids, sent
    server.stop()


def ask(server: Any, query: str) -> list[dict[str, Any]]:
    r = httpx.post(f"{server.url}/api/runledger/v1/sql", json={"query": query}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    names = [c["name"] for c in body["columns"]]
    return [dict(zip(names, row)) for row in body["rows"]]


def test_the_doc_has_ten_questions() -> None:
    assert sorted(doc_queries()) == list(range(1, 11))


def test_1_best_run_per_param_value(seeded: Any) -> None:
    server, ids, _ = seeded
    rows = ask(server, doc_queries()[1])
    by_lr: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for name, lr, *_rest in RUNS:
        by_lr[lr].append((_rest[2][-1], name))
    expected = [{"lr": lr, "best_run": ids[min(v)[1]], "best_loss": min(v)[0]}
                for lr, v in sorted(by_lr.items(), key=lambda kv: float(kv[0]))]
    assert rows == expected


def test_2_quantile_bands(seeded: Any) -> None:
    server, _, _ = seeded
    rows = ask(server, doc_queries()[2])
    assert [r["step"] for r in rows] == list(range(5))
    for r in rows:
        xs = [run[4][r["step"]] for run in RUNS]
        assert r["runs"] == len(RUNS)
        for q, col in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90")):
            assert r[col] == pytest.approx(quantile_cont(xs, q))


def test_3_loss_went_up(seeded: Any) -> None:
    server, ids, _ = seeded
    rows = ask(server, doc_queries()[3])
    rising = sorted(ids[name] for name, _, _, _, losses, *_ in RUNS
                    if all(losses[i] > losses[i - 1] for i in range(len(losses) - 3, len(losses))))
    assert rising == sorted([ids["c"], ids["f"]])  # the seed's two diverging runs
    assert [r["run_id"] for r in rows] == rising


def test_4_correlation(seeded: Any) -> None:
    server, _, _ = seeded
    [row] = ask(server, doc_queries()[4])
    finished = [(float(lr), acc) for _, lr, _, _, _, acc, _, fin, _ in RUNS if fin]
    assert row["runs"] == len(finished)
    assert row["r"] == pytest.approx(statistics.correlation(*zip(*finished)))


def test_5_logged_after_finished(seeded: Any) -> None:
    server, ids, _ = seeded
    rows = ask(server, doc_queries()[5])
    assert [(r["run_id"], r["key"], r["late_points"]) for r in rows] == [(ids["a"], "late", 2)]


def test_6_who_changed_what(seeded: Any) -> None:
    server, _, sent = seeded
    rows = ask(server, doc_queries()[6])
    got = {(r["actor"], r["type"]): r["events"] for r in rows}
    assert got == dict(sent)
    runs_by_actor = {r["actor"]: r["runs"] for r in rows if r["type"] == "RunCreated"}
    assert runs_by_actor == {"alice": 3, "bob": 3}


def test_7_refused_writes(seeded: Any) -> None:
    server, ids, _ = seeded
    rows = ask(server, doc_queries()[7])
    assert len(rows) == 1
    [r] = rows
    assert (r["run_id"], r["type"], r["error_code"], r["actor"]) == (ids["a"], "ParamsLogged",
                                                                     "INVALID_PARAMETER_VALUE", "bob")
    assert "lr" in r["reason"]


def test_8_quiet_running_runs(seeded: Any) -> None:
    server, ids, _ = seeded
    rows = ask(server, doc_queries()[8])
    assert [r["run_id"] for r in rows] == [ids["e"]]


def test_9_metric_by_tag_group(seeded: Any) -> None:
    server, _, _ = seeded
    rows = ask(server, doc_queries()[9])
    groups: dict[str, list[float]] = collections.defaultdict(list)
    for _, _, _, model, _, acc, *_ in RUNS:
        groups[model].append(acc)
    expected = sorted(groups, key=lambda m: -statistics.mean(groups[m]))
    assert [r["model"] for r in rows] == expected
    for r in rows:
        assert r["runs"] == len(groups[r["model"]])
        assert r["mean_accuracy"] == pytest.approx(statistics.mean(groups[r["model"]]))
        assert r["sd"] == pytest.approx(statistics.stdev(groups[r["model"]]))


def test_10_leaderboard(seeded: Any) -> None:
    server, _, _ = seeded
    rows = ask(server, doc_queries()[10])
    top = sorted(RUNS, key=lambda run: (-run[5], run[0]))[:3]
    assert rows == [{"run_name": n, "lr": lr, "batch_size": bs, "accuracy": acc} for n, lr, bs, _, _, acc, *_ in top]


def test_run_activity_holds_each_runs_newest_point_and_key_count(seeded: Any) -> None:
    server, ids, _ = seeded
    rows = ask(server, """
        SELECT run_id, a.last_metric_time, make_timestamp(m.newest * 1000) AS newest, a.metric_keys, m.keys
        FROM run_activity a FULL JOIN (
            SELECT run_id, max(timestamp) AS newest, count(DISTINCT key) AS keys FROM metrics GROUP BY run_id
        ) m USING (run_id)""")
    assert sorted(r["run_id"] for r in rows) == sorted(ids.values())
    for r in rows:
        assert r["last_metric_time"] == r["newest"] and r["metric_keys"] == r["keys"], r
    # Run a kept logging after it finished: its newest point is the late one.
    a = next(r for r in rows if r["run_id"] == ids["a"])
    assert a["metric_keys"] == 3
