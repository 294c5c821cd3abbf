"""API tokens over Runledger's own API: create (the token is in this answer and nowhere else),
list (ids, names, expiry; never secrets), revoke. A user manages their own; an admin anyone's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.requests import Request

from runledger.auth.access import access
from runledger.auth.state import TokenInfo
from runledger.dialects.mlflow.users import auth_service
from runledger.dialects.openapi import Empty, documented
from runledger.dialects.request import Fields, json_body, query_fields
from runledger.ingest.errors import PermissionDenied, ResourceDoesNotExist


class TokenOut(BaseModel):
    token_id: str
    username: str
    name: str
    created_at: int
    expires_at: int | None


class CreatedToken(BaseModel):
    token: str          # shown once
    info: TokenOut


def _out(info: TokenInfo) -> TokenOut:
    return TokenOut(token_id=info.token_id, username=info.username, name=info.name, created_at=info.created_at,
                    expires_at=info.expires_at)


def _owner(request: Request, username: str | None) -> str:
    me = access(request)
    target = username or str(me.username)
    if target != me.username and not me.unrestricted:
        raise PermissionDenied("Permission denied: only admins manage other users' tokens.")
    return target


async def create_token(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    username = _owner(request, f.str("username"))
    info, token = await auth_service(request).create_token(username, f.str("name") or "", f.int64("expires_at"))
    return CreatedToken(token=token, info=_out(info)).model_dump()


def list_tokens(request: Request) -> dict[str, Any]:
    username = _owner(request, query_fields(request).str("username"))
    return {"tokens": [_out(i).model_dump() for i in auth_service(request).state.tokens.values()
                       if i.username == username]}


async def revoke_token(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    service = auth_service(request)
    info = service.state.tokens.get(f.req_str("token_id"))
    if info is None:
        raise ResourceDoesNotExist(f"No live token with id {f.req_str('token_id')}")
    _owner(request, info.username)
    await service.revoke_token(info.token_id)
    return {}


class CreateTokenBody(BaseModel):
    username: str | None = Field(None, description="whose token (default: the caller; others': admins)", examples=['ada'])
    name: str | None = Field(None, description="a label for listings", examples=['ci'])
    expires_at: int | None = Field(None, description="Unix ms after which the token no longer works", examples=[1767225600000])


class TokensQuery(BaseModel):
    username: str | None = Field(None, description="whose tokens (default: the caller's; others': admins)", examples=['ada'])


class TokensAnswer(BaseModel):
    tokens: list[TokenOut]


class RevokeTokenBody(BaseModel):
    token_id: str = Field(examples=['AbCdEfGh12345678'])


def build_router() -> APIRouter:
    router = APIRouter()
    tags, errors = ["tokens"], (401, 403, 404)
    router.add_api_route("/tokens", create_token, methods=["POST"], **documented(
        summary="Create an API token (shown in this answer only)", body=CreateTokenBody, response=CreatedToken,
        errors=errors, tags=tags))
    router.add_api_route("/tokens", list_tokens, methods=["GET"], **documented(
        summary="Live tokens of a user (never their secrets)", query=TokensQuery, response=TokensAnswer,
        errors=errors, tags=tags))
    router.add_api_route("/tokens/revoke", revoke_token, methods=["POST"], **documented(
        summary="Revoke a token", body=RevokeTokenBody, response=Empty, errors=errors, tags=tags))
    return router
