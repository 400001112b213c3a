"""What the server does with workspaces for a caller: ownership, quotas, mount roots, then the domain.

The API's routes and the dashboard's pages both call these plain functions; neither calls the other.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dlbox.containers import mount_policy
from dlbox.engine import gpus
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.progress import Progress
from dlbox.server import accounts
from dlbox.server.deps import Context
from dlbox.store.db import Workspace
from dlbox.workspaces import manage as workspaces
from dlbox.workspaces import records


class NewWorkspace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=41)
    preset: str | None = Field(default=None, max_length=64)
    image: str | None = Field(default=None, max_length=256)
    jupyter: bool | None = None
    ssh: bool = False
    ssh_public_key: str | None = Field(default=None, max_length=16384)
    mounts: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(default=[], max_length=32)
    memory: str | None = Field(default=None, max_length=16)
    cpus: float | None = Field(default=None, gt=0, le=1024)
    gpus: str | None = Field(default=None, max_length=64)
    shm_size: str | None = Field(default=None, max_length=16)
    pids: int | None = Field(default=None, ge=16, le=1_000_000)


def row_json(row: Workspace) -> dict:
    return {**row.info, "state": row.state, "owner": row.owner}


def mine(ctx: Context, who: accounts.Caller, name: str) -> Workspace:
    row = ctx.store.get_workspace(name)
    if row is None or not who.sees(row.owner):  # another user's workspace is not there, for you
        raise NotFound(f"no workspace {name!r} (see `dlbox ls`)")
    return row


def rows_for(ctx: Context, who: accounts.Caller, *, limit: int, offset: int = 0) -> tuple[list[dict], bool]:
    """One page of the workspaces `who` sees, and whether there are more."""
    found = ctx.store.workspaces(owner=None if who.admin else who.name, limit=limit + 1, skip=offset)
    return [row_json(r) for r in found[:limit]], len(found) > limit


def url_host(ctx: Context, request: Request | None) -> str | None:
    """For workspaces published on every interface (--workspace-host 0.0.0.0): the host name the client
    reached the server by (its Host header, without the port), so the URL works where the client is."""
    import socket

    if ctx.workspace_host not in ("0.0.0.0", "::"):
        return None
    given = request.headers.get("host", "") if request is not None else ""
    host = given[:given.index("]") + 1] if given.startswith("[") and "]" in given else given.rsplit(":", 1)[0]
    try:
        return workspaces.check_url_host(host)
    except UsageError:
        return socket.gethostname()


def create(body: NewWorkspace, who: accounts.Caller, ctx: Context, request: Request = None) -> dict:
    from dlbox.sizes import parse_size

    name = workspaces.containers.check_name(body.name, "name")
    if ctx.store.get_workspace(name) is not None:
        raise DlboxError(f"workspace name {name} is taken; choose another", code="exists")
    if ctx.mode == "server":
        body.mounts = [mount_policy.check_mount_roots(m, ctx.mount_roots, who=who) for m in body.mounts]
    if body.ssh_public_key is not None:
        workspaces.public_key(workspaces.UpRequest(name=name, ssh_public_key=body.ssh_public_key))
    try:
        memory = parse_size(body.memory) if body.memory else None
    except ValueError as exc:
        raise UsageError(f"memory: {exc}") from None
    wanted = gpus.parse(body.gpus)
    account = ctx.store.get_user(who.name)
    quota = account.quota if account else {}
    for key, given in (("cpus", body.cpus), ("memory", memory), ("gpus", wanted)):
        if key in quota and given is None:
            raise UsageError(f"{key}: your quota limits {key}, so give a limit (e.g. --{key} ...)")
    with ctx.user_lock(who.name):  # check and create as one step: parallel requests cannot pass a quota
        return _create(ctx, who, body, name, memory, gpus.count(wanted, gpus.inventory()) if wanted else 0,
                       url_host(ctx, request))


def _create(ctx: Context, who: accounts.Caller, body: NewWorkspace, name: str, memory: int | None, gpu_count: int,
            host_name: str | None) -> dict:
    from dlbox.server.quota import check_quota

    check_quota(ctx.store, who.name, workspaces=1, cpus=body.cpus, memory=memory, gpus=gpu_count)
    preset = body.preset or (None if body.image else "tensorflow-2.9")  # never the server's own ./dlbox.yaml
    request = workspaces.UpRequest(
        name=name, preset=preset, image=body.image, jupyter=body.jupyter, ssh=body.ssh,
        ssh_public_key=body.ssh_public_key, mounts=body.mounts, memory=body.memory, cpus=body.cpus, gpus=body.gpus,
        shm_size=body.shm_size, pids=body.pids, host=ctx.workspace_host, owner=who.name, url_host=host_name,
        guard_mounts=ctx.mode == "server" and not who.admin,
        build_missing=who.admin or ctx.mode == "local")  # builds take the machine for minutes: admins only
    if body.ssh and not body.ssh_public_key and ctx.mode == "server":
        raise UsageError("ssh_public_key: an SSH workspace needs your public key")
    with Progress(quiet=True) as progress:
        ws = workspaces.up(request, progress)
    records.record(ctx.store, workspaces.engine.container_attrs(ws["container_id"]), owner=who.name)
    return ws | {"owner": who.name}


def show(name: str, who: accounts.Caller, ctx: Context) -> dict:
    row = mine(ctx, who, name)
    try:
        return workspaces.show(name) | {"owner": row.owner}
    except NotFound:
        return row_json(row)


def act(name: str, action: str, who: accounts.Caller, ctx: Context) -> dict:
    row = mine(ctx, who, name)
    if action not in ("stop", "start", "restart"):
        raise NotFound(f"no action {action!r}: stop, start or restart")
    from dlbox.server.quota import check_quota

    with ctx.user_lock(row.owner), Progress(quiet=True) as progress:
        if action in ("start", "restart") and row.state not in ("running", "restarting"):
            check_quota(ctx.store, row.owner, cpus=row.cpus, memory=row.memory, gpus=row.gpus)  # it will run again
        ws = getattr(workspaces, action)(name, progress)
    records.record(ctx.store, workspaces.engine.container_attrs(ws["container_id"]), owner=row.owner)
    return ws | {"owner": row.owner}


def remove(name: str, who: accounts.Caller, ctx: Context, purge_data: bool = False) -> dict:
    mine(ctx, who, name)
    try:
        result = workspaces.rm(name, purge_data=purge_data)
    except NotFound:  # the container had gone already: forget the row all the same
        result = {"name": name, "removed": True, "data": "container was already gone"}
    ctx.store.remove_workspace(name)
    return result


def token(name: str, who: accounts.Caller, ctx: Context) -> dict:
    mine(ctx, who, name)
    ws = workspaces.show(name, with_token=True)
    if not ws["jupyter"] or "token" not in ws["jupyter"]:
        raise UsageError(f"workspace {name} has no Jupyter token here")
    return {"name": name, "token": ws["jupyter"]["token"], "url": ws["jupyter"]["url"], "rotated": False}


def verify(name: str, who: accounts.Caller, ctx: Context) -> dict:
    from dlbox.workspaces import drift

    mine(ctx, who, name)
    return drift.verify(name)


def rotate_token(name: str, who: accounts.Caller, ctx: Context) -> dict:
    mine(ctx, who, name)
    with Progress(quiet=True) as progress:
        ws = workspaces.rotate_token(name, progress)
    return {"name": name, "token": ws["jupyter"]["token"], "url": ws["jupyter"]["url"], "rotated": True}
