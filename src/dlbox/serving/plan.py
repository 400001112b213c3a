"""A deployment's container, decided: pure, plain inputs in, a `containers.ContainerSpec` out.

It runs the model's own training image (by ID) as the image's non-root uid:gid, hardened like a job
(read-only root with tmpfs scratch, no capabilities: the engine's floor) plus what a long-running
service needs: a healthcheck (CIS 5.27), restart on failure (at most 5, CIS 5.15), ports on one
interface (127.0.0.1 unless told). Every mount is read-only: versions, the server program and the
label config; the container can write nothing the host reads back.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from dlbox import config
from dlbox.containers import networks
from dlbox.containers import policy as containers
from dlbox.containers.mount_policy import Mount
from dlbox.errors import UsageError

PREFIX = "dlbox-deploy-"
REST_PORT, GRPC_PORT = 8501, 8500  # TF Serving's own, inside the container
MODELS = "/models"
LIB = "/opt/dlbox/serving"  # dlbox_serving.py and the tensorflow_serving protos
CONFIG_DIR = "/dlbox/serving/config"  # a folder, not a file: a bind of a file misses atomic replaces
PROGRAM = f"{LIB}/dlbox_serving.py"
LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
RESTART = {"Name": "on-failure", "MaximumRetryCount": 5}
# TF takes seconds to load; the probe is the server's own /healthz (a version is AVAILABLE).
HEALTHCHECK = {"test": ["CMD", "python", PROGRAM, "--probe", "--rest-port", str(REST_PORT)],
               "interval": containers.seconds(10), "timeout": containers.seconds(5), "retries": 3,
               "start_period": containers.seconds(180)}


REPLICA_PREFIX = "dlbox-replica-"
FRONT_DIR = "/dlbox/serving/front"  # the replicas file's folder (a folder: atomic replaces are seen)
FRONT_MEMORY = 256 * 1024**2  # a proxy: python and grpcio, no TensorFlow
MAX_REPLICAS = 8


def container_name(name: str) -> str:
    """The container holding a deployment's published ports: its server, or the front of its replicas."""
    return PREFIX + name


def replica_name(name: str, generation: int, index: int) -> str:
    return f"{REPLICA_PREFIX}{name}-g{int(generation)}-r{int(index)}"


def check(versions: dict[int, Path], labels: dict[str, int], model_name: str, serve: list[int]) -> None:
    if not versions:
        raise UsageError("a deployment needs at least one model version")
    for number, path in versions.items():
        if not isinstance(number, int) or number < 0:
            raise UsageError(f"version {number!r}: versions are integers from 0")
        if not Path(path).is_absolute():
            raise UsageError(f"version {number}: {path} is not an absolute path")
    for label, number in labels.items():
        if not LABEL.fullmatch(label):
            raise UsageError(f"label {label!r}: letters, digits, '-' or '_' (at most 64)")
        if number not in versions:
            raise UsageError(f"label {label} -> {number}: no such version in this deployment")
    if unknown := [n for n in serve if n not in versions]:
        raise UsageError(f"versions to serve {unknown}: not in this deployment")
    if not MODEL_NAME.fullmatch(model_name):
        raise UsageError(f"model name {model_name!r}: letters, digits, '.', '_' or '-' (at most 100)")


