"""What the server does with jobs for a caller: who sees which job, and checking a request before it queues.

The API's routes and the dashboard's pages both call these plain functions.
"""

from __future__ import annotations

from dlbox.containers import mount_policy
from dlbox.containers import policy as containers
from dlbox.engine import gpus
from dlbox.errors import NotFound, UsageError
from dlbox.jobs.submit import JobRequest, build_job
from dlbox.runs.records import run_json
from dlbox.server import accounts, quota, snapshot_actions, workspace_actions
from dlbox.server.deps import Context
from dlbox.store.db import Job, Store


def get_job(store: Store, job_id: str, who: accounts.Caller) -> Job:
    job = store.get_job(job_id)
    if job is None or not who.sees(job.user):  # someone else's job does not exist, as far as you know
        raise NotFound(f"no job {job_id!r} (see `dlbox jobs`)")
    return job


class RunsOf:
    """The run records and code snapshots `who` may see, read as runs/diff.runs_diff reads the CLI's
    backend: someone else's run or snapshot is NotFound, as through the API. Each record is read once."""

    def __init__(self, ctx: Context, who: accounts.Caller, *, history: bool = True):
        self.ctx, self.who, self.records, self.with_history = ctx, who, {}, history

    def run(self, run_id: str) -> dict:
        if run_id not in self.records:
            self.records[run_id] = run_json(self.ctx.store, get_job(self.ctx.store, run_id, self.who),
                                            history=self.with_history)
        return self.records[run_id]

    def history(self, run_id: str) -> list:
        """The run's metric rows (.name, .step, .value) as logged; run() first, so another's run is NotFound."""
        return self.ctx.store.metrics(self.run(run_id)["id"])

    def code_manifest(self, snapshot_hash: str) -> dict:
        return snapshot_actions.manifest(self.ctx, self.who, snapshot_hash)

    def code_tar(self, snapshot_hash: str) -> bytes:
        return snapshot_actions.tar(self.ctx, self.who, snapshot_hash)


def submit_job(ctx: Context, request: JobRequest, who: accounts.Caller) -> Job:
    """Check a job request (mount roots, capacity, quota), queue it and wake the loop: intent only."""
    if ctx.mode == "server":
        request.project_dir = None  # the caller's directories mean nothing on the server
        request.mounts = [mount_policy.check_mount_roots(m, ctx.mount_roots, who=who) for m in request.mounts]
    if request.code_hash and ctx.mode == "server" and not who.admin \
            and not ctx.store.has_snapshot(who.name, request.code_hash):  # a hash alone proves nothing
        raise NotFound(f"no code snapshot {request.code_hash[:12]} of yours on this server (send it first)",
                       code="snapshot_missing")
    if request.workspace is not None:  # its volume is mounted: only its owner's jobs may
        containers.check_name(request.workspace, "workspace")
        if ctx.mode == "server":
            workspace_actions.mine(ctx, who, request.workspace)
    account = ctx.store.get_user(who.name)
    if account is not None and "memory" in (account.quota or {}) and not request.memory:
        raise UsageError("memory: your quota limits memory, so give a limit (e.g. --memory 4g)")
    with ctx.user_lock(who.name):  # check and queue as one step: parallel requests cannot pass a quota
        job = build_job(request, who.name, ctx.loop.reconciler.capacity, guarded=ctx.mode == "server" and not who.admin)
        quota.check_quota(ctx.store, who.name, cpus=job.cpus, memory=job.memory,
                    gpus=gpus.count(job.gpu_request, ctx.loop.reconciler.capacity.gpus))
        ctx.store.add_job(job)
    ctx.loop.wake()
    return job
