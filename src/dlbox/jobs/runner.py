"""Jobs: detached training runs. What the service does to start, watch and finish them.

The store holds intent and history; the engine holds containers. `reconcile` (run by the
service's loop) makes the engine match the store and writes back what the engine says.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dlbox.containers import mount_policy
from dlbox import config, snapshots
from dlbox.jobs import collect
from dlbox.containers import policy as containers
from dlbox.engine import api as engine
from dlbox.engine import gpus
from dlbox.containers import networks
from dlbox.errors import NotFound
from dlbox.jobs.state import JobState, Outages, final_state
from dlbox.redact import mapping as redact  # the recorded env: one set of rules for every listing
from dlbox.store.db import Job, Store

PREFIX = "dlbox-job-"
RUN_DIR = "/dlbox/run"
INPUT_DIR = "/dlbox/input"  # a pipeline's evaluate job: the train run's artifacts, read-only
LIB_DIR = "/opt/dlbox/lib"
CANCEL_GRACE = 10
FINISH_ATTEMPTS = 5  # then the job is lost, with the reason; retried after 1, 2, 4, 8 s
START_PARALLEL = 4


def owner_label() -> str:
    """Which dlbox home a job container belongs to: each service cleans up only its own."""
    return config.home_id()


def new_id() -> str:
    return secrets.token_hex(6)


def run_dir(job_id: str) -> Path:
    """The service's record of a run (log, artifacts): root-owned, never mounted into the job."""
    return config.home() / "runs" / job_id


def job_dir(job_id: str) -> Path:
    """The job's own folder, mounted at RUN_DIR: everything in it is the job's to forge."""
    return run_dir(job_id) / "job"


@dataclass(frozen=True)
class Capacity:
    cpus: float
    memory: int | None
    gpus: list[str]

    @classmethod
    def detect(cls) -> Capacity:
        """DLBOX_CAPACITY=cpus=2,memory=8g,gpus=0+1 when set; otherwise what the engine's machine has."""
        from dlbox.sizes import parse_size

        declared = dict(part.split("=", 1) for part in os.environ.get("DLBOX_CAPACITY", "").split(",") if "=" in part)
        machine = engine.capacity()
        return cls(
            cpus=float(declared.get("cpus") or machine["cpus"] or 1),
            memory=parse_size(declared["memory"]) if "memory" in declared else machine["memory"],
            gpus=declared["gpus"].split("+") if declared.get("gpus") else gpus.inventory(),
        )


def fits(job: Job, running: list[Job], capacity: Capacity, busy_gpus: set[str] = frozenset()) -> bool:
    return gpus_for(job, running, capacity, busy_gpus) is not None


def gpus_for(job: Job, running: list[Job], capacity: Capacity, busy_gpus: set[str] = frozenset()) -> list[str] | None:
    """The GPU IDs `job` would get next to `running` ([] for none), or None if it does not fit now."""
    cpus = sum(j.cpus for j in running) + job.cpus
    if cpus > capacity.cpus + 1e-9:
        return None
    if job.memory and capacity.memory:
        if sum(j.memory or 0 for j in running) + job.memory > capacity.memory:
            return None
    busy = set(busy_gpus) | {g for j in running for g in (j.gpu_ids or [])}
    request = job.gpu_request if job.gpu_request is not None else job.gpu_ids
    return gpus.choose(request, capacity.gpus, busy)


def pick(queued: list[Job], running: list[Job], capacity: Capacity, busy_gpus: set[str] = frozenset()) -> list[Job]:
    """Which queued jobs start now: oldest first, but the user with the fewest running jobs goes first.

    Pure but for one thing: each chosen job's gpu_ids is set to the GPUs free for it now
    (`busy_gpus`: held by workspaces). A job that does not fit waits; smaller jobs behind it
    may still start (no head-of-line blocking), and fair share is recomputed after every pick.
    """
    running = list(running)
    waiting = sorted(queued, key=lambda j: j.submitted_at)
    chosen = []
    while waiting:
        share: dict[str, int] = {}
        for j in running:
            share[j.user] = share.get(j.user, 0) + 1
        order = sorted(waiting, key=lambda j: (share.get(j.user, 0), j.submitted_at))
        nxt, ids = next(((j, ids) for j in order
                         if (ids := gpus_for(j, running, capacity, busy_gpus)) is not None), (None, None))
        if nxt is None:
            break
        nxt.gpu_ids = ids or None
        chosen.append(nxt)
        running.append(nxt)
        waiting.remove(nxt)
    return chosen


