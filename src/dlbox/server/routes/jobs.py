"""Jobs and their runs over HTTP: submit, list, show, cancel, logs (live or saved)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from dlbox.engine import api as engine
from dlbox.errors import DlboxError
from dlbox.jobs import runner as jobs
from dlbox.jobs.state import ACTIVE, JobState
from dlbox.jobs.submit import GIT_DIFF, JobRequest
from dlbox.runs.records import job_json, run_json
from dlbox.server import bodylimit
from dlbox.server import models as m
from dlbox.server.deps import RUNS_MAX, Caller, Ctx, Limit, Offset, next_link, page
from dlbox.server import job_actions
from dlbox.store.db import Job, Store

router = APIRouter(prefix="/api", responses=m.COMMON)
JOB_BODY = GIT_DIFF + 2 * bodylimit.MiB  # a job request carries its git diff


@router.post("/jobs", status_code=201, response_model=m.Job, responses={**m.ENGINE, **m.errors(413)})
def submit(request: JobRequest, who: Caller, ctx: Ctx) -> dict:
    return job_json(job_actions.submit_job(ctx, request, who))

@router.get("/jobs", response_model=list[m.Job])
def list_jobs(request: Request, who: Caller, ctx: Ctx, limit: Limit = 100, offset: Offset = 0, all: bool = False):
    """The newest `limit` jobs after the `offset` newest, oldest first (a queue reads top down)."""
    states = None if all else set(ACTIVE)
    found = ctx.store.jobs(states=states, user=None if who.admin else who.name, newest=limit + 1, skip=offset)
    more, found = len(found) > limit, found[-limit:]  # one more than asked: is there a next page?
    return page(request, [job_json(j) for j in found], more=more, limit=limit, offset=offset)

@router.get("/jobs/{job_id}", response_model=m.Job, responses=m.errors(404))
def show_job(job_id: str, who: Caller, ctx: Ctx) -> dict:
    return job_json(job_actions.get_job(ctx.store, job_id, who))

@router.post("/jobs/{job_id}/cancel", response_model=m.Job, responses=m.errors(404))
def cancel(job_id: str, who: Caller, ctx: Ctx) -> dict:
    job = job_actions.get_job(ctx.store, job_id, who)
    if not JobState(job.state).is_finished():
        ctx.store.update(job.id, cancel_requested=True)
        ctx.loop.wake()
    return job_json(ctx.store.get_job(job.id))

@router.get("/jobs/{job_id}/logs", responses={**m.errors(404, 429), **m.ENGINE, 200: m.PLAIN_TEXT})
async def logs(request: Request, job_id: str, who: Caller, ctx: Ctx, follow: bool = False):
    # async all the way: a follower waits on the event loop, never holding a worker thread
    job = job_actions.get_job(ctx.store, job_id, who)
    saved = jobs.run_dir(job.id) / "output.log"
    if not follow or JobState(job.state).is_finished():
        return job_logs(ctx.store, job, saved)
    release = ctx.followers.take(who.name)
    try:
        while not job.container_id and not JobState(job.state).is_finished():  # from when it starts
            if await request.is_disconnected():
                return Response(b"", media_type="text/plain")
            await changed(ctx.store, 2.0)
            job = job_actions.get_job(ctx.store, job_id, who)
    except BaseException:
        release()
        raise
    if JobState(job.state).is_finished() or not job.container_id:
        release()
        return job_logs(ctx.store, job, saved)
    return StreamingResponse(live_logs(ctx.store, job, follow=True, release=release), media_type="text/plain",
                             background=BackgroundTask(release))  # also when the stream never began

@router.get("/runs", response_model=list[m.RunSummary])
async def list_runs(request: Request, who: Caller, ctx: Ctx, limit: int = Query(default=1000, ge=1, le=RUNS_MAX),
                    offset: Offset = 0):  # async: see ctx_of
    """The newest runs first, each with its last metric values (`runs show` has the rest)."""
    key, version = ("runs", "*" if who.admin else who.name, limit, offset), ctx.store.versions["jobs"]
    cached = ctx.list_cache.get(key)
    if cached is None or cached[0] != version:
        found = ctx.store.jobs(user=None if who.admin else who.name, newest=limit + 1, skip=offset)[::-1]
        more, found = len(found) > limit, found[:limit]
        last = ctx.store.last_metrics([j.id for j in found])
        body = json.dumps([job_json(j) | {"metrics": last[j.id]} for j in found]).encode()
        if len(ctx.list_cache) > 256:
            ctx.list_cache.clear()
        cached = ctx.list_cache[key] = (version, body, next_link(request, more, limit, offset))
    return Response(cached[1], media_type="application/json", headers=cached[2])

@router.get("/runs/{job_id}", response_model=m.Run, responses=m.errors(404))
def show_run(job_id: str, who: Caller, ctx: Ctx) -> dict:
    return run_json(ctx.store, job_actions.get_job(ctx.store, job_id, who))


async def changed(store: Store, most: float) -> None:
    """Wait until a job row changes (the store counts writes) or `most` seconds pass, without asking
    the database meanwhile: hundreds of waiting followers cost no queries."""
    version = store.versions["jobs"]
    deadline = time.monotonic() + most
    while store.versions["jobs"] == version and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def job_logs(store: Store, job: Job, saved: Path) -> Response:
    """Output without following: a running job's from the engine, else the saved file, streamed."""
    if not JobState(job.state).is_finished() and job.container_id:
        return StreamingResponse(live_logs(store, job, follow=False), media_type="text/plain")
    if saved.exists():
        return FileResponse(saved, media_type="text/plain")
    return Response(b"", media_type="text/plain")


async def live_logs(store: Store, job: Job, follow: bool, release=None):
    """Output of a running job from the engine; if the container goes meanwhile, the rest of the saved copy."""
    sent = 0
    try:
        try:
            async for chunk in engine.stream_logs(job.container_id, follow=follow):
                sent += len(chunk)
                yield chunk
        except DlboxError:  # the container was collected as we read: the saved copy has the rest
            pass
        if not follow:
            return
        deadline = time.monotonic() + 30
        while not JobState(store.get_job(job.id).state).is_finished() and time.monotonic() < deadline:
            await changed(store, 2.0)
        saved = jobs.run_dir(job.id) / "output.log"
        if saved.exists():
            with saved.open("rb") as out:
                out.seek(sent)
                while chunk := out.read(65536):
                    yield chunk
    finally:
        if release is not None:
            release()
