"""Make, move and remove a deployment: gather (image record, free ports) -> plan (pure) -> apply.

Apply writes the label config, creates and starts the container, and rolls all of it back if any
step fails. A label move only rewrites the config (atomically, in a folder the container has
read-only); the server loads and warms the new version before it switches, then unloads the old.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from dlbox import config
from dlbox.engine import api as engine
from dlbox.errors import DlboxError, NotFound
from dlbox.serving import lib
from dlbox.serving.plan import check, container_name, label_config, plan


@dataclass(frozen=True)
class Deployment:
    name: str
    container_id: str
    model_name: str
    rest_url: str  # http://host:port
    grpc_target: str | None  # host:port, for grpc.insecure_channel


def deployment_dir(name: str) -> Path:
    return config.home() / "deployments" / name


def config_dir(name: str) -> Path:
    return deployment_dir(name) / "config"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def write_config(name: str, labels: dict[str, int], serve: list[int] = ()) -> Path:
    """The label config, replaced atomically (the server never reads half a file)."""
    folder = config_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # the container's non-root user reads it through the bind
    partial = folder / f".config.json.{os.getpid()}"
    partial.write_text(json.dumps(label_config(labels, serve)))
    partial.chmod(0o644)
    partial.replace(folder / "config.json")
    return folder


def up(name: str, owner: str, image_id: str, versions: dict[int, Path], labels: dict[str, int], model_name: str,
       port: int | None = None, grpc_port: int | None = None, host: str = "127.0.0.1", memory: int | None = None,
       *, grpc: bool = True, **options) -> Deployment:
    """Start deployment `name`; `options` go to plan (serve, cpus, batch_max, batch_timeout_ms, access_log)."""
    image = engine.image_attrs(image_id)
    port = port or free_port(host)
    grpc_port = (grpc_port or free_port(host)) if grpc else None
    spec = plan(name, owner, image["Id"], versions, labels, model_name, port, grpc_port, host, memory,
                         lib_dir=lib.prepare(), config_dir=config_dir(name),
                         image_labels=image["Config"].get("Labels") or {}, **options)
    if engine.container_attrs(spec.name) is not None:  # before its config is touched
        raise DlboxError(f"a deployment named {name} already exists", code="exists")
    write_config(name, labels, options.get("serve") or ())
    container_id = None
    try:
        container_id = engine.create_container(spec)
        engine.start(container_id)
    except Exception:
        if container_id:
            engine.remove_container(container_id)
        shutil.rmtree(deployment_dir(name), ignore_errors=True)
        raise
    return Deployment(name, container_id, model_name, f"http://{_url_host(host)}:{port}",
                      f"{_url_host(host)}:{grpc_port}" if grpc_port else None)


def _url_host(host: str) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"[{host}]" if ":" in host else host


def move_labels(name: str, labels: dict[str, int], serve: list[int] = ()) -> None:
    """Point labels at other versions of the running deployment (each must be one of its versions)."""
    attrs = engine.container_attrs(container_name(name))
    if attrs is None:
        raise NotFound(f"no deployment {name}")
    versions = {int(v): Path("/") for v in attrs["Config"]["Labels"].get("dlbox.versions", "").split(",") if v}
    check(versions, labels, attrs["Config"]["Labels"].get("dlbox.model", ""), list(serve))
    write_config(name, labels, serve)


def remove(name: str) -> None:
    attrs = engine.container_attrs(container_name(name))
    if attrs is not None:
        engine.remove_container(attrs["Id"])
    shutil.rmtree(deployment_dir(name), ignore_errors=True)