def plan(name: str, owner: str, image_id: str, versions: dict[int, Path], labels: dict[str, int],
         model_name: str, port: int, grpc_port: int | None, host: str = "127.0.0.1", memory: int | None = None,
         *, lib_dir: Path, config_dir: Path, image_labels: dict[str, str] | None = None,
         serve: list[int] = (), cpus: float | None = None, batch_max: int = 0, batch_timeout_ms: float = 2.0,
         access_log: bool = True, models_dir: Path | None = None,
         replica: tuple[int, int] | None = None) -> containers.ContainerSpec:
    """The serving container of deployment `name` (the label config itself is written by apply).

    `models_dir`: one host folder holding a folder per version (N/), mounted read-only at /models, so
    versions linked into it later are served without a new container; without it, each version's folder
    is mounted at /models/N and the set is fixed for the container's life.

    `replica` (generation, index): one of the replicas behind the deployment's front (see `front`):
    the same server, named by generation and index, with no published port (the front reaches it on
    the owner's network)."""
    containers.check_name(name, "deployment name")
    check(versions, labels, model_name, list(serve))
    user = containers.run_as(image_labels)
    command = ["python", PROGRAM, "--model-name", model_name, "--models", MODELS,
               "--config", f"{CONFIG_DIR}/config.json", "--rest-port", str(REST_PORT),
               "--grpc-port", str(GRPC_PORT if grpc_port else 0)]
    if batch_max > 1:
        command += ["--batch-max", str(batch_max), "--batch-timeout-ms", f"{batch_timeout_ms:g}"]
    if not access_log:
        command.append("--no-access-log")
    if models_dir is not None:
        mounts = [Mount(str(models_dir), MODELS, read_only=True)]
    else:
        mounts = [Mount(str(path), str(PurePosixPath(MODELS) / str(n)), read_only=True)
                  for n, path in sorted(versions.items())]
    mounts += [Mount(str(lib_dir), LIB, read_only=True), Mount(str(config_dir), CONFIG_DIR, read_only=True)]
    ports = {REST_PORT: (host, port)} | ({GRPC_PORT: (host, grpc_port)} if grpc_port else {})
    labels = {"dlbox.kind": "deployment", "dlbox.deployment": name, "dlbox.owner": owner,
              "dlbox.home": config.home_id(), "dlbox.model": model_name,
              "dlbox.versions": ",".join(str(n) for n in sorted(versions)),
              "dlbox.layout": "folder" if models_dir is not None else "mounts",
              "dlbox.rest-port": str(port), "dlbox.grpc-port": str(grpc_port or ""), "dlbox.host": host}
    if replica is not None:
        generation, index = replica
        ports = {}
        labels |= {"dlbox.kind": "deployment-replica", "dlbox.generation": str(generation),
                   "dlbox.replica": str(index), "dlbox.rest-port": "", "dlbox.grpc-port": "", "dlbox.host": ""}
    return containers.ContainerSpec(
        name=replica_name(name, *replica) if replica else container_name(name), image=image_id, command=command,
        user=user, labels=labels, mounts=mounts, limits=containers.Limits(memory=memory, cpus=cpus),
        ports=ports, env={"PYTHONPATH": LIB, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "1"},
        network=networks.for_owner(owner),
        read_only=True, tmpfs=containers.scratch(user, containers.image_home(image_labels)),
        healthcheck=HEALTHCHECK, restart=RESTART,
    )


def label_config(labels: dict[str, int], serve: list[int] = ()) -> dict:
    """What the server reads: the labels, and versions kept loaded without one."""
    return {"labels": dict(sorted(labels.items())), "versions": sorted(set(serve))}


def front(name: str, owner: str, image_id: str, model_name: str, port: int, grpc_port: int | None,
          host: str = "127.0.0.1", *, lib_dir: Path, front_dir: Path,
          image_labels: dict[str, str] | None = None) -> containers.ContainerSpec:
    """The front of deployment `name`'s replicas: the same program with --front, holding the published
    ports, following the replicas file (front_dir/backends.json, read-only) the host rewrites. Hardened
    like the replicas; a small memory limit (it loads no model)."""
    containers.check_name(name, "deployment name")
    if not MODEL_NAME.fullmatch(model_name):
        raise UsageError(f"model name {model_name!r}: letters, digits, '.', '_' or '-' (at most 100)")
    user = containers.run_as(image_labels)
    command = ["python", PROGRAM, "--front", f"{FRONT_DIR}/backends.json", "--rest-port", str(REST_PORT),
               "--grpc-port", str(GRPC_PORT if grpc_port else 0)]
    ports = {REST_PORT: (host, port)} | ({GRPC_PORT: (host, grpc_port)} if grpc_port else {})
    return containers.ContainerSpec(
        name=container_name(name), image=image_id, command=command, user=user,
        labels={"dlbox.kind": "deployment", "dlbox.role": "front", "dlbox.deployment": name, "dlbox.owner": owner,
                "dlbox.home": config.home_id(), "dlbox.model": model_name, "dlbox.layout": "replicas",
                "dlbox.rest-port": str(port), "dlbox.grpc-port": str(grpc_port or ""), "dlbox.host": host},
        mounts=[Mount(str(lib_dir), LIB, read_only=True), Mount(str(front_dir), FRONT_DIR, read_only=True)],
        limits=containers.Limits(memory=FRONT_MEMORY), ports=ports,
        env={"PYTHONPATH": LIB, "PYTHONDONTWRITEBYTECODE": "1"}, network=networks.for_owner(owner),
        read_only=True, tmpfs=containers.scratch(user, containers.image_home(image_labels)),
        healthcheck=HEALTHCHECK | {"start_period": containers.seconds(600)}, restart=RESTART,
    )


def backends(generation: int, image_id: str, names: list[str], grpc: bool,
             previous: dict | None = None) -> dict:
    """The replicas file the front follows: the generation to serve, its replicas by container name
    (the owner's network resolves them), and the generation serving until that one is ready.
    `image` is the host's note of the generation's image; the front ignores it."""
    return {"generation": int(generation), "image": image_id,
            "backends": [{"host": n, "rest": REST_PORT, "grpc": GRPC_PORT if grpc else 0} for n in names],
            "previous": previous}
