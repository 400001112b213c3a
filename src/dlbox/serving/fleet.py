"""A deployment as a front and N replicas: make it, replace a replica, move it to another image, remove it.

The front (`dlbox-deploy-NAME`) holds the published ports and follows the replicas file the host writes
(FOLDER/front/backends.json, mounted read-only). Replicas (`dlbox-replica-NAME-gG-rI`) are the model
server of `plan`, without ports, sharing their generation's folder: gG/models (linked versions) and
gG/config (labels). A move to a version of the same image is a label move in the generation (each replica
loads and warms it, then switches). A version of another image is a new generation: its replicas start,
the replicas file names it (and the old one as `previous`), the front moves traffic once every new
replica is ready, the old one drains, and `finish_generation` removes it: no request is lost.
"""

from __future__ import annotations

import http.client
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from dlbox import config
from dlbox.engine import api as engine
from dlbox.errors import DlboxError
from dlbox.serving import lib
from dlbox.serving.deploy import (Deployment, _url_host, current_labels, deployment_dir, free_port, link_versions,
                                  linked_versions, write_config, write_json)
from dlbox.serving.plan import GRPC_PORT, backends, container_name, front, plan, replica_name


@dataclass(frozen=True)
class Shape:
    """What every container of one deployment shares."""

    owner: str
    model_name: str
    memory: int | None = None
    grpc: bool = True
    batch_max: int = 0
    batch_timeout_ms: float = 2.0
    access_log: bool = True


def front_dir(name: str) -> Path:
    return deployment_dir(name) / "front"


def generation_dir(name: str, generation: int) -> Path:
    return deployment_dir(name) / f"g{int(generation)}"


def current(name: str) -> dict | None:
    """The replicas file as last written here: generation, image, backends, previous."""
    try:
        data = json.loads((front_dir(name) / "backends.json").read_text())
        return data if isinstance(data, dict) and isinstance(data.get("generation"), int) else None
    except (OSError, ValueError):
        return None


def generation_state(name: str, generation: int) -> tuple[list[int], dict]:
    """A generation's linked versions and its label config ({} when there is none)."""
    folder = generation_dir(name, generation)
    return linked_versions(name, folder / "models"), current_labels(name, folder / "config") or {}


def replicas(name: str) -> list[dict]:
    """The inspected replica containers of deployment `name` (every generation), in this home."""
    return engine.list_containers([engine.MANAGED, "dlbox.kind=deployment-replica", f"dlbox.deployment={name}",
                                   f"dlbox.home={config.home_id()}"])


def _front_spec(name: str, shape: Shape, image_id: str, port: int, grpc_port: int | None, host: str):
    image = engine.image_attrs(image_id)
    return front(name, shape.owner, image["Id"], shape.model_name, port, grpc_port, host, lib_dir=lib.prepare(),
                 front_dir=front_dir(name), image_labels=image["Config"].get("Labels") or {})


def _start(spec) -> str:
    """Create and start `spec`'s container, replacing a dead one of that name; nothing left on failure."""
    old = engine.container_attrs(spec.name)
    if old is not None:
        engine.remove_container(old["Id"])
    container_id = engine.create_container(spec)
    try:
        engine.start(container_id)
    except BaseException:
        engine.remove_container(container_id)
        raise
    return container_id


def start_replica(name: str, shape: Shape, generation: int, index: int, image_id: str) -> str:
    """Replica `index` of `generation`, from the generation's folder as it is now (versions and labels)."""
    image = engine.image_attrs(image_id)
    versions, labels = generation_state(name, generation)
    folder = generation_dir(name, generation)
    spec = plan(name, shape.owner, image["Id"], {n: Path("/") for n in versions},
                {str(k): int(v) for k, v in (labels.get("labels") or {}).items()}, shape.model_name, 0,
                GRPC_PORT if shape.grpc else None, memory=shape.memory, lib_dir=lib.prepare(),
                config_dir=folder / "config", image_labels=image["Config"].get("Labels") or {},
                models_dir=folder / "models", serve=[int(v) for v in labels.get("versions") or ()],
                batch_max=shape.batch_max, batch_timeout_ms=shape.batch_timeout_ms, access_log=shape.access_log,
                replica=(generation, index))
    return _start(spec)


def start_front(name: str, shape: Shape, image_id: str, port: int, grpc_port: int | None, host: str) -> str:
    return _start(_front_spec(name, shape, image_id, port, grpc_port, host))


