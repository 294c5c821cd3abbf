"""Artifacts served by the server (issue 18), driven by the unmodified mlflow client.

The client runs as a separate process in a working directory of its own, and is told only the
server's URL: it cannot know or use the server's data folder. Everything it logs travels over
HTTP through MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/...`), and lands as bytes in
the server's store and as events in the log (docs/artifacts.md).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import RunledgerServer

pytestmark = pytest.mark.kafka

# The client's whole session: text, dict, binary, a directory tree, a figure, a pyfunc model;
# then it reads everything back. Its report says what it saw.
CLIENT = textwrap.dedent('''
    import hashlib, json, os, sys, tempfile
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    def sha(path):
        return hashlib.sha256(open(path, "rb").read()).hexdigest()

    class AddOne(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [x + 1 for x in model_input]

    work = os.getcwd()
    os.makedirs("tree/sub/deeper")
    open("tree/a.txt", "w").write("a")
    open("tree/sub/b.txt", "w").write("bb")
    open("tree/sub/deeper/c.bin", "wb").write(bytes(range(256)) * 4)
    open("blob.bin", "wb").write(os.urandom(300_000))
    exp = mlflow.set_experiment("artifacts-e2e")
    with mlflow.start_run() as run:
        mlflow.log_text("hello artifacts", "notes/hello.txt")
        mlflow.log_dict({"lr": 0.1, "layers": [1, 2]}, "config.json")
        mlflow.log_artifact("blob.bin", "bin")
        mlflow.log_artifacts("tree", "tree")
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [3, 1, 2])
        mlflow.log_figure(fig, "plots/curve.png")
        model = mlflow.pyfunc.log_model(name="adder", python_model=AddOne())
    client = mlflow.MlflowClient()
    listing = lambda path=None: [[f.path, f.is_dir, f.file_size] for f in client.list_artifacts(run.info.run_id, path)]
    down = tempfile.mkdtemp(dir=work)
    got = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=down)
    files = {}
    for root, _, names in os.walk(got):
        for n in names:
            full = os.path.join(root, n)
            files[os.path.relpath(full, got)] = sha(full)
    loaded = mlflow.pyfunc.load_model(model.model_uri)
    by_run = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/adder")
    report = {
        "experiment_location": exp.artifact_location, "run_id": run.info.run_id,
        "artifact_uri": run.info.artifact_uri, "model_id": model.model_id, "model_uri": model.model_uri,
        "root": listing(), "tree_sub": listing("tree/sub"),
        "originals": {"bin/blob.bin": sha("blob.bin"), "tree/sub/deeper/c.bin": sha("tree/sub/deeper/c.bin"),
                      "tree/a.txt": sha("tree/a.txt")},
        "downloaded": files,
        "hello": open(os.path.join(got, "notes/hello.txt")).read(),
        "config": json.load(open(os.path.join(got, "config.json"))),
        "png_magic": open(os.path.join(got, "plots/curve.png"), "rb").read(8).hex(),
        "predict": list(loaded.predict([1, 2])), "predict_by_run": list(by_run.predict([41])),
        "outputs": [[o.model_id, o.step] for o in client.get_run(run.info.run_id).outputs.model_outputs],
        "model_files": sorted(f.path for f in mlflow.artifacts.list_artifacts(model.model_uri)),
    }
    json.dump(report, open(sys.argv[1], "w"))
''')

BIG = textwrap.dedent('''
    import hashlib, json, os, sys, tempfile
    import mlflow
    with open("big.bin", "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    mlflow.set_experiment("artifacts-big")
    with mlflow.start_run() as run:
        mlflow.log_artifact("big.bin")
    out = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="big.bin",
                                              dst_path=tempfile.mkdtemp(dir=os.getcwd()))
    sha = lambda p: hashlib.file_digest(open(p, "rb"), "sha256").hexdigest()
    json.dump({"run_id": run.info.run_id, "sent": sha("big.bin"), "got": sha(out), "size": os.path.getsize(out)},
              open(sys.argv[1], "w"))
''')


def run_client(server: RunledgerServer, script: str, workdir: Path, **env: str) -> dict[str, Any]:
    """Run `script` with the real mlflow client in its own process and folder; its report."""
    workdir.mkdir(parents=True)
    report = workdir / "report.json"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNLEDGER_", "MLFLOW_"))}
    child_env.update(MLFLOW_TRACKING_URI=server.url, **env)
    proc = subprocess.run([sys.executable, "-c", script, str(report)], cwd=workdir, env=child_env,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    found: dict[str, Any] = json.loads(report.read_text())
    return found


@pytest.fixture(scope="module")
def logged(server: RunledgerServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_client(server, CLIENT, tmp_path_factory.mktemp("client") / "work")


@pytest.fixture(scope="module")
def api(server: RunledgerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def sql(api: httpx.Client, query: str) -> list[list[Any]]:
    resp = api.post("/api/runledger/v1/sql", json={"query": query})
    assert resp.status_code == 200, resp.text
    rows: list[list[Any]] = resp.json()["rows"]
    return rows


def store_folder(server: RunledgerServer, logged: dict[str, Any]) -> Path:
    return server.data_dir / "artifacts" / logged["artifact_uri"].removeprefix("mlflow-artifacts:/")


# ----- what the client sees

def test_new_experiments_keep_artifacts_on_the_server(logged: dict[str, Any]) -> None:
    assert logged["experiment_location"].startswith("mlflow-artifacts:/")
    assert logged["artifact_uri"] == f"{logged['experiment_location']}/{logged['run_id']}/artifacts"


def test_text_dict_and_binary_come_back_byte_for_byte(logged: dict[str, Any]) -> None:
    assert logged["hello"] == "hello artifacts"
    assert logged["config"] == {"lr": 0.1, "layers": [1, 2]}
    assert logged["downloaded"]["bin/blob.bin"] == logged["originals"]["bin/blob.bin"]


def test_a_directory_tree_lists_and_downloads_as_it_was_logged(logged: dict[str, Any]) -> None:
    assert logged["tree_sub"] == [["tree/sub/b.txt", False, 2], ["tree/sub/deeper", True, None]]
    for path in ("tree/a.txt", "tree/sub/deeper/c.bin"):
        assert logged["downloaded"][path] == logged["originals"][path]


def test_the_root_listing_shows_folders_and_files_with_sizes(logged: dict[str, Any]) -> None:
    root = {p: (is_dir, size) for p, is_dir, size in logged["root"]}
    assert root["config.json"][0] is False and root["config.json"][1] > 0
    assert {p for p, (is_dir, _) in root.items() if is_dir} >= {"bin", "notes", "plots", "tree"}


def test_a_figure_is_stored_as_a_png(logged: dict[str, Any]) -> None:
    assert logged["png_magic"] == "89504e470d0a1a0a"


def test_a_pyfunc_model_logged_from_another_process_loads_back_and_predicts(logged: dict[str, Any]) -> None:
    assert logged["predict"] == [2, 3]
    assert logged["predict_by_run"] == [42]
    assert "MLmodel" in logged["model_files"] and "python_model.pkl" in logged["model_files"]


def test_log_model_links_the_run_to_its_model_as_an_output(logged: dict[str, Any]) -> None:
    assert logged["outputs"] == [[logged["model_id"], 0]]


# ----- what the server keeps

def test_the_bytes_are_in_the_servers_store(server: RunledgerServer, logged: dict[str, Any]) -> None:
    folder = store_folder(server, logged)
    assert (folder / "notes" / "hello.txt").read_text() == "hello artifacts"
    assert hashlib.sha256((folder / "bin" / "blob.bin").read_bytes()).hexdigest() == logged["originals"]["bin/blob.bin"]


def test_each_upload_is_in_the_artifacts_view_with_size_and_digest(api: httpx.Client, logged: dict[str, Any]) -> None:
    rows = sql(api, f"SELECT path, size, sha256 FROM artifacts WHERE run_id = '{logged['run_id']}' ORDER BY path")
    by_path = {p: (size, digest) for p, size, digest in rows}
    assert by_path["bin/blob.bin"] == (300_000, logged["originals"]["bin/blob.bin"])
    assert by_path["tree/sub/deeper/c.bin"] == (1024, logged["originals"]["tree/sub/deeper/c.bin"])
    assert set(by_path) == set(logged["downloaded"])


def test_a_logged_models_files_are_in_the_view_under_the_model(api: httpx.Client, logged: dict[str, Any]) -> None:
    rows = sql(api, f"SELECT path FROM artifacts WHERE model_id = '{logged['model_id']}'")
    assert "MLmodel" in {r[0] for r in rows}


def test_uploads_are_events_in_the_runs_audit_trail(api: httpx.Client, logged: dict[str, Any]) -> None:
    trail = api.get(f"/api/runledger/v1/runs/{logged['run_id']}/events", params={"type": "ArtifactLogged"}).json()
    summaries = {e["summary"]["path"]: e["summary"] for e in trail["events"]}
    assert summaries["notes/hello.txt"]["size"] == len("hello artifacts")
    assert summaries["notes/hello.txt"]["sha256"] == hashlib.sha256(b"hello artifacts").hexdigest()
    assert all(e["api"] == "mlflow" and e["verdict"]["status"] == "applied" for e in trail["events"])


def test_bytes_never_travel_through_the_log(api: httpx.Client, logged: dict[str, Any]) -> None:
    [[longest]] = sql(api, "SELECT max(length(payload::VARCHAR)) FROM events WHERE type LIKE '%Artifact%'")
    assert longest < 2000


def test_deleting_a_folder_removes_its_files_and_is_one_event(api: httpx.Client, server: RunledgerServer,
                                                              logged: dict[str, Any], tmp_path: Path) -> None:
    run_id = logged["run_id"]
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    before = api.get(f"/api/runledger/v1/runs/{run_id}/events").json()["events"][-1]["position"]
    assert api.delete(f"/api/2.0/mlflow-artifacts/artifacts/{rel}/tree/sub").status_code == 200
    assert not (store_folder(server, logged) / "tree" / "sub").exists()
    listed = api.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": f"{rel}/tree"}).json()
    assert listed == {"files": [{"path": "a.txt", "is_dir": False, "file_size": 1}]}
    assert not sql(api, f"SELECT path FROM artifacts WHERE run_id = '{run_id}' AND path LIKE 'tree/sub/%'")
    [gone] = api.get(f"/api/runledger/v1/runs/{run_id}/events", params={"type": "ArtifactDeleted"}).json()["events"]
    assert gone["summary"]["file_count"] == 2 and gone["summary"]["path"] == "tree/sub"
    # as of just before the deletion, the files were there
    then = api.get(f"/api/runledger/v1/runs/{run_id}/artifacts", params={"as_of_position": before}).json()
    assert "tree/sub/b.txt" in {f["path"] for f in then["files"]}
    now = api.get(f"/api/runledger/v1/runs/{run_id}/artifacts").json()
    assert "tree/sub/b.txt" not in {f["path"] for f in now["files"]}


# ----- the rest of the ExperimentsService

def test_artifacts_list_of_a_run_names_paths_from_the_runs_root(api: httpx.Client, logged: dict[str, Any]) -> None:
    resp = api.get("/api/2.0/mlflow/artifacts/list", params={"run_id": logged["run_id"], "path": "notes"}).json()
    assert resp == {"root_uri": logged["artifact_uri"],
                    "files": [{"path": "notes/hello.txt", "is_dir": False, "file_size": 15}]}


def test_a_logged_models_artifacts_list_and_download(api: httpx.Client, logged: dict[str, Any]) -> None:
    base = f"/api/2.0/mlflow/logged-models/{logged['model_id']}/artifacts"
    listed = api.get(f"{base}/directories").json()
    assert "MLmodel" in {f["path"] for f in listed["files"]}
    mlmodel = api.get(f"{base}/files", params={"artifact_file_path": "MLmodel"})
    assert mlmodel.status_code == 200 and b"python_function" in mlmodel.content


def test_log_inputs_keeps_model_inputs(api: httpx.Client, logged: dict[str, Any]) -> None:
    exp = api.post("/api/2.0/mlflow/experiments/create", json={"name": f"inputs-{uuid.uuid4().hex}"}).json()
    run_id = api.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]["run_id"]
    resp = api.post("/api/2.0/mlflow/runs/log-inputs", json={"run_id": run_id, "models": [{"model_id": logged["model_id"]}]})
    assert resp.status_code == 200
    run = api.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]
    assert run["inputs"] == {"model_inputs": [{"model_id": logged["model_id"]}]}


def test_log_outputs_links_models_at_steps(api: httpx.Client, logged: dict[str, Any]) -> None:
    exp = api.post("/api/2.0/mlflow/experiments/create", json={"name": f"outputs-{uuid.uuid4().hex}"}).json()
    run_id = api.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]["run_id"]
    resp = api.post("/api/2.0/mlflow/runs/outputs", json={"run_id": run_id, "models": [{"model_id": "m-x", "step": 7}]})
    assert resp.status_code == 200
    run = api.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]
    assert run["outputs"] == {"model_outputs": [{"model_id": "m-x", "step": 7}]}


def test_log_model_appends_to_the_model_history_tag(api: httpx.Client) -> None:
    exp = api.post("/api/2.0/mlflow/experiments/create", json={"name": f"history-{uuid.uuid4().hex}"}).json()
    run_id = api.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]["run_id"]
    for path in ("m1", "m2"):
        model = {"run_id": run_id, "artifact_path": path, "utc_time_created": "2026-01-01 00:00:00.000000",
                 "flavors": {"python_function": {"loader_module": "x", "config": {"dropped": 1}}}, "signature": "s"}
        assert api.post("/api/2.0/mlflow/runs/log-model",
                        json={"run_id": run_id, "model_json": json.dumps(model)}).status_code == 200
    tags = api.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]["data"]["tags"]
    history = json.loads(next(t["value"] for t in tags if t["key"] == "mlflow.log-model.history"))
    assert [h["artifact_path"] for h in history] == ["m1", "m2"]
    assert history[0]["flavors"] == {"python_function": {"loader_module": "x"}} and "signature" not in history[0]


def test_log_model_without_mandatory_fields_is_400(api: httpx.Client, logged: dict[str, Any]) -> None:
    resp = api.post("/api/2.0/mlflow/runs/log-model",
                    json={"run_id": logged["run_id"], "model_json": json.dumps({"artifact_path": "m"})})
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_experiments_list_answers_every_experiment(api: httpx.Client, logged: dict[str, Any]) -> None:
    names = {e["name"] for e in api.get("/api/2.0/mlflow/experiments/list").json()["experiments"]}
    assert {"Default", "artifacts-e2e"} <= names


def test_a_relative_artifact_location_is_resolved_against_the_servers_folder_and_judged(api: httpx.Client) -> None:
    # As mlflow server does, a relative location becomes a file: URI under the server's working
    # directory; the server's root is mlflow-artifacts:/, so that is outside it: a clear 400.
    resp = api.post("/api/2.0/mlflow/experiments/create",
                    json={"name": f"rel-{uuid.uuid4().hex}", "artifact_location": "relative/place"})
    assert resp.status_code == 400
    assert "file:///" in resp.json()["message"] and "relative/place" in resp.json()["message"]


# ----- large files: MLflow 3.x multipart upload through the proxy

def test_a_200_mb_file_goes_up_in_parts_and_comes_back_whole(server: RunledgerServer, api: httpx.Client,
                                                             tmp_path: Path) -> None:
    # The client uses multipart from MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE (500 MB by default)
    # when the server's server-info says it serves multipart uploads.
    report = run_client(server, BIG, tmp_path / "big", MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=str(100 << 20))
    assert report["size"] == 200 << 20 and report["got"] == report["sent"]
    [[size, digest, payload]] = sql(api, f"SELECT size, sha256, payload FROM artifacts JOIN events USING (event_id) "
                                         f"WHERE artifacts.run_id = '{report['run_id']}'")
    assert (size, digest) == (200 << 20, report["sent"])
    assert json.loads(payload)["parts"] == 20   # 10 MiB parts, MLflow's default
    assert not any((server.data_dir / "artifacts" / ".runledger-staging" / "multipart").iterdir())


# ----- confinement: nothing outside a run's (or model's) folder can be read or written

def raw(server: RunledgerServer, method: str, target: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A request with the target sent exactly as given (httpx would normalise dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, target, body=body, headers={"Content-Type": "application/octet-stream", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def outside(server: RunledgerServer) -> Path:
    """A secret next to the store, and a folder the tests try to write into."""
    secret = server.data_dir / "secret.txt"
    secret.write_text("do not read")
    return secret


TRICKS = {
    "dot-dot": "../../../../secret.txt", "dot-dot deep": "x/../../../../../secret.txt",
    "encoded dot-dot": "%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt", "encoded slash": "..%2f..%2f..%2f..%2fsecret.txt",
    "double encoded": "%252e%252e/%252e%252e/%252e%252e/%252e%252e/secret.txt",
    "backslash": "..%5c..%5c..%5c..%5csecret.txt", "NUL": "x%00.txt", "two-dot leader": "%E2%80%A5/%E2%80%A5/x",
    "full-width": "%EF%BC%8E%EF%BC%8E/%EF%BC%8E%EF%BC%8E/secret.txt", "empty segment": "a//b",
}


@pytest.mark.parametrize("trick", list(TRICKS.values()), ids=list(TRICKS))
def test_reading_outside_the_run_folder_is_refused(server: RunledgerServer, logged: dict[str, Any], outside: Path,
                                                   trick: str) -> None:
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    status, body = raw(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/{trick}")
    assert status in (400, 404), body
    assert b"do not read" not in body


@pytest.mark.parametrize("trick", list(TRICKS.values()), ids=list(TRICKS))
def test_writing_outside_the_run_folder_is_refused(server: RunledgerServer, logged: dict[str, Any], outside: Path,
                                                   trick: str) -> None:
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    before = sorted(p for p in server.data_dir.rglob("*") if ".runledger-staging" not in p.parts)
    status, body = raw(server, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/{trick}", b"overwritten")
    assert status in (400, 404), body
    assert outside.read_text() == "do not read"
    after = sorted(p for p in server.data_dir.rglob("*") if ".runledger-staging" not in p.parts)
    assert [p for p in after if p not in before and "artifacts" in p.parts] == []


def test_an_absolute_path_is_refused(server: RunledgerServer, outside: Path) -> None:
    status, _ = raw(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{outside}")
    assert status == 400
    status, _ = raw(server, "PUT", "/api/2.0/mlflow-artifacts/artifacts//tmp/x", b"x")
    assert status == 400


def test_a_path_in_no_runs_folder_is_not_served(server: RunledgerServer, logged: dict[str, Any]) -> None:
    exp = logged["experiment_location"].removeprefix("mlflow-artifacts:/")
    for target in (f"{exp}/{logged['run_id']}/elsewhere.txt", f"{exp}/{uuid.uuid4().hex}/artifacts/x.txt",
                   f"{exp}/x.txt", "x.txt"):
        status, body = raw(server, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{target}", b"x")
        assert status == 404, (target, body)
        assert json.loads(body)["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_a_listing_cannot_climb_out(server: RunledgerServer, logged: dict[str, Any]) -> None:
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    for path in (f"{rel}/../..", f"{rel}/%2e%2e", "..", "/"):
        status, _ = raw(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts?path={path}")
        assert status in (400, 404), path


def test_a_symbolic_link_in_the_folder_is_never_followed(server: RunledgerServer, logged: dict[str, Any],
                                                         outside: Path, tmp_path: Path) -> None:
    folder = store_folder(server, logged)
    (folder / "link.txt").symlink_to(outside)
    (folder / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    status, body = raw(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/link.txt")
    assert status == 400 and b"do not read" not in body
    status, _ = raw(server, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/link.txt", b"overwritten")
    assert status == 400 and outside.read_text() == "do not read"
    status, _ = raw(server, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/linkdir/new.txt", b"x")
    assert status == 400 and list(tmp_path.iterdir()) == []
    listed = raw(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts?path={rel}")[1]
    assert b"link.txt" not in listed and b"linkdir" not in listed


def test_a_multipart_upload_cannot_aim_outside_either(server: RunledgerServer, logged: dict[str, Any]) -> None:
    rel = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    body = json.dumps({"path": "x.bin", "num_parts": 1}).encode()
    status, _ = raw(server, "POST", f"/api/2.0/mlflow-artifacts/mpu/create/{rel}/../../..", body,
                    {"Content-Type": "application/json"})
    assert status == 400
    # A part sent to an upload that does not exist goes nowhere.
    status, _ = raw(server, "PUT", f"/api/2.0/mlflow-artifacts/mpu/parts/{uuid.uuid4().hex}/1", b"x")
    assert status == 404
    status, _ = raw(server, "PUT", "/api/2.0/mlflow-artifacts/mpu/parts/..%2f..%2f..%2fx/1", b"x")
    assert status == 404


# ----- size limit and failed uploads

@pytest.fixture(scope="module")
def small(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunledgerServer]:
    s = RunledgerServer(kafka_bootstrap, tmp_path_factory.mktemp("small"), f"test-{uuid.uuid4().hex[:12]}",
                        RUNLEDGER_ARTIFACT_MAX_MB="1")
    s.start()
    yield s
    s.stop()


def _small_run(server: RunledgerServer) -> str:
    with httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=30) as api:
        exp = api.post("experiments/create", json={"name": f"small-{uuid.uuid4().hex}"}).json()["experiment_id"]
        run = api.post("runs/create", json={"experiment_id": exp}).json()["run"]["info"]
    return str(run["artifact_uri"]).removeprefix("mlflow-artifacts:/")


def _visible_files(server: RunledgerServer) -> list[Path]:
    root = server.data_dir / "artifacts"
    return [p for p in root.rglob("*") if p.is_file() and ".runledger-staging" not in p.parts]


def _staged_files(server: RunledgerServer) -> list[Path]:
    return [p for p in (server.data_dir / "artifacts" / ".runledger-staging").rglob("*") if p.is_file()]


def test_an_upload_over_the_size_limit_is_400_and_leaves_nothing(small: RunledgerServer) -> None:
    rel = _small_run(small)
    status, body = raw(small, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/big.bin", b"x" * (2 << 20))
    assert status == 400 and b"at most 1048576 bytes" in body
    assert _visible_files(small) == [] and _staged_files(small) == []


def test_an_upload_over_the_limit_without_a_declared_length_is_refused_too(small: RunledgerServer) -> None:
    rel = _small_run(small)
    chunks = iter([b"y" * (512 << 10)] * 4)
    with httpx.Client(timeout=30) as client:
        resp = client.put(f"{small.url}/api/2.0/mlflow-artifacts/artifacts/{rel}/chunked.bin", content=chunks)
    assert resp.status_code == 400
    assert _visible_files(small) == [] and _staged_files(small) == []


def test_an_upload_cut_off_midway_leaves_no_partial_file(small: RunledgerServer) -> None:
    rel = _small_run(small)
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=30)
    conn.putrequest("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/cut.bin")
    conn.putheader("Content-Length", str(900_000))
    conn.endheaders()
    conn.send(b"z" * 300_000)
    conn.close()  # the client goes away with two thirds unsent
    with httpx.Client(timeout=30) as client:
        for _ in range(50):  # the server notices the disconnect when it next reads
            listed = client.get(f"{small.url}/api/2.0/mlflow-artifacts/artifacts", params={"path": rel}).json()
            if not _staged_files(small):
                break
            import time
            time.sleep(0.1)
    assert listed == {} and _visible_files(small) == [] and _staged_files(small) == []


def test_an_upload_within_the_limit_is_accepted(small: RunledgerServer) -> None:
    rel = _small_run(small)
    status, _ = raw(small, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{rel}/ok.bin", b"o" * 1000)
    assert status == 200
    assert [p.name for p in _visible_files(small)] == ["ok.bin"]
