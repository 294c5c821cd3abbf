"""MLflow's artifact proxy (`mlflow server --serve-artifacts`): `/api/2.0/mlflow-artifacts/...`.

Clients anywhere log and read artifacts over HTTP: a run's `artifact_uri` is
`mlflow-artifacts:/<experiment>/<run>/artifacts`, which MLflow's client turns into requests here:

- PUT    artifacts/<path>          upload one file (streamed to a staging file, never held in memory)
- GET    artifacts/<path>          download one file (streamed)
- GET    artifacts?path=<folder>   list a folder's children
- DELETE artifacts/<path>         delete a file or a folder
- POST   mpu/create|complete|abort/<folder>   multipart uploads (MLflow 3.x, big files): the
  part URLs handed out point back here (`mpu/parts/<upload id>/<n>`), as a presigned URL would
  point at a bucket; the unguessable upload id is the capability, as a presigned URL's signature is.

Every path must lie inside a run's or logged model's folder (query.artifact_owners) and pass
runledger.artifact_store.paths. Each upload and deletion is an event of its run or model
(ArtifactLogged/ArtifactDeleted, ...) with path, size, SHA-256 and actor; the bytes go to the
artifact store only (docs/artifacts.md). The event is committed before the bytes are published,
so an upload the log refused is never visible, and a failed upload leaves nothing behind.

Also here: the ExperimentsService's artifact reads under /api/2.0/mlflow (`artifacts/list`,
`logged-models/<id>/artifacts/directories|files`) and `/api/3.0/mlflow/server-info`, which tells
MLflow 3.x clients that multipart uploads are served.
"""

from __future__ import annotations

import asyncio
import mimetypes
import ntpath
import posixpath
from typing import Any, Callable, Mapping

import anyio
import orjson
from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runledger.artifact_store import ArtifactStore, MultipartStaging, NotFound, Staged, UnsafePath, check_relative_path
from runledger.artifact_store.base import CHUNK
from runledger.auth.access import access
from runledger.auth.permissions import Permission
from runledger.dialects import services
from runledger.dialects.identity import acting_user
from runledger.dialects.request import Fields, json_body, missing, query_fields
from runledger.ingest.contract import entities
from runledger.ingest.errors import InvalidParameterValue, ResourceDoesNotExist, RunledgerError
from runledger.ingest.writer import new_event
from runledger.query import artifact_owners
from runledger.query.artifact_owners import Owner

ARTIFACTS_PREFIX = "/api/2.0/mlflow-artifacts"
_BATCH = 4 * CHUNK   # bytes of an upload handed to the writing thread at once


def _store(request: Request) -> ArtifactStore:
    found = services.services(request).artifacts
    assert found is not None, "the composition root opens the artifact store"
    return found


def _staging(request: Request) -> MultipartStaging:
    found = services.services(request).multipart
    assert found is not None, "the composition root opens the artifact store"
    return found


def _checked(raw: str, *, allow_empty: bool = False) -> str:
    try:
        return check_relative_path(raw, allow_empty=allow_empty)
    except UnsafePath as e:
        raise InvalidParameterValue(f"Invalid path {raw!r}: {e}.") from None