def _prepare(name: str, generation: int, versions: dict[int, Path], labels: dict[str, int], serve) -> None:
    folder = generation_dir(name, generation)
    link_versions(name, versions, folder / "models")
    write_config(name, labels, list(serve), folder / "config")


def up(name: str, shape: Shape, image_id: str, versions: dict[int, Path], labels: dict[str, int], serve=(),
       port: int | None = None, grpc_port: int | None = None, host: str = "127.0.0.1", count: int = 1) -> Deployment:
    """Start deployment `name`: generation 1's `count` replicas behind a front; all of it or nothing."""
    port = port or free_port(host)
    grpc_port = (grpc_port or free_port(host)) if shape.grpc else None
    spec = _front_spec(name, shape, image_id, port, grpc_port, host)
    if engine.container_attrs(spec.name) is not None:  # before any folder is touched
        raise DlboxError(f"a deployment named {name} already exists", code="exists")
    made = []
    try:
        _prepare(name, 1, versions, labels, serve)
        names = [replica_name(name, 1, i) for i in range(count)]
        write_json(front_dir(name), "backends.json", backends(1, spec.image, names, shape.grpc))
        container_id = engine.create_container(spec)  # the ports first: a taken one fails before any replica
        made.append(container_id)
        engine.start(container_id)
        for i in range(count):
            made.append(start_replica(name, shape, 1, i, spec.image))
    except Exception:
        for container_id in made:
            engine.remove_container(container_id)
        shutil.rmtree(deployment_dir(name), ignore_errors=True)
        raise
    return Deployment(name, made[0], shape.model_name, f"http://{_url_host(host)}:{port}",
                      f"{_url_host(host)}:{grpc_port}" if grpc_port else None)


def move_labels(name: str, generation: int, labels: dict[str, int], serve=(), add: dict[int, Path] | None = None):
    """Same image: link versions into the generation, then point its labels (each replica loads, warms,
    switches, drains)."""
    _prepare(name, generation, add or {}, labels, serve)


def begin_generation(name: str, shape: Shape, image_id: str, versions: dict[int, Path], labels: dict[str, int],
                     serve=(), count: int = 1) -> int:
    """Start the next generation (another image) beside the current one; the front moves to it once all
    of it is ready. Its number; nothing of it is left when a replica cannot start."""
    now = current(name)
    if now is None:
        raise DlboxError(f"deployment {name} has no replicas file", code="invalid")
    generation = now["generation"] + 1
    image = engine.image_attrs(image_id)
    names = [replica_name(name, generation, i) for i in range(count)]
    made = []
    try:
        _prepare(name, generation, versions, labels, serve)
        for i in range(count):
            made.append(start_replica(name, shape, generation, i, image["Id"]))
    except Exception:
        for container_id in made:
            engine.remove_container(container_id)
        shutil.rmtree(generation_dir(name, generation), ignore_errors=True)
        raise
    previous = {k: now[k] for k in ("generation", "image", "backends")}
    write_json(front_dir(name), "backends.json", backends(generation, image["Id"], names, shape.grpc, previous))
    return generation


def finish_generation(name: str) -> None:
    """After the front moved and drained: the previous generation's replicas and folder go."""
    now = current(name)
    if now is None or not now.get("previous"):
        return
    old = int(now["previous"]["generation"])
    write_json(front_dir(name), "backends.json", {**now, "previous": None})
    remove_generation(name, old)


def remove_generation(name: str, generation: int) -> None:
    for attrs in replicas(name):
        if (attrs["Config"].get("Labels") or {}).get("dlbox.generation") == str(generation):
            engine.remove_container(attrs["Id"])
    shutil.rmtree(generation_dir(name, generation), ignore_errors=True)


def front_status(host: str, port: int) -> dict | None:
    """The front's own /healthz: generation, pending, ready, replicas, draining (None: no answer)."""
    conn = http.client.HTTPConnection(_url_host(host).strip("[]"), port, timeout=3)
    try:
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read())
        return body if isinstance(body, dict) and "generation" in body else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def remove(name: str) -> None:
    """The front, every replica of every generation, and the folder."""
    front_attrs = engine.container_attrs(container_name(name))
    if front_attrs is not None:
        engine.remove_container(front_attrs["Id"])
    for attrs in replicas(name):
        engine.remove_container(attrs["Id"])
    shutil.rmtree(deployment_dir(name), ignore_errors=True)
