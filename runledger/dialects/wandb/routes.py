"""POST /graphql: W&B's public API (`wandb.Api`) over the read model, with graphql-core.

Documents are parsed and validated once and kept (the client sends the same few texts over
and over: one per history page during a scan). Reads run in a worker thread with one DuckDB
cursor for the whole document; mutations run on the event loop, since they wait for the
Writer's verdicts. Errors are GraphQL errors in a 200 answer, as W&B's server sends them;
only a missing or malformed API key is an HTTP error (401)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import orjson
from fastapi import APIRouter
from graphql import (DocumentNode, ExecutionResult, GraphQLError, OperationDefinitionNode, OperationType,
                     execute, parse, validate)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from runledger.auth.access import Access, access
from runledger.auth.authenticator import Principal
from runledger.auth.permissions import Permission
from runledger.dialects import services
from runledger.dialects.errors import request_id
from runledger.dialects.openapi import documented
from runledger.dialects.request import json_body
from runledger.dialects.wandb import auth, exports, resolvers, schema as wandb_schema
from runledger.dialects.wandb import schemas as S
from runledger.ingest.errors import InternalError, ResourceDoesNotExist, RunledgerError

log = logging.getLogger(__name__)

SCHEMA = resolvers.attach(wandb_schema.build())
_DOCUMENTS_MAX = 256
_documents: OrderedDict[str, DocumentNode | list[GraphQLError]] = OrderedDict()
_documents_lock = threading.Lock()


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def document(text: str) -> DocumentNode | list[GraphQLError]:
    """The parsed and validated document, or its errors; both are remembered per text."""
    with _documents_lock:
        found = _documents.get(text)
        if found is not None:
            _documents.move_to_end(text)
            return found
    try:
        parsed: DocumentNode | list[GraphQLError] = parse(text)
    except GraphQLError as e:
        parsed = [e]
    if isinstance(parsed, DocumentNode):
        errors = validate(SCHEMA, parsed)
        if errors:
            parsed = errors
    with _documents_lock:
        _documents[text] = parsed
        while len(_documents) > _DOCUMENTS_MAX:
            _documents.popitem(last=False)
    return parsed


def _operation(doc: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if name:
        return next((o for o in ops if o.name and o.name.value == name), None)
    return ops[0] if len(ops) == 1 else None


def _errors(result: ExecutionResult, request: Request) -> list[dict[str, Any]]:
    """GraphQL errors for the answer: our own errors keep their message; anything unexpected is
    logged and answered with the request id only."""
    out = []
    for error in result.errors or []:
        original = error.original_error
        entry = error.formatted
        if original is not None and not isinstance(original, (RunledgerError, GraphQLError)):
            rid = request_id(request)
            log.error("W&B GraphQL resolver failed (request id %s)", rid, exc_info=original)
            entry = {**entry, "message": f"Internal error; request id {rid}."}
        elif isinstance(original, InternalError):
            rid = request_id(request)
            log.error("W&B GraphQL resolver failed (request id %s)", rid, exc_info=original.__cause__ or original)
            entry = {**entry, "message": f"Internal error; request id {rid}."}
        elif isinstance(original, RunledgerError):
            entry = {**entry, "extensions": {"code": original.error_code}}
        out.append(entry)
    return out


async def graphql_endpoint(request: Request) -> Response:
    svc = services.services(request)
    try:
        rights = access(request)
    except RunledgerError as e:
        return _json({"errors": [{"message": e.message}]}, 403)
    if rights.principal is None:
        # Authentication off: no gate looked at the key, so at least its form is checked (W&B's
        # client never sends a request without one). With it on, the gate verified it.
        try:
            auth.api_key(request)
        except auth.BadCredentials as e:
            return _json({"errors": [{"message": str(e)}]}, 401)
    try:
        body = await json_body(request)
    except RunledgerError as e:
        return _json({"errors": [{"message": e.message}]}, 400)
    query, variables = body.get("query"), body.get("variables") or {}
    # W&B's client sends "operationName": "" for "no name" (graphql-core would look for "").
    name = body.get("operationName") or None
    if not isinstance(query, str) or not isinstance(variables, dict) or not isinstance(name, (str, type(None))):
        return _json({"errors": [{"message": "A GraphQL request is {query: string, variables?: object, "
                                             "operationName?: string}"}]}, 400)
    doc = document(query)
    if isinstance(doc, list):
        return _json({"errors": [e.formatted for e in doc]})
    op = _operation(doc, name)
    if op is None:
        message = f"Unknown operation named '{name}'." if name else "Name the operation to run (operationName)."
        return _json({"errors": [{"message": message}]})
    ctx = resolvers.Context(reader=svc.reader, entity=svc.settings.wandb_entity,
                            user=rights.username or auth.claimed_user(request), writer=svc.writer, access=rights,
                            exports=history_exports(request), base_url=str(request.base_url))
    if op.operation == OperationType.MUTATION:
        outcome = execute(SCHEMA, doc, context_value=ctx, variable_values=variables, operation_name=name)
        result: ExecutionResult = await outcome if not isinstance(outcome, ExecutionResult) else outcome
    else:
        result = await run_in_threadpool(_read, ctx, doc, variables, name)
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = _errors(result, request)
    return _json(answer)


def _read(ctx: resolvers.Context, doc: DocumentNode, variables: dict[str, Any], name: str | None) -> ExecutionResult:
    with ctx.reader.cursor() as cur:
        ctx.cur = cur
        outcome = execute(SCHEMA, doc, context_value=ctx, variable_values=variables, operation_name=name)
    assert isinstance(outcome, ExecutionResult), "read resolvers are synchronous"
    return outcome


_exports_lock = threading.Lock()


def history_exports(conn: Request) -> exports.Exports:
    """The app's history exports (one folder under the data folder), made on first use."""
    state = conn.app.state
    found: exports.Exports | None = getattr(state, "wandb_exports", None)
    if found is None:
        with _exports_lock:
            found = getattr(state, "wandb_exports", None)
            if found is None:
                settings = services.services(conn).settings
                key = settings.wandb_url_key.encode() if settings.wandb_url_key else None
                found = state.wandb_exports = exports.Exports(settings.data_dir / "wandb-exports", key)
    return found


