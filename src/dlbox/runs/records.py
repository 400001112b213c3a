"""A job and its run record as the API, the CLI and the dashboard show them (secrets redacted)."""

from __future__ import annotations

import time

from dlbox import redact
from dlbox.jobs import runner as jobs
from dlbox.store.db import Job, Store


def job_json(job: Job) -> dict:
    def iso(ts: float | None) -> str | None:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z" if ts else None

    return {
        "id": job.id, "name": job.name, "user": job.user, "state": job.state, "reason": job.reason,
        # secret-looking params and URL credentials never leave the store (the job gets the real ones)
        "command": redact.words(job.command), "params": redact.mapping(job.params), "image": job.image_ref,
        "image_id": job.image_id, "repo_digests": list(job.repo_digests or []),
        "lock_hash": job.lock_hash, "spec_hash": job.spec_hash, "git_commit": job.git_commit,
        "git_dirty": job.git_dirty, "exit_code": job.exit_code, "peak_memory": job.peak_memory,
        "resources": {"cpus": job.cpus, "memory": job.memory, "gpus": job.gpu_ids, "gpu_request": job.gpu_request},
        "mounts": job.mounts, "workdir": job.workdir,
        "workspace": next((v.removeprefix("dlbox-ws-").removesuffix("-data") for v in job.volumes or {}), None),
        "submitted_at": iso(job.submitted_at), "started_at": iso(job.started_at), "ended_at": iso(job.ended_at),
        "reproduces": job.reproduces,
        "code": {"hash": job.code_hash, "files": job.code_files, "bytes": job.code_bytes, "dest": job.code_dest}
        if job.code_hash else None,
    }


def run_json(store: Store, job: Job, *, history: bool = True) -> dict:
    """The run record; without `history`, no metric_history (a long one is 100,000 rows), only last values."""
    kept = jobs.artifacts(job.id)  # the manifest the service wrote: nothing the job made is followed
    if history:
        rows = store.metrics(job.id)
        last = {m.name: m.value for m in rows}  # the last one logged of each name
        logged = {"metric_history": [{"step": m.step, "name": m.name, "value": m.value} for m in rows]}
    else:
        last, logged = store.last_metrics([job.id])[job.id], {}
    return {**job_json(job), "metrics": last, **logged,
            "env": redact.mapping(job.env), "git_diff": job.git_diff, "project_dir": job.project_dir,
            "artifacts": [f["path"] for f in kept["files"]], "artifact_links": kept["links"],
            "artifact_bytes": kept["bytes"], "artifacts_dir": str(jobs.run_dir(job.id) / "artifacts"),
            "notes": job.notes or [], "lock": job.lock_text, "spec": job.spec_text}