# --- starting and finishing -------------------------------------------------------------------


def helper_path() -> Path:
    """Where helper_dir keeps the helper (no file made)."""
    return config.home() / "lib"


def helper_dir() -> Path:
    """A host folder holding the metrics helper, bind-mounted read-only at LIB_DIR in every job.

    A bind costs nothing at start; copying the file in (put_archive) cost ~0.1 s per job.
    """
    directory = helper_path()
    source = resources.files("dlbox.build").joinpath("files/dlbox_metrics.py").read_bytes()
    target = directory / "dlbox_metrics.py"
    if not target.is_file() or target.read_bytes() != source:  # new home, or a newer dlbox
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        partial = directory / f".dlbox_metrics.py.{os.getpid()}"
        partial.write_bytes(source)
        partial.chmod(0o644)
        partial.replace(target)
    return directory


def image_attrs(image_id: str) -> dict:
    """The engine's image record, read once per image ID (an ID names immutable content)."""
    if image_id not in _IMAGE_ATTRS:
        if len(_IMAGE_ATTRS) > 256:
            _IMAGE_ATTRS.clear()
        remember_image(engine.image_attrs(image_id))
    return _IMAGE_ATTRS[image_id]


def remember_image(attrs: dict) -> None:
    _IMAGE_ATTRS[attrs["Id"]] = attrs


_IMAGE_ATTRS: dict[str, dict] = {}


@dataclass(frozen=True)
class JobPlan:
    """A job's container, decided: what `launch` makes, and what the store records of it."""

    spec: containers.ContainerSpec
    env: dict[str, str]  # the environment to record, secrets redacted
    uid: int  # who owns the job's own folder (the container's user)
    gid: int


def start(store: Store, job: Job) -> None:
    """queued -> starting -> running: make the container and start it; any failure fails the job."""
    try:
        planned = prepare(job)
    except Exception as exc:  # noqa: BLE001 - the image went, or the run directory cannot be made
        store.transition(job.id, JobState.FAILED, reason=f"could not start: {_message(exc)}")
        return
    store.transition(job.id, JobState.STARTING, env=planned.env, gpu_ids=job.gpu_ids)
    try:
        container_id = launch(planned)
    except Exception as exc:  # noqa: BLE001 - any failure to start is the job's failure, said once
        store.transition(job.id, JobState.FAILED, reason=f"could not start: {_message(exc)}")
        return
    store.transition(job.id, JobState.RUNNING, container_id=container_id)


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


def prepare(job: Job) -> JobPlan:
    """The facts (the image's record), the plan, and what must be on the host before the container:
    the job's own folder, its mounts' sources rechecked, the metrics helper."""
    planned = plan(job, image_attrs(job.image_id))
    make_job_dir(job, planned.uid, planned.gid)
    mount_policy.recheck([mount_policy.Mount(**m) for m in job.mounts])  # a queued job may start long after
    helper_dir()  # its mounts were checked
    if job.code_hash:
        snapshots.tree(job.code_hash)  # removed meanwhile (gc keeps referenced ones): NotFound, the job fails
    if job.input_run:  # the service's own copy (0755 folders, 0644 files); made if that run kept no artifacts
        (run_dir(job.input_run) / "artifacts").mkdir(mode=0o755, exist_ok=True)
    return planned


