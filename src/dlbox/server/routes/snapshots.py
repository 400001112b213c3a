"""Code snapshots over HTTP: ask whether the server has one (yours), send one, read one, gc."""

from __future__ import annotations

import tempfile
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dlbox import snapshots
from dlbox.server import models as m
from dlbox.server import snapshot_actions
from dlbox.server.deps import Caller, Ctx

router = APIRouter(prefix="/api", responses=m.COMMON)
Hash = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="a snapshot's content hash (sha256, hex)")]
TAR = {200: {"content": {"application/x-tar": {}}, "description": "the snapshot as a tar"}}


def snapshot_body_limit() -> int:
    """An upload is a tar: the size limit, plus a header (and padding) per file."""
    size, files = snapshots.limits()
    return size + files * 1536 + 1024**2


@router.get("/snapshots/{snapshot_hash}", response_model=m.SnapshotManifest, responses=m.errors(404))
def show(snapshot_hash: Hash, who: Caller, ctx: Ctx) -> dict:
    """A snapshot's manifest (paths, modes, sizes, content hashes): 404 unless you sent it."""
    return snapshot_actions.manifest(ctx, who, snapshot_hash)


@router.get("/snapshots/{snapshot_hash}/tar", response_class=Response, responses={**m.errors(404), **TAR})
def download(snapshot_hash: Hash, who: Caller, ctx: Ctx) -> Response:
    return Response(snapshot_actions.tar(ctx, who, snapshot_hash), media_type="application/x-tar")


@router.put("/snapshots/{snapshot_hash}", response_model=m.SnapshotStored, responses=m.errors(400, 403, 413))
async def upload(snapshot_hash: Hash, request: Request, who: Caller, ctx: Ctx) -> dict:
    """Send a snapshot as an uncompressed tar; stored only if its content hashes to `snapshot_hash`.
    The body goes to a temporary file as it comes (bounded by the body limit), never held whole."""
    snapshots.check_hash(snapshot_hash)
    with tempfile.TemporaryFile(dir=snapshots.store_root() if snapshots.store_root().is_dir() else None) as body:
        async for chunk in request.stream():
            body.write(chunk)
        return await run_in_threadpool(snapshot_actions.upload, ctx, who, snapshot_hash, body)


@router.post("/gc", response_model=m.Garbage, responses=m.errors(403))
def gc(who: Caller, ctx: Ctx) -> dict:
    """Remove code snapshots no run refers to; what was freed."""
    return snapshot_actions.collect_garbage(ctx, who)
