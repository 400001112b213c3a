"""The model registry over HTTP: register a run's SavedModel, list, show, aliases and their history.

A caller sees their own models and shared ones (admins: all); anything else is a 404. `owner`
names another user's namespace (a shared model, or any for an admin). Sharing is admin-only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from dlbox.errors import Forbidden
from dlbox.models import refs, registry
from dlbox.server import models as m
from dlbox.server.deps import Caller, Ctx, Limit, Offset

router = APIRouter(prefix="/api", responses=m.COMMON)
Owner = Annotated[str | None, Query(max_length=64, description="whose namespace (default: the caller's)")]
READS = m.errors(400, 404)
WRITES = m.errors(400, 403, 404)


class NewVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(max_length=32, description="the id of a succeeded run")
    path: str = Field(default=registry.DEFAULT_PATH, max_length=512,
                      description="the SavedModel's folder inside the run's artifacts")


class AliasTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=refs.MAX_VERSION)


class Sharing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shared: bool


@router.get("/models", response_model=list[m.ModelSummary])
def list_models(who: Caller, ctx: Ctx, limit: Limit = 100, offset: Offset = 0) -> list[dict]:
    return registry.listing(ctx.store, who.name, admin=who.admin, limit=limit, skip=offset)


@router.post("/models/{name}/versions", status_code=201, response_model=m.ModelVersion,
             responses={**m.ENGINE, **m.errors(404, 409)})
def register(name: str, body: NewVersion, who: Caller, ctx: Ctx) -> dict:
    """Version N of the caller's model NAME from a succeeded run's SavedModel (422 not_a_model if it is none)."""
    return registry.register(ctx.store, who.name, name, run=body.run, path=body.path, admin=who.admin).to_json()


@router.get("/models/{name}", response_model=m.ModelDetail, responses=READS)
def show_model(name: str, who: Caller, ctx: Ctx, owner: Owner = None) -> dict:
    return registry.detail(ctx.store, who.name, name, owner=owner, admin=who.admin)


@router.get("/models/{name}/versions/{version}", response_model=m.ModelVersion, responses=READS)
def show_version(name: str, version: int, who: Caller, ctx: Ctx, owner: Owner = None) -> dict:
    ref = refs.Ref(refs.check_name(name), version=refs.check_version(version), owner=owner)
    return registry.resolve(ctx.store, who.name, ref, admin=who.admin).to_json()


@router.delete("/models/{name}/versions/{version}", response_model=m.VersionRemoved, responses=WRITES)
def remove_version(name: str, version: int, who: Caller, ctx: Ctx, owner: Owner = None) -> dict:
    return registry.remove_version(ctx.store, who.name, name, refs.check_version(version), owner=owner,
                                   admin=who.admin)


@router.get("/models/{name}/aliases/{alias}", response_model=m.ModelVersion, responses=READS)
def show_alias(name: str, alias: str, who: Caller, ctx: Ctx, owner: Owner = None) -> dict:
    ref = refs.Ref(refs.check_name(name), alias=refs.check_alias(alias), owner=owner)
    return registry.resolve(ctx.store, who.name, ref, admin=who.admin).to_json()


@router.put("/models/{name}/aliases/{alias}", response_model=m.AliasSet, responses=WRITES)
def set_alias(name: str, alias: str, body: AliasTarget, who: Caller, ctx: Ctx, owner: Owner = None) -> dict:
    """Point ALIAS at a version (set, or move): the move is recorded in the history."""
    return registry.move_alias(ctx.store, who.name, name, alias, body.version, owner=owner, admin=who.admin)


@router.delete("/models/{name}/aliases/{alias}", response_model=m.AliasSet, responses=WRITES)
def delete_alias(name: str, alias: str, who: Caller, ctx: Ctx, owner: Owner = None) -> dict:
    return registry.move_alias(ctx.store, who.name, name, alias, None, owner=owner, admin=who.admin)


@router.get("/models/{name}/history", response_model=list[m.AliasMove], responses=READS)
def alias_history(name: str, who: Caller, ctx: Ctx, owner: Owner = None, limit: Limit = 100,
                  offset: Offset = 0) -> list[dict]:
    """Every alias move, oldest first: who, when, from which version to which."""
    return registry.history(ctx.store, who.name, name, owner=owner, admin=who.admin)[offset:offset + limit]


@router.put("/models/{name}/share", response_model=m.ModelSummary, responses=WRITES)
def share(name: str, body: Sharing, who: Caller, ctx: Ctx, owner: Owner = None) -> dict:
    """Admins only: let every user see and serve OWNER's model NAME (or stop)."""
    if not who.admin:
        raise Forbidden("only an admin shares models")
    return registry.share(ctx.store, owner or who.name, name, body.shared)
