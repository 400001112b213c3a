"""What the server does with code snapshots for a caller: who may read, send and hold which.

A server user may read or run a snapshot only after sending it themselves (a row in the store):
knowing a hash proves nothing, and someone else's snapshot does not exist (404). Locally (the
socket's caller owns the dlbox home) the CLI stores snapshots itself and every one is readable.
"""

from __future__ import annotations

from dlbox import snapshots
from dlbox.errors import Forbidden, NotFound
from dlbox.server import accounts
from dlbox.server.deps import Context


def _mine(ctx: Context, who: accounts.Caller, snapshot_hash: str) -> None:
    snapshots.check_hash(snapshot_hash)
    visible = snapshots.exists(snapshot_hash) and (
        ctx.mode != "server" or who.admin or ctx.store.has_snapshot(who.name, snapshot_hash))
    if not visible:
        raise NotFound(f"no code snapshot {snapshot_hash[:12]}")


def manifest(ctx: Context, who: accounts.Caller, snapshot_hash: str) -> dict:
    _mine(ctx, who, snapshot_hash)
    return snapshots.manifest(snapshot_hash)


def tar(ctx: Context, who: accounts.Caller, snapshot_hash: str) -> bytes:
    _mine(ctx, who, snapshot_hash)
    return snapshots.to_tar(snapshot_hash)


def upload(ctx: Context, who: accounts.Caller, snapshot_hash: str, body) -> dict:
    """Store an uploaded tar as `snapshot_hash` (checked: it must hash to that) for the caller,
    within their storage quota (artifacts and snapshots they hold)."""
    snapshots.check_hash(snapshot_hash)
    with ctx.user_lock(who.name):
        snap, new = snapshots.unpack(body, snapshot_hash)
        if not ctx.store.has_snapshot(who.name, snapshot_hash):
            account = ctx.store.get_user(who.name)
            limit = (account.quota or {}).get("storage") if account is not None else None
            held = ctx.store.artifact_bytes(who.name) + ctx.store.snapshot_bytes(who.name)
            if limit is not None and held + snap.bytes > limit:
                if new:  # nobody else holds what this upload wrote
                    snapshots.remove(snapshots.path_of(snapshot_hash))
                raise Forbidden(f"quota storage: {who.name} may keep {limit} bytes, holds {held} and the code "
                                f"snapshot is {snap.bytes}", code="quota_exceeded")
            ctx.store.add_snapshot(who.name, snapshot_hash, files=snap.files, size=snap.bytes)
    return {"hash": snapshot_hash, "files": snap.files, "bytes": snap.bytes, "new": new}


def collect_garbage(ctx: Context, who: accounts.Caller) -> dict:
    """Remove the snapshots no run refers to (older than an hour: a job may be on its way)."""
    if ctx.mode == "server" and not who.admin:
        raise Forbidden("gc: admins only")
    freed = snapshots.collect_garbage(ctx.store.referenced_snapshots())
    ctx.store.forget_snapshots(set(freed["removed"]))
    return freed