def plan(job: Job, image: dict) -> JobPlan:
    """The job's container from its row and its image's engine record (`image`: Config.Labels, Config.Env).

    Pure: no engine, no files made. A read-only root with tmpfs scratch, the job's own folder at
    RUN_DIR, the helper read-only at LIB_DIR, the row's limits and GPUs, the owner's network."""
    labels = image["Config"].get("Labels") or {}
    user = containers.run_as(labels)  # numeric uid:gid: never the image's root, never group 0
    uid, gid = containers.uid_gid(user)
    image_env = dict(item.split("=", 1) for item in image["Config"].get("Env") or [])
    env = {"DLBOX_RUN_DIR": RUN_DIR, "DLBOX_JOB_ID": job.id,
           "PYTHONPATH": ":".join(filter(None, [LIB_DIR, image_env.get("PYTHONPATH")])),
           **({"DLBOX_INPUT_DIR": INPUT_DIR} if job.input_run else {}),
           **{f"DLBOX_PARAM_{re.sub(r'[^A-Za-z0-9_]', '_', k).upper()}": v for k, v in job.params.items()}}
    spec = containers.ContainerSpec(
        name=f"{PREFIX}{job.id}", image=job.image_id, command=list(job.command), user=user,
        labels={"dlbox.kind": "job", "dlbox.job": job.id, "dlbox.owner": job.user, "dlbox.home": owner_label(),
                **({"dlbox.gpus": ",".join(job.gpu_ids)} if job.gpu_ids else {})},
        mounts=[mount_policy.Mount(**m) for m in job.mounts] + [mount_policy.Mount(str(job_dir(job.id)), RUN_DIR),
                                                              mount_policy.Mount(str(helper_path()), LIB_DIR, True)]
               + code_mounts(job) + input_mounts(job),
        volumes=dict(job.volumes or {}),
        limits=containers.Limits(memory=job.memory, cpus=job.cpus, shm_size=job.shm_size or containers.DEFAULT_SHM),
        gpu_ids=job.gpu_ids, env=env, workdir=job.workdir,
        network=networks.for_owner(job.user),  # shared with the owner's workspaces; other users' are apart
        healthcheck={"test": ["NONE"]},  # a job's health is its exit code (the reconciler's); none of the image's
        read_only=True, tmpfs=containers.scratch(user, containers.image_home(labels)),  # writes: run dir, /tmp, HOME
    )
    return JobPlan(spec=spec, env=redact({**image_env, **env}), uid=uid, gid=gid)


def code_mounts(job: Job) -> list[mount_policy.Mount]:
    """The job's code snapshot, read-only at its place (the store's folder is the service's: 0555/0444)."""
    if not job.code_hash:
        return []
    return [mount_policy.Mount(str(snapshots.path_of(job.code_hash) / "tree"), job.code_dest or snapshots.DEFAULT_DEST,
                               True)]


def input_mounts(job: Job) -> list[mount_policy.Mount]:
    """A pipeline's evaluate job reads the train run's artifacts (the service's copy) read-only; the store
    field is set by the service only, never by a request."""
    if not job.input_run:
        return []
    return [mount_policy.Mount(str(run_dir(job.input_run) / "artifacts"), INPUT_DIR, True)]


def launch(planned: JobPlan) -> str:
    """Create and start the planned container; on failure none of that name is left (the job is
    started again from scratch, or fails)."""
    try:
        container_id = engine.create_container(planned.spec)
        engine.start(container_id)
    except Exception:
        existing = engine.container_attrs(planned.spec.name)
        if existing:
            engine.remove_container(existing["Id"])
        raise
    return container_id


def make_job_dir(job: Job, uid: int, gid: int) -> Path:
    """runs/ID (root's, 0700: no host user can reach in) holding runs/ID/job, the job's to write."""
    record = run_dir(job.id)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.mkdir(mode=0o700, exist_ok=True)
    record.chmod(0o700)
    directory = job_dir(job.id)
    if directory.exists():  # a start that failed half-way: begin again with a fresh folder
        collect.remove_tree(directory)
    directory.mkdir(mode=0o700)
    (directory / "artifacts").mkdir()
    (directory / "params.json").write_text(json.dumps(job.params))
    for path in (directory, directory / "artifacts", directory / "params.json"):
        os.chown(path, uid, gid)
    return directory


