"""The dlbox service: owns the job queue and the reconcile loop, and answers the CLI over HTTP.

It listens on a Unix socket in $DLBOX_HOME/service/ (a 0700 directory: only its owner can talk
to it); the CLI starts it in the background when none answers. One service per DLBOX_HOME.
"""

from __future__ import annotations

import asyncio
import fcntl
import secrets
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from dlbox.containers import mount_policy
from dlbox import __version__, config, redact
from dlbox.server import accounts
from dlbox.server import bodylimit
from dlbox.containers import policy as containers
from dlbox.engine import api as engine
from dlbox.engine import gpus
from dlbox.jobs import runner as jobs
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.jobs.state import ACTIVE, JobState
from dlbox.store.db import Job, Store

LOOP_PERIOD = 1.0
EVENTS_RETRY = 5.0



# Bounds of a job request: a request is data to keep (the store, `runs show`), never a way to fill them.
ARG = Annotated[str, StringConstraints(max_length=128 * 1024)]  # Linux's MAX_ARG_STRLEN
COMMAND_BYTES = 256 * 1024
PARAM_KEY = Annotated[str, StringConstraints(min_length=1, max_length=128)]
PARAM_VALUE = Annotated[str, StringConstraints(max_length=4096)]
MOUNT = Annotated[str, StringConstraints(max_length=4096)]
PATH = Annotated[str, StringConstraints(max_length=4096)]
GIT_DIFF = 4 * 1024 * 1024


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=256)
    command: list[ARG] = Field(min_length=1, max_length=4096)
    name: str | None = Field(default=None, max_length=128)
    params: Annotated[dict[PARAM_KEY, PARAM_VALUE], Field(max_length=256)] = {}
    mounts: list[MOUNT] = Field(default=[], max_length=32)
    workspace: str | None = Field(default=None, max_length=64)
    memory: str | None = Field(default=None, max_length=16)
    cpus: float | None = Field(default=None, allow_inf_nan=False)
    gpus: str | None = Field(default=None, max_length=64)
    share_gpus: bool = False
    shm_size: str | None = Field(default=None, max_length=16)
    project_dir: PATH | None = None
    git_commit: str | None = Field(default=None, max_length=64)
    git_dirty: bool = False
    git_diff: str | None = Field(default=None, max_length=GIT_DIFF)
    workdir: PATH | None = None
    reproduces: str | None = Field(default=None, max_length=64)

    @field_validator("command")
    @classmethod
    def command_size(cls, command: list[str]) -> list[str]:
        if sum(len(arg.encode()) for arg in command) > COMMAND_BYTES:
            raise ValueError(f"at most {COMMAND_BYTES // 1024} KiB in all")
        return command


class Loop:
    """The reconcile loop: wakes every second, or at once when a request asks it to or one of
    this service's job containers ends (the engine's die events)."""

    def __init__(self, store: Store, capacity: jobs.Capacity | None = None):
        self.store = store
        self.reconciler = jobs.Reconciler(store, capacity or jobs.Capacity.detect())
        self.wake_event = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="reconcile")
        self.watcher = threading.Thread(target=self._watch_engine, daemon=True, name="engine-events")
        self.last_error: str | None = None
        # /api/health: "following" the engine's die events, or "reconnecting" (ended jobs are then
        # noticed by the 1 s period only)
        self.events = "starting"
        self.stopping = threading.Event()

    def start(self) -> None:
        self.thread.start()
        self.watcher.start()

    def stop(self) -> None:
        """End the loop after its current pass (the event watcher only wakes it, so it may stay)."""
        self.stopping.set()
        self.wake()
        self.thread.join()

    def _watch_engine(self) -> None:
        """Wake on every die (or reconnect) of our job containers; the loop itself looks at what changed."""
        labels = [engine.MANAGED, "dlbox.kind=job", f"dlbox.home={jobs.owner_label()}"]
        while not self.stopping.is_set():
            try:
                for event in engine.container_events(labels):
                    if event["action"] in ("connected", "reconnected", "disconnected"):
                        self.events = "following" if event["action"] != "disconnected" else "reconnecting"
                    self.wake()
            except Exception:  # noqa: BLE001 - never take the service down; the 1 s period still runs
                self.events = "reconnecting"
                time.sleep(EVENTS_RETRY)

    def wake(self) -> None:
        self.wake_event.set()

    def run_once(self) -> None:
        from dlbox.server.routes import workspaces as routes_workspaces

        with self.lock:
            self.reconciler.run_once()
            routes_workspaces.sync(self.store)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake_event.wait(LOOP_PERIOD)
            self.wake_event.clear()
            if self.stopping.is_set():
                break
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep looping; /api/health and `dlbox jobs` show it
                self.last_error = f"{type(exc).__name__}: {exc}"


