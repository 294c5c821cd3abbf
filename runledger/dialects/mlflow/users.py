"""MLflow 3.x's basic-auth management API, so `mlflow.server.get_app_client("basic-auth", uri)`
manages Runledger's users and experiment grants unchanged: users under /api/2.0/mlflow/users/...,
per-user grants under /api/3.0/mlflow/users/permissions/... (resource type `experiment` only).
Who may call what is in AUTH_RULES (docs/auth.md); the work is runledger.auth.service's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.requests import Request

from runledger.auth import rules
from runledger.auth.access import access
from runledger.auth.rules import ADMIN, AUTHENTICATED, EXPERIMENT, MANAGE, SELF_OR_ADMIN, USERNAME, Rule
from runledger.auth.service import AuthService
from runledger.auth.vault import verify_password
from runledger.dialects.openapi import Empty, documented
from runledger.dialects.request import Fields, json_body, query_fields
from runledger.auth.permissions import Permission
from runledger.dialects import services
from runledger.ingest.contract import entities
from runledger.ingest.errors import EndpointNotFound, InvalidParameterValue, ResourceDoesNotExist


def auth_service(request: Request) -> AuthService:
    found = getattr(request.app.state, "auth", None)
    if found is None:
        # Not a 503: nothing is temporarily wrong, and a retry would never succeed. With auth off
        # these routes do not exist, as on an MLflow server started without its basic-auth app.
        raise EndpointNotFound("Authentication is off on this server (RUNLEDGER_AUTH=on turns it on).")
    return found  # type: ignore[no-any-return]


def _user_json(service: AuthService, username: str) -> dict[str, Any]:
    u = service.user(username)
    return {"id": u.user_id, "username": u.username, "is_admin": u.is_admin}


def _bool(f: Fields, name: str) -> bool:
    v = f.data.get(name)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise InvalidParameterValue(f"Missing or invalid boolean parameter '{name}'.")


def _experiment(f: Fields) -> str:
    kind = f.req_str("resource_type")
    if kind != "experiment":
        raise InvalidParameterValue(f"Unsupported resource_type '{kind}': Runledger grants permissions on experiments.")
    return str(f.req_str("resource_id"))


# ----- users (/api/2.0/mlflow)

async def create_user(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    service = auth_service(request)
    await service.create_user(f.req_str("username"), f.req_str("password"))
    return {"user": _user_json(service, f.req_str("username"))}


def get_user(request: Request) -> dict[str, Any]:
    return {"user": _user_json(auth_service(request), query_fields(request).req_str("username"))}


def current_user(request: Request) -> dict[str, Any]:
    return {"user": _user_json(auth_service(request), str(access(request).username))}


def list_users(request: Request) -> dict[str, Any]:
    service = auth_service(request)
    return {"users": [{**_user_json(service, name), "roles": []} for name in sorted(service.state.users)]}


async def update_password(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    service = auth_service(request)
    username, password = f.req_str("username"), f.req_str("password")
    if username == access(request).username:
        # changing one's own password needs the current one, as MLflow asks
        current = f.str("current_password")
        if not current:
            raise InvalidParameterValue("Current password is required when changing your own password.")
        if not verify_password(service.vault.password_hash(username), current):
            raise InvalidParameterValue("Current password does not match.")
    await service.update_password(username, password)
    return {}


async def update_admin(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    await auth_service(request).set_admin(f.req_str("username"), _bool(f, "is_admin"))
    return {}


async def delete_user(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    await auth_service(request).delete_user(f.req_str("username"))
    return {}


# ----- grants (/api/3.0/mlflow)

async def grant_permission(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    exp = _experiment(f)
    # an existing experiment only: a grant on an id not yet allocated would take effect later
    if services.writer(request).catalog.experiment(exp) is None:
        raise ResourceDoesNotExist(entities.experiment_not_found(exp))
    await auth_service(request).grant(f.req_str("username"), exp, f.req_str("permission"))
    return {}


async def revoke_permission(request: Request) -> dict[str, Any]:
    f = Fields(await json_body(request))
    await auth_service(request).revoke(f.req_str("username"), _experiment(f))
    return {}


def get_permission(request: Request) -> dict[str, Any]:
    f = query_fields(request)
    level = auth_service(request).effective(f.req_str("username"), _experiment(f))
    return {"allowed": level >= Permission.EDIT, "permission": level.name}


def list_permissions(request: Request) -> dict[str, Any]:
    service = auth_service(request)
    username = query_fields(request).req_str("username")
    user = service.user(username)
    return {"is_admin": user.is_admin, "permissions": [
        {"resource_type": "experiment", "resource_pattern": exp, "permission": level.name}
        for exp, level in sorted(service.state.grants_of(username).items())]}


# ----- OpenAPI models (docs/openapi.md): what the routes read and answer

class UserOut(BaseModel):
    id: int
    username: str
    is_admin: bool


class UserAnswer(BaseModel):
    user: UserOut


class UsersAnswer(BaseModel):
    users: list[UserOut]


class CreateUserBody(BaseModel):
    username: str = Field(examples=['ada'])
    password: str = Field(examples=['correct horse battery staple'])


class UsernameQuery(BaseModel):
    username: str = Field(examples=['ada'])


class UsernameBody(BaseModel):
    username: str = Field(examples=['ada'])


class UpdatePasswordBody(BaseModel):
    username: str = Field(examples=['ada'])
    password: str = Field(examples=['correct horse battery staple'])
    current_password: str | None = Field(None, description="required when changing one's own password", examples=['old password'])


class UpdateAdminBody(BaseModel):
    username: str = Field(examples=['ada'])
    is_admin: bool = Field(examples=[True])


class GrantBody(BaseModel):
    username: str = Field(examples=['ada'])
    resource_type: str = Field(description="'experiment'", examples=['experiment'])
    resource_id: str = Field(examples=['1'])
    permission: str = Field(description="READ, EDIT, MANAGE or NO_PERMISSIONS", examples=['EDIT'])


class RevokeBody(BaseModel):
    username: str = Field(examples=['ada'])
    resource_type: str = Field(description="'experiment'", examples=['experiment'])
    resource_id: str = Field(examples=['1'])


class PermissionQuery(BaseModel):
    username: str = Field(examples=['ada'])
    resource_type: str = Field(description="'experiment'", examples=['experiment'])
    resource_id: str = Field(examples=['1'])


class PermissionAnswer(BaseModel):
    allowed: bool = Field(description="EDIT or more, as MLflow's `can_use`")
    permission: str


class PermissionRow(BaseModel):
    resource_type: str
    resource_pattern: str
    permission: str


class PermissionsAnswer(BaseModel):
    is_admin: bool
    permissions: list[PermissionRow]


_AUTH = (401, 403, 404)


def build_users_router() -> APIRouter:
    router = APIRouter()
    tags = ["users"]
    router.add_api_route("/users/create", create_user, methods=["POST"], **documented(
        summary="Create a user (admins)", body=CreateUserBody, response=UserAnswer, errors=_AUTH, tags=tags))
    router.add_api_route("/users/get", get_user, methods=["GET"], **documented(
        summary="A user (themselves, or admins)", query=UsernameQuery, response=UserAnswer, errors=_AUTH, tags=tags))
    router.add_api_route("/users/current", current_user, methods=["GET"], **documented(
        summary="The signed-in user", response=UserAnswer, errors=_AUTH, tags=tags))
    router.add_api_route("/users/list", list_users, methods=["GET"], **documented(
        summary="Every user (admins)", response=UsersAnswer, errors=_AUTH, tags=tags))
    router.add_api_route("/users/update-password", update_password, methods=["PATCH"], **documented(
        summary="Set a password (one's own with the current one, or admins)", body=UpdatePasswordBody,
        response=Empty, errors=_AUTH, tags=tags))
    router.add_api_route("/users/update-admin", update_admin, methods=["PATCH"], **documented(
        summary="Make a user an admin or not (admins)", body=UpdateAdminBody, response=Empty, errors=_AUTH,
        tags=tags))
    router.add_api_route("/users/delete", delete_user, methods=["DELETE"], **documented(
        summary="Delete a user, their grants and tokens (admins)", body=UsernameBody, response=Empty,
        errors=_AUTH, tags=tags))
    return router


def build_permissions_router() -> APIRouter:
    router = APIRouter()
    tags = ["users"]
    router.add_api_route("/users/permissions/grant", grant_permission, methods=["POST"], **documented(
        summary="Grant a user a permission on an experiment (MANAGE on it, or admins)", body=GrantBody,
        response=Empty, errors=_AUTH, tags=tags))
    router.add_api_route("/users/permissions/revoke", revoke_permission, methods=["POST"], **documented(
        summary="Revoke a user's grant on an experiment (MANAGE on it, or admins)", body=RevokeBody,
        response=Empty, errors=_AUTH, tags=tags))
    router.add_api_route("/users/permissions/get", get_permission, methods=["GET"], **documented(
        summary="A user's effective permission on an experiment", query=PermissionQuery,
        response=PermissionAnswer, errors=_AUTH, tags=tags))
    router.add_api_route("/users/permissions/list", list_permissions, methods=["GET"], **documented(
        summary="A user's grants", query=UsernameQuery, response=PermissionsAnswer, errors=_AUTH, tags=tags))
    return router


USERS_RULES: dict[str, Rule] = {
    "POST /users/create": Rule(ADMIN),
    "GET /users/get": Rule(SELF_OR_ADMIN, rules.query("username", USERNAME)),
    "GET /users/current": Rule(AUTHENTICATED),
    "GET /users/list": Rule(ADMIN),
    "PATCH /users/update-password": Rule(SELF_OR_ADMIN, rules.body("username", USERNAME)),
    "PATCH /users/update-admin": Rule(ADMIN),
    "DELETE /users/delete": Rule(ADMIN),
}
PERMISSIONS_RULES: dict[str, Rule] = {
    "POST /users/permissions/grant": Rule(MANAGE, rules.body("resource_id", EXPERIMENT)),
    "POST /users/permissions/revoke": Rule(MANAGE, rules.body("resource_id", EXPERIMENT)),
    "GET /users/permissions/get": Rule(SELF_OR_ADMIN, rules.query("username", USERNAME)),
    "GET /users/permissions/list": Rule(SELF_OR_ADMIN, rules.query("username", USERNAME)),
}