def finish(store: Store, job: Job, attrs: dict | None, outages: Outages | None = None) -> None:
    """running -> finishing -> final: exit code, OOM, logs, metrics, artifacts, then the container goes.

    Raises if collecting fails (disk full, database down); the reconciler retries with a back-off
    and in the end marks the job lost. The job stops holding capacity as soon as it is finishing.
    `outages`: when the engine could not be reached; a job stopped then was stopped by the engine.
    """
    if attrs is not None:
        state = attrs["State"]
        exit_code = int(state.get("ExitCode", -1))
        oom = bool(state.get("OOMKilled")) or (exit_code == 137 and bool(engine.oom_events(attrs["Id"], since=int(
            job.started_at or job.submitted_at) - 1)))
    else:  # gone while finishing: what was recorded when it ended
        exit_code, oom = (job.exit_code if job.exit_code is not None else -1), False
    if job.state != JobState.FINISHING.value:
        job = store.transition(job.id, JobState.FINISHING, exit_code=exit_code)
    by_engine = (attrs is not None and outages is not None
                 and outages.stopped_by_engine(exit_code, engine.finished_at(attrs), time.time()))
    final, reason = final_state(exit_code=exit_code, oom_killed=oom, cancel_requested=job.cancel_requested,
                                engine_restart=by_engine)
    notes = collect.Notes()
    if attrs is not None:
        save_logs(job.id, attrs["Id"], notes)
    elif not (run_dir(job.id) / "output.log").exists():
        notes.add("log: the container was gone before its log was saved")
    collect_outputs(store, job, notes)
    record_image_files(store, job)
    store.transition(job.id, final, reason=reason, exit_code=exit_code, notes=notes.as_list() or None)
    if attrs is not None:
        engine.remove_container(attrs["Id"])
    collect.remove_tree(job_dir(job.id))  # its outputs are copied out; the job's own folder goes


def save_logs(job_id: str, container_id: str, notes: collect.Notes | None = None) -> None:
    """The container's whole output, streamed into runs/ID/output.log (capped by the log limit)."""
    collect.save_log(engine.logs(container_id), run_dir(job_id), collect.Limits.from_env().log_bytes,
                     notes if notes is not None else collect.Notes())


def collect_outputs(store: Store, job: Job, notes: collect.Notes) -> None:
    """Metrics and artifacts out of the job's folder, without following anything the job made."""
    limits = collect.Limits.from_env()
    source = job_dir(job.id)
    if not source.is_dir():  # a run from before run folders were split keeps what it has
        return
    store.replace_metrics(job.id, collect.read_metrics(source, limits, notes))
    budget, why = limits.artifact_bytes, "the artifact limit"
    room = storage_left(store, job)
    if room is not None and room < budget:
        budget, why = room, f"quota storage: {job.user} may keep {_size(storage_quota(store, job.user))}"
    dest = run_dir(job.id) / "artifacts"
    if dest.exists():  # an earlier attempt got this far: copy again from the start
        collect.remove_tree(dest)
    manifest = collect.copy_artifacts(source, dest, budget, notes, why=why)
    (run_dir(job.id) / "artifacts.json").write_text(json.dumps(manifest.to_json()))
    store.update(job.id, artifact_bytes=manifest.bytes)


def storage_quota(store: Store, user: str) -> int | None:
    account = store.get_user(user)
    return (account.quota or {}).get("storage") if account is not None else None


def storage_left(store: Store, job: Job) -> int | None:
    """Bytes `job.user` may still keep under their storage quota (None: no quota): artifacts and code
    snapshots count."""
    quota = storage_quota(store, job.user)
    if quota is None:
        return None
    return max(0, quota - store.artifact_bytes(job.user, besides=job.id) - store.snapshot_bytes(job.user))


def _size(value: int | None) -> str:
    from dlbox.sizes import format_size

    return format_size(value) if value else "0"


