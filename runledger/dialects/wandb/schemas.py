"""Models of W&B's POST /graphql for /openapi.json (docs/openapi.md, docs/wandb.md). The operations
themselves are described by the GraphQL schema (schema.py); these models document the envelope:
the request {query, variables, operationName} and the answer {data, errors}. The handler still
reads its own request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WandbGraphqlBody(BaseModel):
    query: str = Field(description="a GraphQL document over W&B's public API schema",
                       examples=["query Viewer { viewer { id username entity } }"])
    variables: dict[str, Any] | None = Field(None, description="the document's variables", examples=[{}])
    operationName: str | None = Field(None, description="which operation of the document to run "
                                      "(empty or absent: its only one)", examples=["Viewer"])


class WandbGraphqlError(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str = Field(description="what went wrong, for a person", examples=["Unknown operation named 'X'."])
    locations: list[dict[str, Any]] | None = None
    path: list[str | int] | None = None
    extensions: dict[str, Any] | None = Field(None, description="`code`: Runledger's error code name",
                                              examples=[{"code": "RESOURCE_DOES_NOT_EXIST"}])


class WandbGraphqlAnswer(BaseModel):
    """GraphQL's answer: resolver and validation errors come in a 200 next to (partial) data; a
    malformed request (400), a bad API key (401) or a refused one (403) carry only `errors`."""

    model_config = ConfigDict(extra="allow")

    data: dict[str, Any] | None = Field(None, description="the operation's result")
    errors: list[WandbGraphqlError] | None = None
