"""The dlbox service: owns the job queue and the reconcile loop, and answers the CLI over HTTP.

It listens on a Unix socket in $DLBOX_HOME/service/ (a 0700 directory: only its owner can talk
to it); the CLI starts it in the background when none answers. One service per DLBOX_HOME.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dlbox import __version__, config, containers, engine, gpus, jobs
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.jobstate import JobState
from dlbox.store import Job, Store

LOOP_PERIOD = 1.0
EVENTS_RETRY = 5.0


def caller(x_dlbox_user: Annotated[str | None, Header()] = None) -> str:
    return x_dlbox_user or "local"


User = Annotated[str, Depends(caller)]




class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    command: list[str] = Field(min_length=1)
    name: str | None = None
    params: dict[str, str] = {}
    mounts: list[str] = []
    workspace: str | None = None
    memory: str | None = None
    cpus: float | None = None
    gpus: str | None = None
    share_gpus: bool = False
    shm_size: str | None = None
    project_dir: str | None = None
    git_commit: str | None = None
    git_dirty: bool = False
    git_diff: str | None = None
    workdir: str | None = None
    reproduces: str | None = None


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
                for _event in engine.container_events(labels):
                    self.wake()
            except Exception:  # noqa: BLE001 - never take the service down; the 1 s period still runs
                time.sleep(EVENTS_RETRY)

    def wake(self) -> None:
        self.wake_event.set()

    def run_once(self) -> None:
        with self.lock:
            self.reconciler.run_once()

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


def job_json(job: Job) -> dict:
    def iso(ts: float | None) -> str | None:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z" if ts else None

    return {
        "id": job.id, "name": job.name, "user": job.user, "state": job.state, "reason": job.reason,
        "command": job.command, "params": job.params, "image": job.image_ref, "image_id": job.image_id,
        "lock_hash": job.lock_hash, "spec_hash": job.spec_hash, "git_commit": job.git_commit,
        "git_dirty": job.git_dirty, "exit_code": job.exit_code, "peak_memory": job.peak_memory,
        "resources": {"cpus": job.cpus, "memory": job.memory, "gpus": job.gpu_ids},
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
    artifacts_root = jobs.run_dir(job.id) / "artifacts"
    artifacts = sorted(str(p.relative_to(artifacts_root)) for p in artifacts_root.rglob("*") if p.is_file()) \
        if artifacts_root.is_dir() else []
    return {**job_json(job), "metrics": last,
            "metric_history": [{"step": m.step, "name": m.name, "value": m.value} for m in history],
            "env": job.env, "git_diff": job.git_diff, "project_dir": job.project_dir,
            "artifacts": artifacts, "artifacts_dir": str(artifacts_root), "lock": job.lock_text,
            "spec": job.spec_text}


def create_app(store: Store, loop: Loop) -> FastAPI:
    app = FastAPI(title="dlbox", version=__version__, openapi_url="/openapi.json", docs_url=None, redoc_url=None)

    @app.exception_handler(DlboxError)
    async def dlbox_error(_request: Request, exc: DlboxError):
        status = 404 if isinstance(exc, NotFound) else 400 if isinstance(exc, UsageError) else 409
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse({"error": {"code": "invalid", "message": f"{place}: {first['msg']}"}}, status_code=422)

    def get_job(job_id: str) -> Job:
        job = store.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} (see `dlbox jobs`)")
        return job

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True, "version": __version__, "pid": os.getpid(), "loop_error": loop.last_error,
                "job_errors": loop.reconciler.errors,
                "capacity": loop.reconciler.capacity.__dict__}

    @app.post("/api/jobs", status_code=201)
    def submit(request: JobRequest, user: User) -> dict:
        job = build_job(store, loop, request, user)
        store.add_job(job)
        loop.wake()
        return job_json(job)

    @app.get("/api/jobs")
    def list_jobs(user: User, all: bool = False) -> list[dict]:
        states = None if all else {JobState.QUEUED, JobState.STARTING, JobState.RUNNING}
        return [job_json(j) for j in store.jobs(states=states)]

    @app.get("/api/jobs/{job_id}")
    def show_job(job_id: str) -> dict:
        return job_json(get_job(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict:
        job = get_job(job_id)
        if not JobState(job.state).is_finished():
            store.update(job.id, cancel_requested=True)
            loop.wake()
        return job_json(store.get_job(job.id))

    @app.get("/api/jobs/{job_id}/logs")
    def logs(job_id: str, follow: bool = False):
        job = get_job(job_id)
        saved = jobs.run_dir(job.id) / "output.log"
        if follow:  # a job still waiting: follow from when it starts (or ends without starting)
            while not job.container_id and not JobState(job.state).is_finished():
                time.sleep(0.2)
                job = get_job(job_id)
        if JobState(job.state).is_finished() or not job.container_id:
            if saved.exists():
                return FileResponse(saved, media_type="text/plain")
            return StreamingResponse(iter([b""]), media_type="text/plain")
        return StreamingResponse(live_logs(store, job, follow), media_type="text/plain")

    @app.get("/api/runs")
    def list_runs(user: User) -> list[dict]:
        return [run_json(store, j) for j in reversed(store.jobs())]

    @app.get("/api/runs/{job_id}")
    def show_run(job_id: str) -> dict:
        return run_json(store, get_job(job_id))

    return app


def live_logs(store: Store, job: Job, follow: bool):
    """Output of a running job from the engine; if the container goes meanwhile, the saved copy."""
    sent = 0
    try:
        for chunk in engine.logs(job.container_id, follow=follow):
            sent += len(chunk)
            yield chunk
    except Exception:  # noqa: BLE001 - the container was collected while we read it
        pass
    if follow:
        saved = jobs.run_dir(job.id) / "output.log"
        deadline = time.monotonic() + 30
        while not JobState(store.get_job(job.id).state).is_finished() and time.monotonic() < deadline:
            time.sleep(0.2)
        if saved.exists():
            yield saved.read_bytes()[sent:]


def build_job(store: Store, loop: Loop, request: JobRequest, user: str) -> Job:
    """Check a request and turn it into a queued job (intent only: the loop starts it)."""
    from dlbox.spec import parse_size

    attrs = engine.image_attrs(request.image)
    jobs.remember_image(attrs)  # the start reads it again by ID
    labels = attrs["Config"].get("Labels") or {}
    mounts = [containers.parse_mount(m, base=Path(request.project_dir) if request.project_dir else None).to_json()
              for m in request.mounts]
    volumes = {}
    workdir = request.workdir
    if request.workspace:
        from dlbox import workspaces

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
    gpu_ids = None
    wanted = gpus.parse(request.gpus)
    if wanted is not None:
        if "nvidia" not in engine.capacity()["runtimes"]:
            raise DlboxError("--gpus: the engine has no GPU runtime (install the NVIDIA container toolkit)",
                             code="no_gpu_runtime")
        gpu_ids = gpus.allocate(wanted, available=capacity.gpus, held={}, share=True)
    return Job(
        id=jobs.new_id(), user=user, name=request.name, state=JobState.QUEUED.value, command=request.command,
        params=request.params, env={}, image_ref=request.image, image_id=attrs["Id"],
        lock_hash=labels.get("dlbox.lock-hash"), spec_hash=labels.get("dlbox.spec-hash"),
        git_commit=request.git_commit, git_dirty=request.git_dirty, git_diff=request.git_diff,
        project_dir=request.project_dir, workdir=workdir, mounts=mounts, volumes=volumes, cpus=cpus, memory=memory,
        shm_size=shm, gpu_ids=gpu_ids, cancel_requested=False, submitted_at=time.time(),
        reproduces=request.reproduces,
    )


def serve() -> None:
    """Run the service in the foreground (the CLI starts it detached)."""
    import uvicorn

    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    guard = open(home / "service.lock", "w")
    try:
        fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DlboxError(f"a dlbox service already runs for {home}") from None
    (home / "service" ).mkdir(parents=True, exist_ok=True)
    (home / "service" / "pid").write_text(str(os.getpid()))
    store = Store()
    loop = Loop(store)
    try:
        loop.run_once()  # catch up with what happened while no service ran, before answering anyone
    except Exception as exc:  # noqa: BLE001 - answer anyway; the loop retries and health shows it
        loop.last_error = f"{type(exc).__name__}: {exc}"
    loop.start()
    app = create_app(store, loop)
    sock = config.socket_path()
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.parent.chmod(0o700)
    sock.unlink(missing_ok=True)
    uvicorn.run(app, uds=str(sock), log_level="warning", timeout_graceful_shutdown=2)
