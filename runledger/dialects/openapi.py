"""Declaring a route's request and response models for /openapi.json, without changing how the
route parses its request (docs/openapi.md).

Dialect handlers read their bodies themselves (MLflow's protobuf-JSON leniency and error
messages, streamed bodies, size caps), so FastAPI's body parameters would change behaviour.
`documented(...)` instead returns the keyword arguments for `add_api_route`: the request body
and query parameters go into the operation's OpenAPI entry (the models' schemas into
components), the response and error models into `responses`. `response_model=None` keeps FastAPI
from validating or re-encoding what the handler returns: the models document, the handler answers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema


class ErrorBody(BaseModel):
    """Every error of every prefix (MLflow's shape: docs/api.md)."""

    error_code: str = Field(description="MLflow's ErrorCode name", examples=["RESOURCE_DOES_NOT_EXIST"])
    message: str = Field(description="what went wrong, for a person", examples=["Run 'abc' not found"])


class Empty(BaseModel):
    """An empty JSON object: `{}`."""


ERROR_DESCRIPTIONS = {
    400: "INVALID_PARAMETER_VALUE, BAD_REQUEST or RESOURCE_ALREADY_EXISTS: the request is wrong",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST: the experiment, run or model is not there",
    405: "METHOD_NOT_ALLOWED",
    409: "RESOURCE_CONFLICT or ABORTED",
    413: "the request body is larger than the server accepts",
    429: "REQUEST_LIMIT_EXCEEDED or RESOURCE_EXHAUSTED: too much at once; retry later",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE: Kafka did not take the write in time; retry, nothing was recorded twice",
    504: "DEADLINE_EXCEEDED: written to the log, but the read model did not apply it in time",
}
# Every route can answer these (bad input, an overloaded or unreachable Kafka).
COMMON_ERRORS = (400, 429, 500, 503)

_REQUEST_MODELS: dict[str, type[BaseModel]] = {}


def documented(*, summary: str, response: type[BaseModel] | None = None, body: type[BaseModel] | None = None,
               query: type[BaseModel] | None = None, errors: tuple[int, ...] = (),
               body_examples: dict[str, Any] | None = None, response_media_type: str = "application/json",
               response_description: str = "Success", description: str | None = None,
               tags: list[str] | None = None, validate_response: bool = False,
               raw_body: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `router.add_api_route(path, handler, methods=[...], **documented(...))`.

    `body`: the JSON request body's model; `query`: the query string's; `response`: the 200 body's
    (documented only, unless `validate_response`); `errors`: statuses beyond COMMON_ERRORS;
    `raw_body`: the media type of a non-JSON body (an upload, an Arrow stream), alone or besides `body`."""
    responses: dict[int | str, dict[str, Any]] = {}
    if response is not None:
        responses[200] = {"model": response, "description": response_description}
    else:
        responses[200] = {"description": response_description, "content": {response_media_type: {}}}
    for code in sorted({*COMMON_ERRORS, *errors}):
        responses[code] = {"model": ErrorBody, "description": ERROR_DESCRIPTIONS.get(code, "error")}
    extra: dict[str, Any] = {}
    if body is not None:
        _REQUEST_MODELS[body.__name__] = body
        content: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{body.__name__}"}}
        if body_examples:
            content["examples"] = {name: {"value": value} for name, value in body_examples.items()}
        extra["requestBody"] = {"required": True, "content": {"application/json": content}}
    if raw_body is not None:
        extra.setdefault("requestBody", {"required": True, "content": {}})
        extra["requestBody"]["content"][raw_body] = {"schema": {"type": "string", "format": "binary"}}
    if query is not None:
        extra["parameters"] = query_parameters(query)
    kwargs: dict[str, Any] = {"summary": summary, "response_model": None, "responses": responses,
                              "openapi_extra": extra or None}
    if validate_response:
        # The handler returns the model itself (or data FastAPI should check against it).
        kwargs["response_model"] = response
        responses[200].pop("model", None)
    if description is not None:
        kwargs["description"] = description
    if tags is not None:
        kwargs["tags"] = tags
    return kwargs


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A model's fields as OpenAPI query parameters (a list field is a repeated parameter)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def _document_path_parameters(spec: dict[str, Any]) -> None:
    """Handlers that read `{model_id}` from the request rather than a signature parameter would
    leave it undocumented: every `{name}` in a path is a required string parameter."""
    for path, operations in spec.get("paths", {}).items():
        names = re.findall(r"{([^}:]+)", path)
        for operation in operations.values():
            params = operation.setdefault("parameters", [])
            have = {(p.get("in"), p.get("name")) for p in params}
            for name in names:
                if ("path", name) not in have:
                    params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
            if not params:
                del operation["parameters"]


def install_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Swagger UI at `docs_url` from files the server serves itself (the pinned fastapi-offline
    package ships Swagger UI 5, MIT/Apache-2.0), so the reference works without the internet."""
    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from starlette.responses import HTMLResponse

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(f"{docs_url}/static", StaticFiles(directory=static), name="docs-static")

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{docs_url}/static/swagger-ui-bundle.js",
                                   swagger_css_url=f"{docs_url}/static/swagger-ui.css",
                                   swagger_favicon_url=f"{docs_url}/static/favicon.png")

    app.add_api_route(docs_url, docs, methods=["GET"], include_in_schema=False)


def install(app: FastAPI) -> None:
    """Build /openapi.json with the request models `documented` registered added to components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes, tags=app.openapi_tags)
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        if _REQUEST_MODELS:
            _, top = models_json_schema([(m, "validation") for m in _REQUEST_MODELS.values()],
                                        ref_template="#/components/schemas/{model}")
            for name, schema in top.get("$defs", {}).items():
                components.setdefault(name, schema)
        _document_path_parameters(spec)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