def artifacts(job_id: str) -> dict:
    """What was kept of a run's artifacts: files (path, size) and links (path, target), never followed."""
    manifest = run_dir(job_id) / "artifacts.json"
    if manifest.is_file():
        return json.loads(manifest.read_text())
    found = {"files": [], "links": [], "bytes": 0}  # a run from before manifests: list it, following nothing
    root = run_dir(job_id) / "artifacts"
    for folder, dirs, names in os.walk(root):  # os.walk does not descend into links to folders
        for name in sorted(names + [d for d in dirs if (Path(folder) / d).is_symlink()]):
            path = Path(folder) / name
            info = path.lstat()
            if path.is_symlink():
                found["links"].append({"path": str(path.relative_to(root)), "target": os.readlink(path)})
            elif stat.S_ISREG(info.st_mode):
                found["files"].append({"path": str(path.relative_to(root)), "size": info.st_size})
                found["bytes"] += info.st_size
    found["files"].sort(key=lambda f: f["path"])
    return found


def record_image_files(store: Store, job: Job) -> None:
    """Keep the image's lock and spec with the run, so it can be rebuilt if the image goes."""
    if job.lock_text:
        return
    from dlbox.build.images import LOCK_PATH, SPEC_PATH

    if job.image_id not in _IMAGE_FILES:  # images are immutable: read each one's files once
        try:
            found = engine.read_files(job.image_id, [LOCK_PATH, SPEC_PATH])
        except NotFound:  # the image was removed while the job ran: the record keeps its hashes only
            found = {}
        _IMAGE_FILES[job.image_id] = ((found.get(LOCK_PATH) or b"").decode() or None,
                                      (found.get(SPEC_PATH) or b"").decode() or None)
    lock_text, spec_text = _IMAGE_FILES[job.image_id]
    store.update(job.id, lock_text=lock_text, spec_text=spec_text)


_IMAGE_FILES: dict[str, tuple[str | None, str | None]] = {}


# --- the reconcile pass -------------------------------------------------------------------------


