"""The public SQL schema: docs/sql.md lists exactly the views' columns and types, and the views
resolve cross-partition effects at query time (a run of a deleted experiment reads as deleted)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from runledger.projector.store import Store
from runledger.query.sql.views import PUBLIC_VIEWS, SCHEMA, install
from tests.conftest import RunledgerServer

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql.md"


def documented() -> dict[str, list[tuple[str, str]]]:
    """View -> [(column, type)] from the `### <view>` tables of docs/sql.md."""
    text = DOC.read_text()
    schema = text[text.index("## The schema"):text.index("## Ten questions")]
    out: dict[str, list[tuple[str, str]]] = {}
    for name, body in re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", schema, re.S | re.M):
        out[name] = [(c, t) for c, t in re.findall(r"^\| (\w+) \| ([A-Z]+) \|", body, re.M)]
    return out


def test_docs_list_every_view_with_its_columns_and_types(tmp_path: Path) -> None:
    store = Store(tmp_path / "runledger.duckdb")
    try:
        install(store.con, "latest_metrics")
        actual = {view: [(r[0], r[1]) for r in store.con.execute(f"DESCRIBE {SCHEMA}.{view}").fetchall()]
                  for view in sorted(PUBLIC_VIEWS)}
    finally:
        store.close()
    assert documented() == actual


@pytest.mark.kafka
def test_run_of_a_deleted_experiment_reads_as_deleted(server: RunledgerServer) -> None:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": f"views-{uuid.uuid4().hex}"}).json()["experiment_id"]
        run = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]

        def stage() -> list[list[str]]:
            r = httpx.post(f"{server.url}/api/runledger/v1/sql", timeout=30, json={
                "query": f"SELECT lifecycle_stage, experiment_name FROM runs WHERE run_id = '{run}'"})
            return [row[0] for row in r.json()["rows"]]

        assert stage() == ["active"]
        assert api.post("experiments/delete", json={"experiment_id": exp}).status_code == 200
        assert stage() == ["deleted"]
        assert api.post("experiments/restore", json={"experiment_id": exp}).status_code == 200
        assert stage() == ["active"]
