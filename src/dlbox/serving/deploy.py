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
import threading
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


def models_dir(name: str) -> Path:
    """The versions of a deployment made with `linked=True`: N/ each, hard links to the frozen files."""
    return deployment_dir(name) / "models"


def link_versions(name: str, versions: dict[int, Path], folder: Path | None = None) -> Path:
    """Put each version's files at models_dir(name)/N: hard links to the (read-only, root's) files, a
    copy where a link cannot be made. A version appears whole or not at all (renamed into place), so
    the server never sees half of one. Versions already there are kept as they are. `folder`: another
    models folder than the deployment's own (a generation's, see fleet)."""
    folder = folder or models_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for number, source in sorted(versions.items()):
        target = folder / str(int(number))
        if target.is_dir():
            continue
        partial = folder / f".{number}.{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _link_tree(Path(source), partial)
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return folder


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    for entry in os.scandir(source):  # never follows a link: only regular files and folders are taken
        if entry.is_dir(follow_symlinks=False):
            _link_tree(Path(entry.path), target / entry.name)
        elif entry.is_file(follow_symlinks=False):
            try:
                os.link(entry.path, target / entry.name, follow_symlinks=False)
            except OSError:  # another file system, or links refused: a copy (the bytes are the same)
                shutil.copyfile(entry.path, target / entry.name, follow_symlinks=False)
                (target / entry.name).chmod(0o444)


def linked_versions(name: str, folder: Path | None = None) -> list[int]:
    try:
        return sorted(int(p.name) for p in (folder or models_dir(name)).iterdir()
                      if p.name.isdigit() and p.is_dir())
    except FileNotFoundError:
        return []


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def write_config(name: str, labels: dict[str, int], serve: list[int] = (), folder: Path | None = None) -> Path:
    """The label config, replaced atomically (the server never reads half a file)."""
    return write_json(folder or config_dir(name), "config.json", label_config(labels, serve))


def write_json(folder: Path, file: str, data: dict) -> Path:
    """`folder`/`file`, replaced atomically; world-readable (a container's non-root user reads it)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    partial = folder / f".{file}.{os.getpid()}.{threading.get_ident()}"
    partial.write_text(json.dumps(data))
    partial.chmod(0o644)
    partial.replace(folder / file)
    return folder


def up(name: str, owner: str, image_id: str, versions: dict[int, Path], labels: dict[str, int], model_name: str,
       port: int | None = None, grpc_port: int | None = None, host: str = "127.0.0.1", memory: int | None = None,
       *, grpc: bool = True, linked: bool = False, **options) -> Deployment:
    """Start deployment `name`; `options` go to plan (serve, cpus, batch_max, batch_timeout_ms, access_log).

    `linked`: the versions are linked into one folder the container mounts (see plan's models_dir), so
    `move_labels(..., add=...)` can bring in versions the container did not start with."""
    image = engine.image_attrs(image_id)
    port = port or free_port(host)
    grpc_port = (grpc_port or free_port(host)) if grpc else None
    spec = plan(name, owner, image["Id"], versions, labels, model_name, port, grpc_port, host, memory,
                         lib_dir=lib.prepare(), config_dir=config_dir(name),
                         image_labels=image["Config"].get("Labels") or {},
                         models_dir=models_dir(name) if linked else None, **options)
    if engine.container_attrs(spec.name) is not None:  # before its config is touched
        raise DlboxError(f"a deployment named {name} already exists", code="exists")
    container_id = None
    try:
        if linked:
            link_versions(name, versions)
        write_config(name, labels, options.get("serve") or ())
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


def move_labels(name: str, labels: dict[str, int], serve: list[int] = (), *,
                add: dict[int, Path] | None = None) -> None:
    """Point labels at other versions of the running deployment (each must be one of its versions).

    `add` (a deployment made with `linked=True` only): versions to link in first; the server then loads
    and warms them before the labels switch, with no new container."""
    attrs = engine.container_attrs(container_name(name))
    if attrs is None:
        raise NotFound(f"no deployment {name}")
    container_labels = attrs["Config"]["Labels"]
    if container_labels.get("dlbox.layout") == "folder":
        if add:
            link_versions(name, add)
        versions = {n: Path("/") for n in linked_versions(name)}
    else:
        if add:
            raise DlboxError(f"deployment {name} mounts its versions one by one: a new version needs a new "
                             "container", code="invalid")
        versions = {int(v): Path("/") for v in container_labels.get("dlbox.versions", "").split(",") if v}
    check(versions, labels, container_labels.get("dlbox.model", ""), list(serve))
    write_config(name, labels, serve)


def current_labels(name: str, folder: Path | None = None) -> dict | None:
    """The label config as last written here (host-written: the container mounts it read-only)."""
    try:
        return json.loads(((folder or config_dir(name)) / "config.json").read_text())
    except (OSError, ValueError):
        return None


def remove(name: str) -> None:
    attrs = engine.container_attrs(container_name(name))
    if attrs is not None:
        engine.remove_container(attrs["Id"])
    shutil.rmtree(deployment_dir(name), ignore_errors=True)
