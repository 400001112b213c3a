"""Deployments over HTTP: serve a registered model, list, show, remove, read the server's log.

A caller sees and serves their own models and shared ones (admins: all); another user's model or
deployment is a 404. On the team server the server chooses the host a deployment listens on, and a
deployment's memory counts against its owner's memory quota (a quota that limits memory needs --memory).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from dlbox.deployments import intent
from dlbox.deployments import manage as deployments
from dlbox.errors import UsageError
from dlbox.server import models as m
from dlbox.server.deps import Caller, Ctx, Limit, Offset
from dlbox.sizes import parse_size

router = APIRouter(prefix="/api", responses=m.COMMON)
ONE = dict(response_model=m.Deployment, responses={**m.ENGINE})


class NewDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=140, description="NAME, OWNER/NAME, NAME:VERSION or NAME@ALIAS")
    alias: str | None = Field(default=None, max_length=64, description="follow this alias as it moves")
    versions: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(default=None, max_length=64,
                                                                             description="pin these versions")
    port: int | None = Field(default=None, ge=1, le=65535)
    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    host: str | None = Field(default=None, max_length=64)
    memory: str | None = Field(default=None, max_length=32, description="e.g. 2g")
    replicas: int = Field(default=1, ge=1, le=intent.MAX_REPLICAS,
                          description="serving containers behind the deployment's front")
    name: str | None = Field(default=None, max_length=64)
    batch_max: int = Field(default=0, ge=0, le=intent.MAX_BATCH)
    batch_timeout_ms: float | None = Field(default=None, gt=0, le=1000)


@router.post("/deployments", status_code=201, **ONE)
def create_deployment(body: NewDeployment, who: Caller, ctx: Ctx) -> dict:
    """Record deployment NAME of a model the caller sees and start it (the model's own image by ID)."""
    try:
        memory = parse_size(body.memory) if body.memory else None
    except ValueError as exc:
        raise UsageError(f"--memory: {exc}") from None
    req = intent.Request(model=body.model, alias=body.alias, versions=tuple(body.versions) if body.versions else None,
                         port=body.port, grpc_port=body.grpc_port, host=body.host, memory=memory,
                         replicas=body.replicas, name=body.name, batch_max=body.batch_max,
                         batch_timeout_ms=body.batch_timeout_ms)
    if ctx.mode == "local" or who.admin:
        return deployments.serve(ctx.store, who.name, req, admin=who.admin, default_host=ctx.workspace_host)
    from dlbox.server.quota import check_quota

    account = ctx.store.get_user(who.name)
    if account is not None and "memory" in (account.quota or {}) and memory is None:
        raise UsageError("memory: your quota limits memory, so give a limit (e.g. --memory 2g)")
    with ctx.user_lock(who.name):  # check and serve as one step: parallel requests cannot pass the quota
        check_quota(ctx.store, who.name, memory=memory * body.replicas if memory else None)  # each replica's
        return deployments.serve(ctx.store, who.name, req, default_host=ctx.workspace_host, choose_host=False)


@router.get("/deployments", response_model=list[m.Deployment], responses=m.ENGINE)
def list_deployments(who: Caller, ctx: Ctx, limit: Limit = 100, offset: Offset = 0) -> list[dict]:
    """The caller's deployments (admins: all), each with what the engine says of its container now."""
    return deployments.listing(ctx.store, who.name, admin=who.admin)[offset:offset + limit]


@router.get("/deployments/{name}", **ONE)
def show_deployment(name: str, who: Caller, ctx: Ctx) -> dict:
    return deployments.show(ctx.store, who.name, name, admin=who.admin)


@router.delete("/deployments/{name}", response_model=m.DeploymentRemoved, responses=m.ENGINE)
def remove_deployment(name: str, who: Caller, ctx: Ctx) -> dict:
    return deployments.remove(ctx.store, who.name, name, admin=who.admin)


@router.get("/deployments/{name}/logs", responses={**m.ENGINE, 200: m.PLAIN_TEXT})
def deployment_logs(name: str, who: Caller, ctx: Ctx,
                    tail: Annotated[int, Query(ge=1, le=deployments.LOG_TAIL_MAX)] = 200) -> Response:
    """The server's last TAIL lines: requests (no payloads), loads and unloads, errors."""
    return Response(deployments.logs(ctx.store, who.name, name, admin=who.admin, tail=tail), media_type="text/plain")