async def _in_store(fn: Any, *args: Any) -> Any:
    """`fn(*args)` in a worker thread; a path the store finds unsafe (a symbolic link on the way)
    is the caller's 400, as any other unsafe path."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except UnsafePath as e:
        raise InvalidParameterValue(f"Invalid path: {e}.") from None


def _locate(request: Request, raw: str, *, need: Permission, folder_ok: bool = False) -> tuple[Owner, str]:
    """The owner of the served path `raw` and the path inside its folder; refuses paths that are
    unsafe (400), in no run's or logged model's folder (404), or of an experiment the caller may
    not use at level `need` (docs/auth.md: 404 for a read, as if it did not exist; 403 for a
    write)."""
    path = _checked(raw)
    with services.reader(request).cursor() as cur:
        found = artifact_owners.owner_of(cur, path)
    caller = access(request)
    if found is None or (need is Permission.READ and caller.permission(found[0].experiment_id) < need):
        raise ResourceDoesNotExist(
            f"No run or logged model has an artifact folder holding {path!r}: served artifact paths look like "
            "<experiment_id>/<run_id>/artifacts/<file> or <experiment_id>/models/<model_id>/artifacts/<file>.")
    owner, rel = found
    caller.require(owner.experiment_id, need)
    if not rel and not folder_ok:
        raise InvalidParameterValue(f"Invalid path {raw!r}: it names the artifact folder itself, not a file in it.")
    return owner, rel


def _refused_now(need: Permission) -> Callable[[Request, Mapping[str, Any]], bool]:
    """`_locate`'s permission check alone, for the auth rule (runledger.auth.rules.Rule.refused_now):
    True when the path's owner is found and the caller lacks `need` on its experiment."""
    def refused(request: Request, params: Mapping[str, Any]) -> bool:
        raw = params.get("path")
        if raw is None:
            raw = query_fields(request).str("path") or ""
        path = _checked(str(raw).strip("/"))
        with services.reader(request).cursor() as cur:
            found = artifact_owners.owner_of(cur, path)
        return found is not None and access(request).permission(found[0].experiment_id) < need
    return refused


def _writable(request: Request, owner: Owner) -> None:
    """Fail early, with MLflow's error, where the fold would refuse the event."""
    if owner.kind == "run":
        services.writer(request).writable_run(owner.id)
    elif services.models(request).logged_model(owner.id) is None:
        raise ResourceDoesNotExist(entities.model_not_found(owner.id))


def _event(request: Request, owner: Owner, type_: str, payload: dict[str, Any]):  # type: ignore[no-untyped-def]
    user = acting_user(request)
    if owner.kind == "run":
        return new_event(type_, payload, user=user, run_id=owner.id, experiment_id=owner.experiment_id)
    return new_event(f"LoggedModel{type_}", {"model_id": owner.id, **payload}, user=user,
                     experiment_id=owner.experiment_id)


def _too_large(size: int, limit: int) -> InvalidParameterValue:
    return InvalidParameterValue(f"The artifact is {'more than ' if size > limit else ''}{size} bytes; this server "
                                 f"accepts files of at most {limit} bytes (RUNLEDGER_ARTIFACT_MAX_MB).")


