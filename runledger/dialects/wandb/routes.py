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
from starlette.responses import Response

from runledger.auth.access import access
from runledger.dialects import services
from runledger.dialects.errors import request_id
from runledger.dialects.request import json_body
from runledger.dialects.wandb import auth, resolvers, schema as wandb_schema
from runledger.ingest.errors import InternalError, RunledgerError

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
                            user=rights.username or auth.claimed_user(request), writer=svc.writer, access=rights)
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


def build_router() -> APIRouter:
    router = APIRouter()
    # Not in /openapi.json: a GraphQL endpoint's contract is its GraphQL schema (schema.py,
    # docs/wandb.md), and its errors are GraphQL errors, not the REST error shape.
    router.add_api_route("/graphql", graphql_endpoint, methods=["POST"], include_in_schema=False)
    return router
