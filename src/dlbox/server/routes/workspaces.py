"""API routes for workspaces and images: thin, over server/workspace_actions and the build domain.

Lists come from the store (fast, and the same for every reader); the reconcile loop keeps each
workspace's row in step with the engine. Acting on one workspace asks the engine directly.
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from dlbox.progress import Progress
from dlbox.server import accounts
from dlbox.server import models as m
from dlbox.server import workspace_actions as actions
from dlbox.server.deps import Caller, Ctx, Limit, Offset, next_link
from dlbox.server.workspace_actions import NewWorkspace
from dlbox.workspaces import manage as workspaces

router = APIRouter(prefix="/api", responses=m.COMMON)
WORKSPACE = dict(response_model=m.Workspace, response_model_exclude_unset=True, responses=m.ENGINE)


@router.get("/workspaces", response_model=list[m.Workspace], response_model_exclude_unset=True)
async def list_workspaces(request: Request, who: Caller, ctx: Ctx, limit: Limit = 100, offset: Offset = 0) -> Response:
    """From the store, by name; the encoded page is kept until a workspace row changes (the loop writes only
    changes)."""
    key = ("workspaces", "*" if who.admin else who.name, limit, offset)
    version = ctx.store.versions["workspaces"]
    cached = ctx.list_cache.get(key)
    if cached is None or cached[0] != version:
        rows, more = actions.rows_for(ctx, who, limit=limit, offset=offset)
        if len(ctx.list_cache) > 256:
            ctx.list_cache.clear()
        cached = ctx.list_cache[key] = (version, json.dumps(rows).encode(), next_link(request, more, limit, offset))
    return Response(cached[1], media_type="application/json", headers=cached[2])


@router.post("/workspaces", status_code=201, **WORKSPACE)
def create_workspace(body: NewWorkspace, who: Caller, ctx: Ctx, request: Request) -> dict:
    return actions.create(body, who, ctx, request)


@router.get("/workspaces/{name}", **WORKSPACE)
def show_workspace(name: str, who: Caller, ctx: Ctx) -> dict:
    return actions.show(name, who, ctx)


@router.delete("/workspaces/{name}", response_model=m.WorkspaceRemoved, responses=m.ENGINE)
def remove_workspace(name: str, who: Caller, ctx: Ctx, purge_data: bool = False) -> dict:
    return actions.remove(name, who, ctx, purge_data=purge_data)


@router.get("/workspaces/{name}/verify", response_model=m.WorkspaceVerify, responses=m.ENGINE)
def verify_workspace(name: str, who: Caller, ctx: Ctx) -> dict:
    """The packages the workspace's user installed beyond its image's lock (`ok` false: some)."""
    return actions.verify(name, who, ctx)


@router.get("/workspaces/{name}/token", response_model=m.WorkspaceToken, responses=m.ENGINE)
def workspace_token(name: str, who: Caller, ctx: Ctx) -> dict:
    return actions.token(name, who, ctx)


@router.post("/workspaces/{name}/token", response_model=m.WorkspaceToken, responses=m.ENGINE)
def rotate_workspace_token(name: str, who: Caller, ctx: Ctx) -> dict:
    return actions.rotate_token(name, who, ctx)


# after .../token: routes match in order, and {action} would take "token" (a rotation was unreachable)
@router.post("/workspaces/{name}/{action}", **WORKSPACE)
def act(name: str, action: str, who: Caller, ctx: Ctx) -> dict:
    return actions.act(name, action, who, ctx)


# --- images -------------------------------------------------------------------------------------


class NewImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str = Field(max_length=64)
    tag: str = Field(default="latest", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@router.get("/images", response_model=list[m.Image], response_model_exclude_unset=True, responses=m.ENGINE)
def list_images(who: Caller, all: bool = False, limit: Limit = 100, offset: Offset = 0) -> list[dict]:
    from dlbox.build import images

    return images.list_images(include_untagged=all)[offset:offset + limit]


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: int = Field(ge=0, le=10_000, description="how many of the newest images of each name to keep")
    name: str | None = Field(default=None, min_length=1, max_length=128, description="only this image name")
    dry_run: bool = False
    registry: str | None = Field(default=None, min_length=1, max_length=255,
                                 description="HOST:PORT[/PROJECT]: prune that registry instead of the engine")


@router.post("/images/prune", response_model=m.PruneResult, responses=m.ENGINE)
def prune_images(body: PruneRequest, who: Caller, ctx: Ctx) -> dict:
    """Admins only: keep the newest `keep` images of each name and every image something needs (a
    workspace, an active job, a model version, a pipeline, a deployment, any container); remove the rest,
    never forced."""
    from dlbox.server import image_actions

    if not who.admin:
        raise accounts.Forbidden("only an admin may prune images on the server")
    return image_actions.prune(ctx.store, keep=body.keep, name=body.name, dry_run=body.dry_run,
                               registry=body.registry)


@router.get("/images/{ref:path}/verify", response_model=m.ImageVerify, responses=m.ENGINE)
def verify_image(ref: str, who: Caller) -> dict:
    """The packages really in the image against its lock (`ok` false: drift)."""
    from dlbox.build import images

    return images.verify(ref)


class ScanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advisories: str | None = Field(default=None, max_length=1000,
                                   description="an OSV API URL or a folder/zip on the server (admins only)")
    fail_on: Literal["low", "medium", "high", "critical"] | None = None


@router.post("/images/{ref:path}/scan", response_model=m.ScanResult, responses=m.ENGINE)
def scan_image(ref: str, body: ScanRequest, who: Caller) -> dict:
    """The image's packages against advisories; the result is kept with the image. Only an admin may
    name the advisory source: it is read by the server (a path there, or a URL it fetches)."""
    from dlbox.supply import scan

    if body.advisories is not None and not who.admin:
        raise accounts.Forbidden("only an admin may choose the advisory source on the server")
    return scan.scan(ref, advisories=body.advisories, fail_on=body.fail_on)


@router.get("/images/{ref:path}/sbom", response_model=m.Sbom, responses=m.ENGINE)
def image_sbom(ref: str, who: Caller, format: Literal["cyclonedx-json", "cyclonedx-xml"] = "cyclonedx-json") -> dict:
    from dlbox.supply import scan

    return {"format": format, "document": scan.sbom(ref, fmt=format)}


@router.delete("/images/{ref:path}", response_model=m.ImageRemoved, responses=m.ENGINE)
def remove_image(ref: str, who: Caller, force: bool = False) -> dict:
    from dlbox.build import images

    if not who.admin:
        raise accounts.Forbidden("only an admin may remove images on the server")
    attrs = images.get(ref)
    workspaces.engine.remove_image(ref, force=force)
    return {"removed": ref, "id": attrs["Id"]}


@router.get("/images/{ref:path}", response_model=m.ImageDetail, response_model_exclude_unset=True, responses=m.ENGINE)
def inspect_image(ref: str, who: Caller) -> dict:
    from dlbox.supply import scan

    return scan.inspect(ref)


@router.post("/images", status_code=201, response_model=m.BuiltImage, responses=m.ENGINE)
def build_image(body: NewImage, who: Caller) -> dict:
    """Admins only: a build takes minutes of the whole machine."""
    from dlbox import config
    from dlbox.build import images

    if not who.admin:
        raise accounts.Forbidden("only an admin may build images on the server")

    spec, project_dir, lock_file = images.load_source(None, body.preset)
    with Progress(quiet=True) as progress:
        result = images.build(spec, project_dir=project_dir, lock_file=lock_file, use_lock=True, nocache=False,
                              ca_bundle=config.default_ca_bundle(), tag=body.tag, progress=progress)
    return result.to_json()
