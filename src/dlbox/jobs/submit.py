"""A job request, checked and turned into a queued job: intent only, the reconcile loop starts it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from dlbox.containers import mount_policy
from dlbox.containers import policy as containers
from dlbox.engine import api as engine
from dlbox.engine import gpus
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.jobs import runner as jobs
from dlbox.jobs.state import JobState
from dlbox.store.db import Job

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
    code_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                  description="a stored code snapshot, mounted read-only at code_dest")
    code_dest: PATH | None = None

    @field_validator("command")
    @classmethod
    def command_size(cls, command: list[str]) -> list[str]:
        if sum(len(arg.encode()) for arg in command) > COMMAND_BYTES:
            raise ValueError(f"at most {COMMAND_BYTES // 1024} KiB in all")
        return command


def build_job(request: JobRequest, user: str, capacity: jobs.Capacity, *, guarded: bool = False) -> Job:
    """Check a request and turn it into a queued job (intent only: the loop starts it).

    guarded: a server user's mounts, checked again at start (mount_policy.check_unswappable)."""
    from dlbox.sizes import parse_size

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
    code = code_of(request, mounts)
    if code:
        workdir = request.workdir or code["dest"]
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
        reproduces=request.reproduces, code_hash=code.get("hash"), code_files=code.get("files"),
        code_bytes=code.get("bytes"), code_dest=code.get("dest"), repo_digests=list(attrs.get("RepoDigests") or []),
    )


def code_of(request: JobRequest, mounts: list[dict]) -> dict:
    """The request's code snapshot, checked: {hash, files, bytes, dest} from the stored manifest, or {}."""
    from dlbox import snapshots

    if not request.code_hash:
        return {}
    try:
        found = snapshots.manifest(snapshots.check_hash(request.code_hash))
    except NotFound as exc:  # the CLI answers this code by sending the snapshot and asking again
        raise NotFound(exc.message, code="snapshot_missing") from None
    dest = snapshots.check_dest(request.code_dest or snapshots.DEFAULT_DEST)
    if any(dest == r or dest.startswith(r + "/") for r in mount_policy.RESERVED_TARGETS):
        raise UsageError(f"code.dest: {dest} is dlbox's own ({', '.join(mount_policy.RESERVED_TARGETS)} are reserved)")
    if any(m["target"].rstrip("/") == dest for m in mounts):
        raise UsageError(f"code.dest: {dest} is also a --mount target; give one of them another place")
    return {"hash": found["hash"], "files": found["files"], "bytes": found["bytes"], "dest": dest}
