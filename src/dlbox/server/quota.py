"""What a user holds now, against their quota."""

from __future__ import annotations

from dlbox.engine import gpus
from dlbox.jobs.state import JobState
from dlbox.server import accounts
from dlbox.store.db import Store


def held(store: Store, user: str) -> dict:
    """What `user` holds now: workspaces (all; running ones count their limits), active jobs, and the
    memory of deployments, each replica's (kept running by the loop, so each counts while it is recorded)."""
    mine = store.workspaces(owner=user)
    running = [w for w in mine if w.state in ("running", "restarting", "created")]
    active = store.jobs(states={JobState.QUEUED, JobState.STARTING, JobState.RUNNING}, user=user)
    # "all" of a job not yet started counts every GPU; ask the host (nvidia-smi) only then, and once
    available = gpus.inventory() if any(j.gpu_request == "all" and not j.gpu_ids for j in active) else []
    return {"workspaces": len(mine),
            "cpus": sum(w.cpus or 0 for w in running) + sum(j.cpus or 0 for j in active),
            "memory": sum(w.memory or 0 for w in running) + sum(j.memory or 0 for j in active)
                      + sum((d.memory or 0) * (d.replicas or 1) for d in store.deployments(owner=user)),
            "gpus": sum(w.gpus or 0 for w in running)
                    + sum(len(j.gpu_ids) if j.gpu_ids else gpus.count(j.gpu_request, available) for j in active)}


def check_quota(store: Store, user: str, **asked) -> None:
    account = store.get_user(user)
    if account is None or not account.quota:
        return
    accounts.check_quota(user, account.quota, held(store, user), asked)
