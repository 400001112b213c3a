"""API routes for users and their tokens (admins manage users; everyone manages their own tokens)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from dlbox.server import accounts
from dlbox.server import models as m
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.server.deps import Caller, Ctx, Limit, Offset, page

router = APIRouter(prefix="/api", responses=m.COMMON)


class Quota(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspaces: int | None = Field(default=None, ge=0, le=100_000)
    cpus: float | None = Field(default=None, ge=0, le=1_000_000, allow_inf_nan=False)
    memory: str | None = Field(default=None, max_length=16, description="a size such as 8g")
    gpus: int | None = Field(default=None, ge=0, le=10_000)
    storage: str | None = Field(default=None, max_length=16, description="bytes of run artifacts kept, e.g. 50g")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=32)
    admin: bool = False
    quota: Quota = Quota()


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=64)
    expires: str | None = Field(default=None, max_length=16, description="30d, 12h, 90m or never")
    user: str | None = Field(default=None, max_length=32, description="admins only: for another user")


def admin_only(who: accounts.Caller) -> None:
    if not who.admin:
        raise accounts.Forbidden("only an admin may manage users")


def quota_of(q: Quota) -> dict:
    return accounts.parse_quota(q.model_dump())


@router.get("/me", response_model=m.Me)
def me(who: Caller, ctx: Ctx) -> dict:
    user = ctx.store.get_user(who.name)
    from dlbox.server.quota import held

    return {"name": who.name, "role": who.role, "quota": user.quota if user else {}, "held": held(ctx.store, who.name)}


@router.post("/users", status_code=201, response_model=m.NewUserAnswer, responses=m.errors(400, 403, 409))
def add_user(body: NewUser, who: Caller, ctx: Ctx) -> dict:
    admin_only(who)
    user = accounts.add_user(ctx.store, body.name, admin=body.admin, quota=quota_of(body.quota))
    row, token = accounts.create_token(ctx.store, user.name, name="first", limit=who.expires_at)
    return accounts.user_json(user) | {"token": token, "token_id": row.id}


@router.get("/users", response_model=list[m.User], responses=m.errors(403))
def list_users(request: Request, who: Caller, ctx: Ctx, limit: Limit = 100, offset: Offset = 0):
    """Users by name, a page at a time."""
    admin_only(who)
    found = ctx.store.users(limit=limit + 1, skip=offset)
    return page(request, [accounts.user_json(u) for u in found[:limit]], more=len(found) > limit, limit=limit,
                offset=offset)


@router.put("/users/{name}/quota", response_model=m.User, responses=m.errors(400, 403, 404))
def set_quota(name: str, body: Quota, who: Caller, ctx: Ctx) -> dict:
    admin_only(who)
    user = ctx.store.get_user(name)
    if user is None:
        raise NotFound(f"no user {name!r} (see `dlbox users ls`)")
    user.quota = quota_of(body)
    ctx.store.update_user(user)
    return accounts.user_json(user)


@router.delete("/users/{name}", response_model=m.Removed, responses={**m.errors(400, 403, 404, 409), **m.ENGINE})
def remove_user(name: str, who: Caller, ctx: Ctx) -> dict:
    admin_only(who)
    if ctx.store.get_user(name) is None:
        raise NotFound(f"no user {name!r} (see `dlbox users ls`)")
    if name == who.name:
        raise UsageError("NAME: you cannot remove yourself")
    from dlbox.server.quota import held

    holds = held(ctx.store, name)
    if holds["workspaces"] or holds["cpus"]:  # a user added later under this name would inherit them
        raise DlboxError(f"user {name} still holds {holds['workspaces']} workspace(s) and active jobs using "
                         f"{holds['cpus']:g} CPUs; remove or cancel them first", code="exists")
    from dlbox.containers import networks
    from dlbox.engine import api as engine

    engine.remove_network(networks.for_owner(name).name)  # first: if the engine refuses, nothing has changed
    ctx.store.remove_user(name)
    return {"name": name, "removed": True}


@router.post("/tokens", status_code=201, response_model=m.NewTokenAnswer, responses=m.errors(400, 404))
def create_token(body: NewToken, who: Caller, ctx: Ctx) -> dict:
    user = body.user or who.name
    if user != who.name and not who.admin:
        raise NotFound(f"no user {user!r}")
    # never past the calling token's own expiry (the local socket's owner has no token: no limit)
    row, token = accounts.create_token(ctx.store, user, name=body.name, expires=body.expires, limit=who.expires_at)
    return accounts.token_json(row) | {"token": token}


@router.get("/tokens", response_model=list[m.Token])
def list_tokens(request: Request, who: Caller, ctx: Ctx, limit: Limit = 100, offset: Offset = 0, all: bool = False):
    """Tokens oldest first, a page at a time."""
    rows = ctx.store.tokens(user=None if (all and who.admin) else who.name, limit=limit + 1, skip=offset)
    return page(request, [accounts.token_json(r) for r in rows[:limit]], more=len(rows) > limit, limit=limit,
                offset=offset)


@router.delete("/tokens/{token_id}", response_model=m.Token, responses=m.errors(404))
def revoke_token(token_id: str, who: Caller, ctx: Ctx) -> dict:
    row = ctx.store.get_token(token_id)
    if row is None or not who.sees(row.user):
        raise NotFound(f"no token {token_id!r} (see `dlbox tokens ls`)")
    ctx.store.revoke_token(token_id)
    return accounts.token_json(ctx.store.get_token(token_id))