async def _receive(request: Request, staged: Staged, limit: int) -> None:
    """Stream the request body into `staged`. The body's chunks (~64 KiB each from the HTTP
    server) are gathered up to _BATCH and handed to a worker thread that hashes and writes them,
    while the event loop goes on receiving the next batch (at most two batches are held)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    pending: list[bytes] = []
    held = 0
    received = 0
    writing: asyncio.Future[None] | None = None
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(received, limit)
            pending.append(chunk)
            held += len(chunk)
            if held >= _BATCH:
                if writing is not None:
                    await writing
                batch, pending, held = pending, [], 0
                writing = asyncio.ensure_future(anyio.to_thread.run_sync(staged.write_many, batch))
        if writing is not None:
            await writing
        if pending:
            await anyio.to_thread.run_sync(staged.write_many, pending)
    finally:
        if writing is not None and not writing.done():
            # the caller aborts the staged file next: the write in flight must end first
            await asyncio.wait([writing])
    await anyio.to_thread.run_sync(staged.close)


async def _publish(request: Request, owner: Owner, rel: str, staged: Staged, parts: int | None = None) -> None:
    """Log the upload, then make its bytes visible; on any failure the staged file is removed."""
    payload: dict[str, Any] = {"path": rel, "size": staged.size, "sha256": staged.sha256}
    if parts is not None:
        payload["parts"] = parts  # a multipart upload, and of how many parts
    try:
        await services.writer(request).commit(_event(request, owner, "ArtifactLogged", payload))
        await _in_store(staged.commit)
    finally:
        if not staged.done:
            await anyio.to_thread.run_sync(staged.abort)


# ----- the proxy: /api/2.0/mlflow-artifacts/artifacts

async def upload(request: Request, path: str) -> Response:
    owner, rel = _locate(request, path, need=Permission.EDIT)
    _writable(request, owner)
    staged = await _in_store(_store(request).begin, owner.key(rel))
    try:
        await _receive(request, staged, services.settings(request).artifact_max_bytes)
    except BaseException:
        await anyio.to_thread.run_sync(staged.abort)
        raise
    await _publish(request, owner, rel, staged)
    return _empty()


def _empty() -> Response:
    return Response(b"{}", media_type="application/json")


def _file_response(store: ArtifactStore, key: str, name: str) -> Response:
    try:
        size = store.size(key)
        chunks = store.read(key)
    except NotFound:
        raise ResourceDoesNotExist(f"No artifact file at {name!r}.") from None
    except UnsafePath as e:
        raise InvalidParameterValue(f"Invalid path {name!r}: {e}.") from None
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    base = posixpath.basename(name)
    # StreamingResponse pulls a plain iterator in a worker thread, 1 MiB at a time.
    return StreamingResponse(chunks, media_type=media_type, headers={
        "Content-Length": str(size), "Content-Disposition": f"attachment; filename*=UTF-8''{_quote(base)}"})


def _quote(name: str) -> str:
    import urllib.parse

    return urllib.parse.quote(name, safe="")


def download(request: Request, path: str) -> Response:
    owner, rel = _locate(request, path, need=Permission.READ)
    return _file_response(_store(request), owner.key(rel), path)


def _listing(store: ArtifactStore, key: str, prefix: str = "") -> list[dict[str, Any]]:
    try:
        entries = store.list(key)
    except UnsafePath as e:
        raise InvalidParameterValue(f"Invalid path: {e}.") from None
    out = []
    for e in entries:
        item: dict[str, Any] = {"path": f"{prefix}{e.name}", "is_dir": e.is_dir}
        if e.size is not None:
            item["file_size"] = e.size
        out.append(item)
    return out


def list_artifacts(request: Request) -> Response:
    raw = query_fields(request).str("path") or ""
    owner, rel = _locate(request, raw.strip("/"), need=Permission.READ, folder_ok=True)
    files = _listing(_store(request), owner.key(rel))
    return _json({"files": files} if files else {})


def _json(content: dict[str, Any]) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def delete(request: Request, path: str) -> Response:
    # MLflow's client deletes a whole folder as "<folder>/"
    owner, rel = _locate(request, path.rstrip("/"), need=Permission.EDIT, folder_ok=True)
    _writable(request, owner)
    store = _store(request)
    key = owner.key(rel)
    files = await _in_store(store.files, key)
    if not files:
        return _empty()
    strip = len(owner.root) + 1
    await services.writer(request).commit(_event(request, owner, "ArtifactDeleted", {
        "path": rel, "files": [[k[strip:], size] for k, size in files]}))
    await _in_store(store.delete, key)
    return _empty()


# ----- multipart uploads (MLflow 3.x client, files of MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE and up)

def _file_name(f: Fields) -> str:
    # MLflow clients before 3.18 sent their local path here; only its last component counts.
    raw = f.req_str("path")
    name = ntpath.basename(raw)
    _checked(name)
    if "/" in name:
        raise InvalidParameterValue(f"Invalid path {raw!r}.")
    return name


def _multipart_target(request: Request, folder: str, f: Fields) -> tuple[Owner, str]:
    # The folder's owner and the caller's right to write there first, then the request's fields.
    if folder.strip("/"):
        _locate(request, folder.strip("/"), need=Permission.EDIT, folder_ok=True)
    name = _file_name(f)
    return _locate(request, f"{folder.strip('/')}/{name}" if folder.strip("/") else name, need=Permission.EDIT)


async def create_multipart(request: Request, path: str) -> Response:
    f = Fields(await json_body(request))
    owner, rel = _multipart_target(request, path, f)
    _writable(request, owner)
    parts = f.int64("num_parts", default=1) or 1
    if not 1 <= parts <= 10_000:
        raise InvalidParameterValue(f"num_parts must be between 1 and 10000, got {parts}.")
    upload_id = await anyio.to_thread.run_sync(_staging(request).new_upload, owner.key(rel))
    base = str(request.base_url).rstrip("/")
    return _json({"upload_id": upload_id, "credentials": [
        {"url": f"{base}{ARTIFACTS_PREFIX}/mpu/parts/{upload_id}/{n}", "part_number": n, "headers": {}}
        for n in range(1, parts + 1)]})


async def upload_part(request: Request, upload_id: str, part_number: int) -> Response:
    staging = _staging(request)
    if not 1 <= part_number <= 10_000:
        raise InvalidParameterValue(f"Part numbers run from 1 to 10000, got {part_number}.")
    try:
        staged = await anyio.to_thread.run_sync(staging.part, upload_id, part_number)
    except NotFound:
        raise ResourceDoesNotExist(f"No multipart upload {upload_id!r} is in progress.") from None
    try:
        await _receive(request, staged, services.settings(request).artifact_max_bytes)
        await anyio.to_thread.run_sync(staged.commit)
    finally:
        if not staged.done:
            await anyio.to_thread.run_sync(staged.abort)
    return Response(b"", headers={"ETag": f'"{staged.sha256}"'})


def _upload_of(request: Request, f: Fields, key: str) -> str:
    upload_id = f.str("upload_id") or ""
    if _staging(request).target(upload_id) != key:
        raise ResourceDoesNotExist(f"No multipart upload {upload_id!r} to this path is in progress.")
    return upload_id


async def complete_multipart(request: Request, path: str) -> Response:
    f = Fields(await json_body(request))
    owner, rel = _multipart_target(request, path, f)
    _writable(request, owner)
    if not f.has("parts"):
        raise missing("parts")
    key = owner.key(rel)
    upload_id = await anyio.to_thread.run_sync(_upload_of, request, f, key)
    numbers = sorted(p.int64("part_number", required=True) or 0 for p in f.objects("parts"))
    staging = _staging(request)
    have = await anyio.to_thread.run_sync(staging.parts, upload_id)
    total = sum(p.stat().st_size for n, p in have.items() if n in numbers)
    limit = services.settings(request).artifact_max_bytes
    if total > limit:
        raise _too_large(total, limit)
    staged = await _in_store(_store(request).begin, key)
    try:
        await anyio.to_thread.run_sync(staging.assemble, upload_id, numbers, staged)
        await anyio.to_thread.run_sync(staged.close)
    except NotFound as e:
        await anyio.to_thread.run_sync(staged.abort)
        raise InvalidParameterValue(f"Cannot complete the upload: {e}.") from None
    except BaseException:
        await anyio.to_thread.run_sync(staged.abort)
        raise
    await _publish(request, owner, rel, staged, parts=len(numbers))
    await anyio.to_thread.run_sync(staging.discard, upload_id)
    return _empty()


async def abort_multipart(request: Request, path: str) -> Response:
    f = Fields(await json_body(request))
    owner, rel = _multipart_target(request, path, f)
    upload_id = await anyio.to_thread.run_sync(_upload_of, request, f, owner.key(rel))
    await anyio.to_thread.run_sync(_staging(request).discard, upload_id)
    return _empty()


# ----- OpenAPI (runledger.dialects.openapi): what each route takes and answers

class _Empty(BaseModel):
    pass


class _ListQuery(BaseModel):
    path: str | None = Field(None, description="folder from the artifact root, e.g. 1/<run_id>/artifacts/plots")


class _MpuCreate(BaseModel):
    path: str = Field(description="the file's name (older clients send their local path; its last part counts)",
                      examples=["weights.bin"])
    num_parts: int = Field(1, description="how many parts the file is sent in (1..10000)")


class _Part(BaseModel):
    part_number: int
    etag: str | None = None
    url: str | None = None


class _MpuComplete(BaseModel):
    path: str = Field(examples=["weights.bin"])
    upload_id: str = Field(examples=["0f3c2a9e5b7d4c1a8e6f0b2d4a6c8e0f"])
    parts: list[_Part]


class _MpuAbort(BaseModel):
    path: str = Field(examples=["weights.bin"])
    upload_id: str = Field(examples=["0f3c2a9e5b7d4c1a8e6f0b2d4a6c8e0f"])


class _RunListQuery(BaseModel):
    run_id: str = Field(description="the run (run_uuid also accepted)")
    path: str | None = Field(None, description="folder inside the run's artifact root")


class _ModelDirQuery(BaseModel):
    artifact_directory_path: str | None = Field(None, description="folder inside the model's artifact root")


class _ModelFileQuery(BaseModel):
    artifact_file_path: str = Field(description="file inside the model's artifact root")


class _LogModel(BaseModel):
    run_id: str = Field(examples=["5f0a6f0e2c1b4f7f9d3e8a1b2c3d4e5f"])
    model_json: str = Field(description="the model's MLmodel as JSON (artifact_path, flavors, utc_time_created, run_id)")


class _Output(BaseModel):
    model_id: str
    step: int


class _LogOutputs(BaseModel):
    run_id: str = Field(examples=["5f0a6f0e2c1b4f7f9d3e8a1b2c3d4e5f"])
    models: list[_Output]


class _ListExperimentsQuery(BaseModel):
    view_type: str | None = Field(None, description="ACTIVE_ONLY (default), DELETED_ONLY or ALL")


def _doc(summary: str, **kw: Any) -> dict[str, Any]:
    from runledger.dialects.openapi import documented

    return documented(summary=summary, errors=(404,), tags=kw.pop("tags", ["mlflow artifacts"]), **kw)


def build_proxy_router() -> APIRouter:
    """Mounted at ARTIFACTS_PREFIX."""
    router = APIRouter()
    router.add_api_route("/artifacts", list_artifacts, methods=["GET"],
                         **_doc("List a folder's children", query=_ListQuery))
    router.add_api_route("/artifacts/{path:path}", upload, methods=["PUT"],
                         **_doc("Upload one file (streamed; an ArtifactLogged event)", raw_body="application/octet-stream"))
    router.add_api_route("/artifacts/{path:path}", download, methods=["GET"],
                         **_doc("Download one file", response_media_type="application/octet-stream"))
    router.add_api_route("/artifacts/{path:path}", delete, methods=["DELETE"],
                         **_doc("Delete a file or a folder (an ArtifactDeleted event)"))
    router.add_api_route("/mpu/create/{path:path}", create_multipart, methods=["POST"],
                         **_doc("Start a multipart upload into the folder", body=_MpuCreate))
    router.add_api_route("/mpu/complete/{path:path}", complete_multipart, methods=["POST"],
                         **_doc("Assemble and publish a multipart upload", body=_MpuComplete))
    router.add_api_route("/mpu/abort/{path:path}", abort_multipart, methods=["POST"],
                         **_doc("Drop a multipart upload's parts", body=_MpuAbort))
    router.add_api_route("/mpu/parts/{upload_id}/{part_number}", upload_part, methods=["PUT"],
                         **_doc("One part of a multipart upload (the URL mpu/create handed out)",
                                raw_body="application/octet-stream"))
    return router


# ----- the ExperimentsService's artifact reads (under /api/2.0/mlflow and /ajax-api/2.0/mlflow)

def _served_owner(owner: Owner | None, what: str) -> Owner:
    if owner is None:
        raise ResourceDoesNotExist(f"{what} not found, or its artifacts are not served by this server "
                                   "(its artifact location is not an mlflow-artifacts: URI).")
    return owner


def _relative(raw: str | None) -> str:
    return _checked((raw or "").strip("/"), allow_empty=True)


def run_artifacts_list(request: Request) -> Response:
    """GET artifacts/list?run_id=&path=: the run's folder `path`, paths relative to the run's root."""
    f = query_fields(request)
    run_id = f.run_id()
    rel = _relative(f.str("path"))
    with services.reader(request).cursor() as cur:
        owner = artifact_owners.run_owner(cur, run_id)
    owner = _served_owner(owner, f"Run with id={run_id}")
    files = _listing(_store(request), owner.key(rel), f"{rel}/" if rel else "")
    return _json({"root_uri": owner.artifact_uri, **({"files": files} if files else {})})


def _model(request: Request, model_id: str) -> Owner:
    with services.reader(request).cursor() as cur:
        owner = artifact_owners.model_owner(cur, model_id)
    return _served_owner(owner, f"Logged model with ID '{model_id}'")


def model_artifacts_list(request: Request, model_id: str) -> Response:
    """GET logged-models/<id>/artifacts/directories?artifact_directory_path="""
    rel = _relative(query_fields(request).str("artifact_directory_path"))
    owner = _model(request, model_id)
    files = _listing(_store(request), owner.key(rel), f"{rel}/" if rel else "")
    return _json({"root_uri": owner.artifact_uri, **({"files": files} if files else {})})


def model_artifact_file(request: Request, model_id: str) -> Response:
    """GET logged-models/<id>/artifacts/files?artifact_file_path="""
    raw = query_fields(request).str("artifact_file_path")
    if not raw:
        raise RunledgerError('Request must include the "artifact_file_path" query parameter.', "BAD_REQUEST")
    rel = _checked(raw)
    owner = _model(request, model_id)
    return _file_response(_store(request), owner.key(rel), rel)


def build_router() -> APIRouter:
    """Mounted under the MLflow prefixes."""
    router = APIRouter()
    router.add_api_route("/artifacts/list", run_artifacts_list, methods=["GET"],
                         **_doc("A run's artifact folder", query=_RunListQuery, tags=["mlflow"]))
    router.add_api_route("/logged-models/{model_id}/artifacts/directories", model_artifacts_list, methods=["GET"],
                         **_doc("A logged model's artifact folder", query=_ModelDirQuery, tags=["mlflow"]))
    router.add_api_route("/logged-models/{model_id}/artifacts/files", model_artifact_file, methods=["GET"],
                         **_doc("One file of a logged model", query=_ModelFileQuery, tags=["mlflow"],
                                response_media_type="application/octet-stream"))
    return router


def server_info(request: Request) -> dict[str, Any]:
    """What MLflow 3.x clients ask before large transfers (GET /api/3.0/mlflow/server-info)."""
    return {"store_type": "RunledgerStore", "artifact_serving_enabled": True, "multipart_uploads_enabled": True,
            "multipart_downloads_enabled": False, "artifacts_presigned_only": False, "workspaces_enabled": False}


def build_info_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/server-info", server_info, methods=["GET"],
                         **_doc("What this server offers MLflow 3.x clients (multipart uploads)", tags=["mlflow"]))
    return router


# ----- access rules (runledger.auth.rules; docs/auth.md)

def access_rules() -> dict[str, dict[str, Any]]:
    """URL prefix -> {"METHOD path": Rule} for the routes of this module."""
    from runledger.auth import rules
    from runledger.auth.rules import EDIT, MODEL, PUBLIC_RULE, READ, RUN, Rule

    run_query, model = rules.query("run_id", RUN, alias="run_uuid"), rules.path("model_id", MODEL)
    tracking = {
        "POST /runs/log-model": Rule(EDIT, rules.body("run_id", RUN, alias="run_uuid")),
        "POST /runs/outputs": Rule(EDIT, rules.body("run_id", RUN, alias="run_uuid")),
        "GET /experiments/list": Rule(READ, rules.SEARCH_FILTER_QUERY, filters=True),
        "GET /artifacts/list": Rule(READ, run_query),
        "GET /logged-models/{model_id}/artifacts/directories": Rule(READ, model),
        "GET /logged-models/{model_id}/artifacts/files": Rule(READ, model),
    }
    # The proxy's paths name a run's (or model's) folder inside the path: the handler finds its
    # owner and checks the caller's permission on that experiment itself (`_locate`). Part
    # uploads carry no credentials (MLflow's client sends them as to a presigned URL): the
    # upload id, handed out only to a caller with EDIT, is the key.
    reads = Rule(READ, rules.in_handler("path", RUN), refused_now=_refused_now(Permission.READ))
    writes = Rule(EDIT, rules.in_handler("path", RUN), refused_now=_refused_now(Permission.EDIT))
    proxy = {
        "GET /artifacts": reads, "GET /artifacts/{path:path}": reads,
        "PUT /artifacts/{path:path}": writes, "DELETE /artifacts/{path:path}": writes,
        "POST /mpu/create/{path:path}": writes, "POST /mpu/complete/{path:path}": writes,
        "POST /mpu/abort/{path:path}": writes, "PUT /mpu/parts/{upload_id}/{part_number}": PUBLIC_RULE,
    }
    return {"/api/2.0/mlflow": tracking, "/ajax-api/2.0/mlflow": tracking, ARTIFACTS_PREFIX: proxy,
            "/api/3.0/mlflow": {"GET /server-info": PUBLIC_RULE}}