def _not_found() -> ResourceDoesNotExist:
    # One answer for a bad signature, an expired URL, a superseded export and a user who may no
    # longer read the run: a presigned URL either works or names nothing. Rendered by the default
    # error mapping (ErrorBody), as every route outside /graphql.
    return ResourceDoesNotExist("No such history export (the URL is invalid, has expired or was superseded): "
                                "scan the run again.")


def _readable_by(request: Request, user: str, experiment_id: str) -> bool:
    """Whether the user a URL was issued to may read the experiment now (a revoked grant or a
    deleted user revokes the URLs already handed out)."""
    if not services.services(request).settings.auth:
        return True
    service = getattr(request.app.state, "auth", None)
    found = service.state.users.get(user) if service is not None and user else None
    if found is None:
        return False
    rights = Access(Principal(found.username, found.is_admin, "token"), service.authenticator.state, service.default)
    return rights.permission(experiment_id) >= Permission.READ


def _export_file(request: Request, signed: exports.Signed, part: int) -> Any:
    store = history_exports(request)
    with services.reader(request).cursor() as cur:
        row = cur.execute("SELECT experiment_id, start_time, lifecycle_stage FROM runs WHERE run_id = ?",
                          [signed.run_id]).fetchone()
        if row is None or row[2] != "active" or not _readable_by(request, signed.user, row[0]):
            return None
        files = store.kept(signed.run_id, signed.version)
        if files is None:
            if store.version(cur, signed.run_id, row[1]) != signed.version:
                return None     # the history changed since the URL was issued, and that file is gone
            files = store.path(cur, signed.run_id, row[1], signed.version)
        return files[part] if files is not None and 0 <= part < len(files) else None


async def history_export(request: Request, run_id: str, version: str, part: int) -> Response:
    """A run's history export, for W&B's Go helper (the URL from `parquetHistory`)."""
    q = request.query_params
    signed = history_exports(request).verify(run_id, version, q.get("user", ""), q.get("expires", ""),
                                             q.get("sig", ""))
    if signed is None:
        raise _not_found()
    path = await run_in_threadpool(_export_file, request, signed, part)
    if path is None:
        raise _not_found()
    # FileResponse answers HEAD and Range requests: the helper's Parquet reader, given a URL
    # (a scan with keys), reads the footer and the row groups it needs by range.
    return FileResponse(path, media_type="application/vnd.apache.parquet")


def build_router() -> APIRouter:
    router = APIRouter()
    # The operations' contract is the GraphQL schema (schema.py, docs/wandb.md); /openapi.json
    # documents the envelope. The handler answers a malformed request, a bad key or a refused one
    # in GraphQL's own shape; anything else (an overload, an unexpected failure) comes from the
    # default error mapping, in ErrorBody's.
    kwargs = documented(summary="W&B's public API (wandb.Api): run a GraphQL query or mutation",
                        body=S.WandbGraphqlBody, response=S.WandbGraphqlAnswer, errors=(401, 403), tags=["wandb"])
    for code in (400, 401, 403):
        kwargs["responses"][code]["model"] = S.WandbGraphqlAnswer
    router.add_api_route("/graphql", graphql_endpoint, methods=["POST"], **kwargs)
    # No credentials: the URL's signature is checked by the handler (auth_rules.py, exports.py).
    router.add_api_route(exports.ROUTE, history_export, methods=["GET"], **documented(
        summary="A finished run's history as Parquet, at the signed URL parquetHistory gives W&B's client "
                "(docs/wandb.md)", errors=(404,), tags=["wandb"], response_media_type="application/vnd.apache.parquet",
        response_description="The Parquet file (HEAD and Range requests answered)"))
    return router