bearer = HTTPBearer(auto_error=False, description="An API token from `dlbox users add` or `dlbox tokens create`.")


@dataclass
class Context:
    """What the routes share: the store, the loop, and who may do what.

    mode "local": the Unix socket in a 0700 directory; whoever reaches it owns this dlbox home
    and acts as admin. mode "server": TCP; every route but health needs a valid API token.
    """

    store: Store
    loop: Loop
    mode: str = "local"
    mount_roots: list[Path] = field(default_factory=list)
    workspace_host: str = "127.0.0.1"
    # token digest -> (caller, store auth version, expiry): revoking bumps the version, so it acts at once
    auth_cache: dict = field(default_factory=dict)
    list_cache: dict = field(default_factory=dict)
    sessions: dict = field(default_factory=dict)  # digest of a dashboard session id -> (token, until)
    user_locks: dict = field(default_factory=dict)  # one quota check-and-act at a time per user
    followers: Followers = field(default_factory=lambda: Followers())

    def user_lock(self, name: str) -> threading.Lock:
        return self.user_locks.setdefault(name, threading.Lock())


async def caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                 x_dlbox_user: Annotated[str | None, Header(include_in_schema=False)] = None) -> accounts.Caller:
    # async: a cache hit does no I/O, and skipping the thread pool hop matters at hundreds of requests/s
    ctx: Context = request.app.state.ctx
    if ctx.mode == "local":
        return accounts.Caller(name=x_dlbox_user or "local", role="admin")
    if credentials is not None:
        return token_caller(ctx, credentials.credentials)
    if request.cookies.get(COOKIE) and request.method not in ("GET", "HEAD"):
        # the dashboard's session reads (live logs, state); changes need the header. Browsers send the
        # cookie to every port of this host, workspaces' Jupyter included, and SameSite ignores ports.
        raise accounts.Unauthorized("API changes need Authorization: Bearer <token>; the dashboard session only reads")
    return session_caller(ctx, request.cookies.get(COOKIE))


def token_caller(ctx: Context, token: str | None) -> accounts.Caller:
    """accounts.authenticate, remembered until the store's auth version moves (revocation acts at once)."""
    key = accounts.digest(token or "")
    version = ctx.store.versions["auth"]
    hit = ctx.auth_cache.get(key)
    if hit and hit[1] == version and (hit[2] is None or hit[2] > time.time()):
        return hit[0]
    who = accounts.authenticate(ctx.store, token)
    if len(ctx.auth_cache) > 10_000:
        ctx.auth_cache.clear()
    ctx.auth_cache[key] = (who, version, who.expires_at)
    return who


SESSION_SECONDS = 12 * 3600


def new_session(ctx: Context, token: str) -> str:
    """A dashboard session for a checked token: the cookie holds a random id, never the token itself,
    and the id is no API token (a leaked cookie cannot be replayed as `Authorization: Bearer`)."""
    session = secrets.token_urlsafe(32)
    now = time.time()
    for key in [k for k, (_, until) in ctx.sessions.items() if until < now]:
        del ctx.sessions[key]
    ctx.sessions[accounts.digest(session)] = (token, now + SESSION_SECONDS)
    return session


def end_session(ctx: Context, session: str | None) -> None:
    ctx.sessions.pop(accounts.digest(session or ""), None)


def session_caller(ctx: Context, session: str | None) -> accounts.Caller:
    found = ctx.sessions.get(accounts.digest(session)) if session else None
    if found is None or found[1] < time.time():
        raise accounts.Unauthorized("sign in again (no valid session)" if session else None)
    return token_caller(ctx, found[0])  # a revoked token or removed user ends its sessions too


COOKIE = "dlbox_token"
Caller = Annotated[accounts.Caller, Depends(caller)]


async def ctx_of(request: Request) -> Context:  # async: no thread-pool hop per request
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(ctx_of)]


