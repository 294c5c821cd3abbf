"""Whose artifact folder a served path is in.

Artifacts served by this server (`mlflow-artifacts:` URIs) are addressed by a path from the
artifact root, e.g. `1/<run_id>/artifacts/model/MLmodel`; MLflow's client builds it from the
run's (or logged model's) `artifact_uri`. Every served path must lie in exactly such a folder:
that is how an upload becomes an event of its run (docs/artifacts.md), and it is the
confinement rule: nothing outside a run's or model's folder can be read or written.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import duckdb

SERVED_SCHEME = "mlflow-artifacts"
HTTP_ROUTE = "/api/2.0/mlflow-artifacts/artifacts"


@dataclass(frozen=True, slots=True)
class Owner:
    kind: str              # "run" | "model"
    id: str
    experiment_id: str
    lifecycle_stage: str   # a run of a deleted experiment reads as deleted
    artifact_uri: str
    root: str              # the folder's path from the artifact root

    def key(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root


def served_path(uri: str | None) -> str | None:
    """The path from the artifact root of a URI this server serves, or None if it serves not it
    (a file:, s3:, ... location clients write to themselves)."""
    if not uri:
        return None
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == SERVED_SCHEME:
        return parsed.path.strip("/")
    if parsed.scheme in ("http", "https") and HTTP_ROUTE in parsed.path:
        return parsed.path.split(HTTP_ROUTE, 1)[1].strip("/")
    return None


def _run(cur: duckdb.DuckDBPyConnection, run_id: str) -> Owner | None:
    row = cur.execute(
        "SELECT r.experiment_id, CASE WHEN r.lifecycle_stage = 'deleted' OR e.lifecycle_stage = 'deleted' "
        "THEN 'deleted' ELSE 'active' END, r.artifact_uri FROM runs r JOIN experiments e USING (experiment_id) "
        "WHERE r.run_id = ?", [run_id]).fetchone()
    if row is None or (root := served_path(row[2])) is None:
        return None
    return Owner("run", run_id, row[0], row[1], row[2], root)


def _model(cur: duckdb.DuckDBPyConnection, model_id: str) -> Owner | None:
    row = cur.execute("SELECT experiment_id, lifecycle_stage, artifact_uri FROM logged_models WHERE model_id = ?",
                      [model_id]).fetchone()
    if row is None or (root := served_path(row[2])) is None:
        return None
    return Owner("model", model_id, row[0], row[1], row[2], root)


def run_owner(cur: duckdb.DuckDBPyConnection, run_id: str) -> Owner | None:
    return _run(cur, run_id)


def model_owner(cur: duckdb.DuckDBPyConnection, model_id: str) -> Owner | None:
    return _model(cur, model_id)


def owner_of(cur: duckdb.DuckDBPyConnection, path: str) -> tuple[Owner, str] | None:
    """(owner, path inside its folder) for a checked path from the artifact root, or None when
    the path is in no run's or logged model's folder. A folder is `<...>/<run_id>/artifacts` or
    `<...>/models/<model_id>/artifacts`, and must be exactly the one its owner's URI names."""
    segments = path.split("/")
    for i in range(len(segments) - 1):
        if segments[i + 1] != "artifacts":
            continue
        root = "/".join(segments[:i + 2])
        candidates = [_run(cur, segments[i])]
        if i >= 1 and segments[i - 1] == "models":
            candidates.append(_model(cur, segments[i]))
        for owner in candidates:
            if owner is not None and owner.root == root:
                return owner, "/".join(segments[i + 2:])
    return None
