"""The S3-compatible artifact store (RUNLEDGER_ARTIFACT_STORE=s3://bucket/prefix), against a
real S3 HTTP server: moto's standalone server (`moto.server`, from PyPI), started as its own
process. The mlflow client in another process logs, lists, downloads and deletes through the
server's proxy; the objects are checked in the bucket with boto3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from runledger.kafka_local import free_port
from tests.conftest import RunledgerServer
from tests.test_artifacts import run_client

pytestmark = pytest.mark.kafka

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "runledger-test", "AWS_SECRET_ACCESS_KEY": "runledger-test",
               "AWS_DEFAULT_REGION": "us-east-1"}

CLIENT = """
import json, os, sys, tempfile
import mlflow
open("data.bin", "wb").write(bytes(range(256)) * 1000)
mlflow.set_experiment("s3-artifacts")
with mlflow.start_run() as run:
    mlflow.log_text("in a bucket", "notes/hello.txt")
    mlflow.log_artifact("data.bin", "bin")
got = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=tempfile.mkdtemp(dir=os.getcwd()))
json.dump({"run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri,
           "hello": open(os.path.join(got, "notes/hello.txt")).read(),
           "data_ok": open(os.path.join(got, "bin/data.bin"), "rb").read() == bytes(range(256)) * 1000,
           "listed": [[f.path, f.is_dir, f.file_size] for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)]},
          open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "moto server exited"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> Any:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **{k.lower(): v for k, v in CREDENTIALS.items()
                                                          if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    s3.create_bucket(Bucket="runledger-artifacts")
    return s3


@pytest.fixture(scope="module")
def s3_server(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str,
              bucket: Any) -> Iterator[RunledgerServer]:
    s = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("s3data"), f"test-{uuid.uuid4().hex[:12]}",
                        RUNLEDGER_ARTIFACT_STORE="s3://runledger-artifacts/team", RUNLEDGER_S3_ENDPOINT_URL=s3_endpoint,
                        **CREDENTIALS)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def logged(s3_server: RunledgerServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_client(s3_server, CLIENT, tmp_path_factory.mktemp("s3client") / "work")


def keys(bucket: Any) -> dict[str, int]:
    found = bucket.list_objects_v2(Bucket="runledger-artifacts").get("Contents", [])
    return {o["Key"]: o["Size"] for o in found}


def test_the_client_round_trips_artifacts_through_a_bucket(logged: dict[str, Any]) -> None:
    assert logged["hello"] == "in a bucket" and logged["data_ok"]
    assert logged["listed"] == [["bin", True, None], ["notes", True, None]]


def test_the_bytes_are_objects_under_the_prefix_and_not_on_the_servers_disk(
        logged: dict[str, Any], bucket: Any, s3_server: RunledgerServer) -> None:
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    assert keys(bucket)[f"team/{rel}/bin/data.bin"] == 256_000
    assert keys(bucket)[f"team/{rel}/notes/hello.txt"] == len("in a bucket")
    assert not (s3_server.data_dir / "artifacts").exists()
    staged = [p for p in (s3_server.data_dir / "artifact-uploads").rglob("*") if p.is_file()]
    assert staged == []


def test_deleting_through_the_proxy_removes_the_objects(logged: dict[str, Any], bucket: Any,
                                                        s3_server: RunledgerServer) -> None:
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    resp = httpx.delete(f"{s3_server.url}/api/2.0/mlflow-artifacts/artifacts/{rel}/notes")
    assert resp.status_code == 200
    assert not any(k.startswith(f"team/{rel}/notes/") for k in keys(bucket))
    assert f"team/{rel}/bin/data.bin" in keys(bucket)


def test_uploads_to_the_bucket_are_events_like_any_other(logged: dict[str, Any], s3_server: RunledgerServer) -> None:
    resp = httpx.post(f"{s3_server.url}/api/runledger/v1/sql",
                      json={"query": f"SELECT path, size FROM artifacts WHERE run_id = '{logged['run_id']}'"})
    assert ["bin/data.bin", 256_000] in resp.json()["rows"]