def job_json(job: Job) -> dict:
    def iso(ts: float | None) -> str | None:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z" if ts else None

    return {
        "id": job.id, "name": job.name, "user": job.user, "state": job.state, "reason": job.reason,
        # secret-looking params and URL credentials never leave the store (the job gets the real ones)
        "command": redact.words(job.command), "params": redact.mapping(job.params), "image": job.image_ref,
        "image_id": job.image_id,
        "lock_hash": job.lock_hash, "spec_hash": job.spec_hash, "git_commit": job.git_commit,
        "git_dirty": job.git_dirty, "exit_code": job.exit_code, "peak_memory": job.peak_memory,
        "resources": {"cpus": job.cpus, "memory": job.memory, "gpus": job.gpu_ids, "gpu_request": job.gpu_request},
        "mounts": job.mounts, "workdir": job.workdir,
        "workspace": next((v.removeprefix("dlbox-ws-").removesuffix("-data") for v in job.volumes or {}), None),
        "submitted_at": iso(job.submitted_at), "started_at": iso(job.started_at), "ended_at": iso(job.ended_at),
        "reproduces": job.reproduces,
    }


def run_json(store: Store, job: Job) -> dict:
    history = store.metrics(job.id)
    last: dict[str, float] = {}
    for m in history:
        last[m.name] = m.value
    kept = jobs.artifacts(job.id)  # the manifest the service wrote: nothing the job made is followed
    return {**job_json(job), "metrics": last,
            "metric_history": [{"step": m.step, "name": m.name, "value": m.value} for m in history],
            "env": redact.mapping(job.env), "git_diff": job.git_diff, "project_dir": job.project_dir,
            "artifacts": [f["path"] for f in kept["files"]], "artifact_links": kept["links"],
            "artifact_bytes": kept["bytes"], "artifacts_dir": str(jobs.run_dir(job.id) / "artifacts"),
            "notes": job.notes or [], "lock": job.lock_text, "spec": job.spec_text}


STATUS = {"unauthorized": 401, "forbidden": 403, "quota_exceeded": 403, "mount_refused": 403, "not_found": 404,
          "exists": 409, "port_in_use": 409, "too_many_followers": 429}


def error_response(exc: DlboxError) -> JSONResponse:
    status = STATUS.get(exc.code) or (400 if isinstance(exc, UsageError) else 409)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=status, headers=headers)


# Every list is a page: `limit` rows (default 100) after the first `offset`; a full page has a Link
# header to the next one (RFC 8288 rel="next"), so a client knows there is more.
PAGE_MAX = 1000
RUNS_MAX = 10_000  # `dlbox runs --limit`: one cached answer, so a bigger page is still cheap
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="rows in this page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows skipped before this page")]


def next_link(request: Request, more: bool, limit: int, offset: int) -> dict:
    if not more:
        return {}
    target = request.url.include_query_params(limit=limit, offset=offset + limit)
    return {"Link": f'<{target.path}?{target.query}>; rel="next"'}


def page(request: Request, rows: list, *, more: bool, limit: int, offset: int) -> JSONResponse:
    return JSONResponse(rows, headers=next_link(request, more, limit, offset))


JOB_BODY = GIT_DIFF + 2 * bodylimit.MiB  # a job request carries its git diff


def invalid_message(errors: list[dict]) -> str:
    """`field.path: what is wrong`, for the first error; a huge key in the path is cut short."""
    first = errors[0]
    place = ".".join(str(p) if len(str(p)) <= 40 else str(p)[:40] + "..." for p in first["loc"] if p != "body")
    return f"{place}: {first['msg']}"