class Reconciler:
    def __init__(self, store: Store, capacity: Capacity):
        self.store = store
        self.capacity = capacity
        self._stopping: set[str] = set()
        self.errors: dict[str, str] = {}  # the last error met while watching each job
        self._sampled: dict[str, float] = {}
        self._retry: dict[str, tuple[int, float]] = {}  # job -> (failed finish attempts, when to try next)
        self.outages = Outages()  # when the engine was gone: the loop's event watcher tells

    def run_once(self) -> None:
        self.start_queued()  # a submit woke us: start it before the slower pass over the engine
        found = {(a["Config"]["Labels"] or {}).get("dlbox.job"): a
                 for a in engine.list_containers([engine.MANAGED, "dlbox.kind=job", f"dlbox.home={owner_label()}"])}
        for job in self.store.jobs(states={JobState.STARTING, JobState.RUNNING, JobState.FINISHING}):
            attrs = found.pop(job.id, None)
            try:
                self._watch(job, attrs)
            except Exception as exc:  # noqa: BLE001 - one job's trouble must not stop the others
                self.errors[job.id] = f"{type(exc).__name__}: {exc}"
        for job_id, attrs in found.items():  # containers whose job is not active: finished or unknown
            known = self.store.get_job(job_id) if job_id else None
            if known is None or JobState(known.state).is_finished():
                engine.remove_container(attrs["Id"])
        self.start_queued()

    def start_queued(self) -> None:
        """Start the queued jobs that fit. Ended containers not yet finished still count as busy."""
        queued = []
        for job in self.store.jobs(states={JobState.QUEUED}):
            if job.cancel_requested:
                self.store.transition(job.id, JobState.CANCELLED, reason="cancelled while queued")
            else:
                queued.append(job)
        if not queued:
            return
        active = self.store.jobs(states={JobState.STARTING, JobState.RUNNING})
        chosen = pick(queued, active, self.capacity, self._workspace_gpus() if self.capacity.gpus else set())
        if len(chosen) <= 1:
            for job in chosen:
                start(self.store, job)
            return
        # The engine's create+start takes ~0.3 s and most of it is waiting: start them side by side.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(len(chosen), START_PARALLEL), thread_name_prefix="start") as pool:
            list(pool.map(lambda job: start(self.store, job), chosen))

    def _workspace_gpus(self) -> set[str]:
        """GPUs that workspaces hold (their dlbox.gpus label): a job is not given them."""
        return {g for c in engine.container_summaries([engine.MANAGED, "dlbox.kind=workspace", "dlbox.gpus"])
                for g in c["Labels"].get("dlbox.gpus", "").split(",") if g}

    def _watch(self, job: Job, attrs: dict | None) -> None:
        if job.state == JobState.FINISHING.value:
            self._finish(job, attrs)
            return
        if attrs is None:
            if job.state == JobState.STARTING.value and not job.container_id:
                # the service stopped between deciding and creating: decide again
                self.store.transition(job.id, JobState.QUEUED, reason="requeued after a service restart")
            else:
                self.store.transition(job.id, JobState.LOST, reason="its container disappeared")
            return
        status = attrs["State"]["Status"]
        if status == "created":
            if job.state == JobState.STARTING.value:
                engine.start(attrs["Id"])
                self.store.transition(job.id, JobState.RUNNING, container_id=attrs["Id"])
            return
        if job.state == JobState.STARTING.value:
            self.store.transition(job.id, JobState.RUNNING, container_id=attrs["Id"])
        if attrs["State"]["Running"]:
            self._sample_memory(job, attrs["Id"])
            if job.cancel_requested and job.id not in self._stopping:
                self._stopping.add(job.id)
                import threading

                threading.Thread(target=self._stop, args=(attrs["Id"], job.id), daemon=True).start()
            return
        self._stopping.discard(job.id)
        self._sample_memory(job, attrs["Id"], final=True)
        self._finish(self.store.get_job(job.id), attrs)

    def _finish(self, job: Job, attrs: dict | None) -> None:
        """finish(), retried with a back-off when it fails; after FINISH_ATTEMPTS the job is lost."""
        attempts, not_before = self._retry.get(job.id, (0, 0.0))
        if time.monotonic() < not_before:
            return  # never collect again every second
        try:
            finish(self.store, job, attrs, self.outages)
            self._retry.pop(job.id, None)
            self.errors.pop(job.id, None)
            return
        except Exception as exc:  # noqa: BLE001 - disk full, database down, engine gone: said, then retried
            attempts += 1
            reason = _message(exc)
            self.errors[job.id] = f"finishing (attempt {attempts} of {FINISH_ATTEMPTS}): {reason}"
        self._retry[job.id] = (attempts, time.monotonic() + min(2 ** (attempts - 1), 30))
        try:
            self.store.update(job.id, finish_attempts=attempts)
            if attempts >= FINISH_ATTEMPTS:
                self.store.transition(job.id, JobState.LOST,
                                      reason=f"its results could not be collected after {attempts} attempts: {reason}")
                self._retry.pop(job.id, None)
                if attrs is not None:
                    engine.remove_container(attrs["Id"])
        except Exception as exc:  # noqa: BLE001 - the store itself fails: try again after the back-off
            self.errors[job.id] = f"finishing: {reason}; recording that failed too: {_message(exc)}"

    def _stop(self, container_id: str, job_id: str) -> None:
        try:
            engine.stop(container_id, timeout=CANCEL_GRACE)  # SIGTERM, then SIGKILL after the grace period
        except Exception as exc:  # noqa: BLE001 - retried by the next pass while the container still runs
            self.errors[job_id] = f"cancelling: {_message(exc)}"
            time.sleep(1)
            self._stopping.discard(job_id)

    def _sample_memory(self, job: Job, container_id: str, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._sampled.get(job.id, 0) < 2:
            return
        self._sampled[job.id] = now
        peak = engine.peak_memory(container_id)
        if peak and peak > (job.peak_memory or 0):
            self.store.update(job.id, peak_memory=peak)