def create_app(store: Store, loop: Loop, *, mode: str = "local", mount_roots: list[Path] | None = None,
               workspace_host: str = "127.0.0.1") -> FastAPI:
    from dlbox.server.routes import accounts as routes_accounts
    from dlbox.server.routes import workspaces as routes_workspaces

    app = FastAPI(title="dlbox", version=__version__, openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    app.state.ctx = Context(store=store, loop=loop, mode=mode, mount_roots=list(mount_roots or []),
                            workspace_host=workspace_host)

    # before the body is read: FastAPI reads it whole before authenticating (bodylimit says why)
    app.add_middleware(bodylimit.BodyLimit, limits={("POST", "/api/jobs"): JOB_BODY})

    @app.exception_handler(DlboxError)
    async def dlbox_error(_request: Request, exc: DlboxError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        return JSONResponse({"error": {"code": "invalid", "message": invalid_message(exc.errors())}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)

    def get_job(job_id: str, who: accounts.Caller) -> Job:
        job = store.get_job(job_id)
        if job is None or not who.sees(job.user):  # someone else's job does not exist, as far as you know
            raise NotFound(f"no job {job_id!r} (see `dlbox jobs`)")
        return job

    @app.get("/api/health")
    def health() -> dict:
        data = {"ok": True, "version": __version__, "mode": mode}
        if mode == "local":  # the details are for the owner only
            data |= {"pid": os.getpid(), "loop_error": loop.last_error, "job_errors": loop.reconciler.errors,
                     "engine_events": loop.events, "capacity": loop.reconciler.capacity.__dict__}
        return data

    @app.post("/api/jobs", status_code=201)
    def submit(request: JobRequest, who: Caller) -> dict:
        return job_json(submit_job(app.state.ctx, request, who))

    @app.get("/api/jobs", response_model=list[dict])
    def list_jobs(request: Request, who: Caller, limit: Limit = 100, offset: Offset = 0, all: bool = False):
        """The newest `limit` jobs after the `offset` newest, oldest first (a queue reads top down)."""
        states = None if all else set(ACTIVE)
        found = store.jobs(states=states, user=None if who.admin else who.name, newest=limit + 1, skip=offset)
        more, found = len(found) > limit, found[-limit:]  # one more than asked: is there a next page?
        return page(request, [job_json(j) for j in found], more=more, limit=limit, offset=offset)

    @app.get("/api/jobs/{job_id}")
    def show_job(job_id: str, who: Caller) -> dict:
        return job_json(get_job(job_id, who))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str, who: Caller) -> dict:
        job = get_job(job_id, who)
        if not JobState(job.state).is_finished():
            store.update(job.id, cancel_requested=True)
            loop.wake()
        return job_json(store.get_job(job.id))

    @app.get("/api/jobs/{job_id}/logs")
    async def logs(request: Request, job_id: str, who: Caller, follow: bool = False):
        # async all the way: a follower waits on the event loop, never holding a worker thread
        job = get_job(job_id, who)
        saved = jobs.run_dir(job.id) / "output.log"
        if not follow or JobState(job.state).is_finished():
            return job_logs(store, job, saved)
        release = app.state.ctx.followers.take(who.name)
        try:
            while not job.container_id and not JobState(job.state).is_finished():  # from when it starts
                if await request.is_disconnected():
                    return Response(b"", media_type="text/plain")
                await changed(store, 2.0)
                job = get_job(job_id, who)
        except BaseException:
            release()
            raise
        if JobState(job.state).is_finished() or not job.container_id:
            release()
            return job_logs(store, job, saved)
        return StreamingResponse(live_logs(store, job, follow=True, release=release), media_type="text/plain",
                                 background=BackgroundTask(release))  # also when the stream never began

    @app.get("/api/runs", response_model=list[dict])
    async def list_runs(request: Request, who: Caller, limit: int = Query(default=1000, ge=1, le=RUNS_MAX),
                        offset: Offset = 0):  # async: see ctx_of
        """The newest runs first, each with its last metric values (`runs show` has the rest)."""
        key, version = ("runs", "*" if who.admin else who.name, limit, offset), store.versions["jobs"]
        cached = app.state.ctx.list_cache.get(key)
        if cached is None or cached[0] != version:
            found = store.jobs(user=None if who.admin else who.name, newest=limit + 1, skip=offset)[::-1]
            more, found = len(found) > limit, found[:limit]
            last = store.last_metrics([j.id for j in found])
            body = json.dumps([job_json(j) | {"metrics": last[j.id]} for j in found]).encode()
            if len(app.state.ctx.list_cache) > 256:
                app.state.ctx.list_cache.clear()
            cached = app.state.ctx.list_cache[key] = (version, body, next_link(request, more, limit, offset))
        return Response(cached[1], media_type="application/json", headers=cached[2])

    @app.get("/api/runs/{job_id}")
    def show_run(job_id: str, who: Caller) -> dict:
        return run_json(store, get_job(job_id, who))

    app.include_router(routes_accounts.router)
    app.include_router(routes_workspaces.router)
    if mode == "server":  # the web dashboard: only where there are accounts to sign in with
        from dlbox.server.dashboard import pages as dashboard

        app.include_router(dashboard.router)
    return app


def submit_job(ctx: Context, request: JobRequest, who: accounts.Caller) -> Job:
    """Check a job request (mount roots, capacity, quota), queue it and wake the loop: intent only."""
    if ctx.mode == "server":
        request.project_dir = None  # the caller's directories mean nothing on the server
        request.mounts = [mount_policy.check_mount_roots(m, ctx.mount_roots, who=who) for m in request.mounts]
    if request.workspace is not None:  # its volume is mounted: only its owner's jobs may
        from dlbox.server.routes import workspaces as routes_workspaces

        containers.check_name(request.workspace, "workspace")
        if ctx.mode == "server":
            routes_workspaces.mine(ctx, who, request.workspace)
    account = ctx.store.get_user(who.name)
    if account is not None and "memory" in (account.quota or {}) and not request.memory:
        raise UsageError("memory: your quota limits memory, so give a limit (e.g. --memory 4g)")
    with ctx.user_lock(who.name):  # check and queue as one step: parallel requests cannot pass a quota
        job = build_job(ctx.store, ctx.loop, request, who.name, guarded=ctx.mode == "server" and not who.admin)
        check_quota(ctx.store, who.name, cpus=job.cpus, memory=job.memory,
                    gpus=gpus.count(job.gpu_request, ctx.loop.reconciler.capacity.gpus))
        ctx.store.add_job(job)
    ctx.loop.wake()
    return job


def held(store: Store, user: str) -> dict:
    """What `user` holds now: workspaces (all; running ones count their limits) and active jobs."""
    mine = store.workspaces(owner=user)
    running = [w for w in mine if w.state in ("running", "restarting", "created")]
    active = store.jobs(states={JobState.QUEUED, JobState.STARTING, JobState.RUNNING}, user=user)
    # "all" of a job not yet started counts every GPU; ask the host (nvidia-smi) only then, and once
    available = gpus.inventory() if any(j.gpu_request == "all" and not j.gpu_ids for j in active) else []
    return {"workspaces": len(mine),
            "cpus": sum(w.cpus or 0 for w in running) + sum(j.cpus or 0 for j in active),
            "memory": sum(w.memory or 0 for w in running) + sum(j.memory or 0 for j in active),
            "gpus": sum(w.gpus or 0 for w in running)
                    + sum(len(j.gpu_ids) if j.gpu_ids else gpus.count(j.gpu_request, available) for j in active)}


def check_quota(store: Store, user: str, **asked) -> None:
    account = store.get_user(user)
    if account is None or not account.quota:
        return
    accounts.check_quota(user, account.quota, held(store, user), asked)


class Followers:
    """Live log followers, counted per user and in all: each holds an engine connection."""

    def __init__(self, per_user: int = 20, total: int = 500):
        self.per_user, self.total = per_user, total
        self.held: dict[str, int] = {}

    def take(self, user: str):
        """A release function for one more follower of `user`'s; TooMany past a cap."""
        if self.held.get(user, 0) >= self.per_user:
            raise TooMany(f"{user} already follows {self.per_user} job logs; stop one first")
        if sum(self.held.values()) >= self.total:
            raise TooMany(f"the server already serves {self.total} log followers; try again later")
        self.held[user] = self.held.get(user, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.held[user] -= 1
                if not self.held[user]:
                    del self.held[user]

        return release


class TooMany(DlboxError):
    def __init__(self, message: str):
        super().__init__(message, code="too_many_followers")


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


def build_job(store: Store, loop: Loop, request: JobRequest, user: str, *, guarded: bool = False) -> Job:
    """Check a request and turn it into a queued job (intent only: the loop starts it).

    guarded: a server user's mounts, checked again at start (mount_policy.check_unswappable)."""
    from dlbox.spec.model import parse_size

    attrs = engine.image_attrs(request.image)
    jobs.remember_image(attrs)  # the start reads it again by ID
    labels = attrs["Config"].get("Labels") or {}
    if not labels.get("dlbox.lock-hash") and not containers.foreign_images_allowed():
        raise DlboxError(f"--image: {request.image} was not built by dlbox (it has no lock); jobs run only images "
                         "from `dlbox build`, unless the admin allows others (dlbox server --allow-foreign-images)",
                         code="foreign_image")
    mounts = [mount_policy.parse_mount(m, base=Path(request.project_dir) if request.project_dir else None,
                                     guarded=guarded).to_json() for m in request.mounts]
    volumes = {}
    workdir = request.workdir
    if request.workspace:
        from dlbox.workspaces import manage as workspaces

        volumes = {workspaces.volume_name(request.workspace): workspaces.WORKDIR}
        workdir = workdir or workspaces.WORKDIR
    capacity = loop.reconciler.capacity
    cpus = request.cpus if request.cpus is not None else 1.0
    if cpus <= 0:
        raise UsageError("--cpus: must be more than 0")
    if cpus > capacity.cpus:
        raise UsageError(f"--cpus: {cpus:g} can never fit; this host gives jobs {capacity.cpus:g}")
    try:
        memory = parse_size(request.memory) if request.memory else None
        shm = parse_size(request.shm_size) if request.shm_size else None
    except ValueError as exc:
        raise UsageError(f"--memory/--shm-size: {exc}") from None
    if memory and capacity.memory and memory > capacity.memory:
        raise UsageError(f"--memory: can never fit; this host gives jobs {capacity.memory / 1024**3:.1f}g")
    wanted = gpus.parse(request.gpus)
    if wanted is not None:
        if "nvidia" not in engine.capacity()["runtimes"]:
            raise DlboxError("--gpus: the engine has no GPU runtime (install the NVIDIA container toolkit)",
                             code="no_gpu_runtime")
        gpus.allocate(wanted, available=capacity.gpus, held={}, share=True)  # can it ever fit? IDs come at start
    return Job(
        id=jobs.new_id(), user=user, name=request.name, state=JobState.QUEUED.value, command=request.command,
        params=request.params, env={}, image_ref=request.image, image_id=attrs["Id"],
        lock_hash=labels.get("dlbox.lock-hash"), spec_hash=labels.get("dlbox.spec-hash"),
        git_commit=request.git_commit, git_dirty=request.git_dirty, git_diff=request.git_diff,
        project_dir=request.project_dir, workdir=workdir, mounts=mounts, volumes=volumes, cpus=cpus, memory=memory,
        shm_size=shm, gpu_ids=None, gpu_request=wanted, cancel_requested=False, submitted_at=time.time(),
        reproduces=request.reproduces,
    )


def _take_lock(home: Path, *, replace: bool):
    """One service per dlbox home. `dlbox server` replaces a background service the CLI started."""
    import signal

    guard = open(home / "service.lock", "w")
    deadline = time.monotonic() + 15
    while True:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return guard
        except BlockingIOError:
            pid_file = home / "service" / "pid"
            if not replace or time.monotonic() > deadline:
                raise DlboxError(f"a dlbox service already runs for {home}") from None
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            time.sleep(0.2)


def serve(*, host: str | None = None, port: int | None = None, mount_roots: list[Path] | None = None,
          workspace_host: str = "127.0.0.1", tls_cert: Path | None = None, tls_key: Path | None = None,
          allow_containers: bool = False) -> None:
    """Run the service in the foreground: on the local socket, and on host:port when given (the server).
    dlbox containers cannot reach host:port unless `allow_containers` (an INPUT rule while it runs)."""
    import contextlib

    import uvicorn

    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    guard = _take_lock(home, replace=port is not None)  # noqa: F841 - held for the life of the process
    firewall = contextlib.ExitStack()
    if port is not None and not allow_containers:
        from dlbox.engine.firewall import closed_to_containers

        firewall.enter_context(closed_to_containers(port, ipv6=":" in (host or "")))
    (home / "service").mkdir(parents=True, exist_ok=True)
    (home / "service" / "pid").write_text(str(os.getpid()))
    store = Store()
    loop = Loop(store)
    try:
        loop.run_once()  # catch up with what happened while no service ran, before answering anyone
    except Exception as exc:  # noqa: BLE001 - answer anyway; the loop retries and health shows it
        loop.last_error = f"{type(exc).__name__}: {exc}"
    loop.start()
    sock = config.socket_path()
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.parent.chmod(0o700)
    sock.unlink(missing_ok=True)
    configs = [uvicorn.Config(create_app(store, loop), uds=str(sock), log_level="warning",
                              timeout_graceful_shutdown=2)]
    if port is not None:
        app = create_app(store, loop, mode="server", mount_roots=mount_roots, workspace_host=workspace_host)
        configs.append(uvicorn.Config(app, host=host or "127.0.0.1", port=port, log_level="warning",
                                      timeout_graceful_shutdown=2,
                                      ssl_certfile=tls_cert and str(tls_cert), ssl_keyfile=tls_key and str(tls_key)))
    class Server(uvicorn.Server):  # two servers share this process: signals are ours to handle
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    servers = [Server(c) for c in configs]

    async def main() -> None:
        import signal

        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(sig, lambda: [setattr(s, "should_exit", True) for s in servers])
        await asyncio.gather(*(s.serve() for s in servers))

    with firewall:  # the rule goes when the server does
        asyncio.run(main())
