"""The one module that talks to the container engine (Docker Engine API via the Docker SDK).

Everything else hands it plain values and gets plain values back. It honours DOCKER_HOST.
Engine errors become DlboxError with one readable line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from dlbox import config
from dlbox.errors import DlboxError, EngineError, NotFound

MANAGED = "dlbox.managed=true"


def where() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@functools.cache
def client():
    import docker
    from docker.errors import DockerException

    try:
        return docker.from_env(version="auto", timeout=600)
    except DockerException:
        raise unreachable() from None


# --- engine errors become dlbox errors ------------------------------------------------------------
# Every function below runs its engine calls inside `translated` (as a decorator, or a `with` in the
# generators): what the Docker SDK raises leaves this module as a DlboxError of one line whose code
# (dlbox.errors.CODES) says whose fault it was. A function that expects an error (a missing
# container is fine) catches the SDK's own exception first; only what it lets through is translated.

MESSAGE_CHARS = 300  # an engine explanation can be long (a whole build log line); the message stays short


def unreachable() -> EngineError:
    return EngineError(f"no Docker Engine answers at {where()}: start one (`dockerd &` as root, or `make engine` "
                       "in a dlbox checkout) or point DOCKER_HOST at one", code="engine_unavailable")


def _explanation(exc: Exception) -> str:
    """The engine's own words, on one line and cut short; never the request (its body may hold secrets)."""
    return _short(getattr(exc, "explanation", None) or str(exc))


def _short(explanation: str | bytes) -> str:
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    text = " ".join(str(explanation).split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


def _api_error(exc: Exception, what: str) -> DlboxError:
    """A DlboxError for an engine APIError: its status decides the code (4xx a refusal of what was asked,
    5xx the engine failing)."""
    return _refusal(getattr(exc, "status_code", None), f"{what}: {_explanation(exc)}")


def _refusal(status: int | None, message: str) -> DlboxError:
    """The dlbox error for an engine answer of HTTP `status`, whichever client got it (the SDK or httpx)."""
    if status == 404:
        return NotFound(message)
    if status == 400:
        return DlboxError(message, code="invalid")  # the engine refused a value (an image reference, say)
    if status == 409:
        return DlboxError(message, code="engine_conflict")  # in use, not running, already there
    return EngineError(message)


def translate(exc: BaseException, what: str) -> BaseException:
    """The dlbox error for an exception of the Docker SDK (or of requests under it), or of httpx (the
    async log streams); others unchanged."""
    import http.client

    import httpx
    import requests
    import urllib3
    from docker.errors import APIError, DockerException, StreamParseError

    if isinstance(exc, APIError):  # NotFound, ImageNotFound and the rest are APIErrors with a status
        return _api_error(exc, what)
    gone = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, httpx.ConnectError,
            httpx.TimeoutException)
    if isinstance(exc, gone) or (isinstance(exc, DockerException) and isinstance(exc.__cause__, gone)):
        return unreachable()  # the second: from_env(version="auto") asking for the version of no engine
    if isinstance(exc, (DockerException, requests.exceptions.RequestException, httpx.HTTPError,
                        urllib3.exceptions.HTTPError, http.client.HTTPException,  # these: a stream cut short
                        StreamParseError)):
        return EngineError(f"{what}: {_explanation(exc)}")
    return exc


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Docker SDK errors raised inside become dlbox errors (see `translate`); usable as a decorator."""
    try:
        yield
    except DlboxError:
        raise
    except Exception as exc:  # noqa: BLE001 - translate() hands back anything that is not the engine's
        mapped = translate(exc, what)
        if mapped is exc:
            raise
        raise mapped from None


def labels(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Labels for anything dlbox creates: managed, the caller's, and DLBOX_LABELS."""
    return {"dlbox.managed": "true", **(extra or {}), **config.extra_labels()}


def _one(answer, key: str = "Id") -> dict | None:
    """An inspect call's answer, or None when it is not one thing: the SDK puts a name into the path
    as it is, so "/" asks /images///json, which the engine reads as /images/json and answers with
    the list of all images (likewise containers and networks)."""
    return answer if isinstance(answer, dict) and answer.get(key) else None


# --- images -------------------------------------------------------------------------------


@translated("cannot inspect the image")
def image_attrs(ref: str) -> dict:
    from docker.errors import ImageNotFound, APIError

    if not ref.strip() or ref != ref.strip():  # the SDK would turn "" into a different request
        raise NotFound(f"no image {ref!r} in the engine (see `dlbox images`)")
    try:
        attrs = _one(client().api.inspect_image(ref))
    except ImageNotFound:
        attrs = None
    except APIError as exc:
        raise _api_error(exc, f"cannot inspect image {ref!r}") from None
    if attrs is None:
        raise NotFound(f"no image {ref!r} in the engine (see `dlbox images`)")
    return attrs


def image_exists(ref: str) -> bool:
    try:
        image_attrs(ref)
        return True
    except NotFound:
        return False


@translated("cannot list images")
def list_images(label_filters: Iterable[str] = (MANAGED,)) -> list[dict]:
    """Summaries (Id, RepoTags, Labels, Size, Created) in one engine call."""
    return client().api.images(filters={"label": list(label_filters)})


@translated("build failed")
def build(context: IO[bytes], *, tag: str | None = None, nocache: bool = False,
          on_line: Callable[[str], None] = lambda line: None) -> str:
    """Build from an uncompressed tar context; returns the image ID. Streams output lines."""
    from docker.errors import APIError

    tail: list[str] = []
    image_id = None
    try:
        stream = client().api.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False,
            nocache=nocache, decode=True, labels=config.extra_labels() or None,
        )
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise BuildFailed(detail.strip(), tail)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            text = chunk.get("stream", "")
            for line in text.splitlines():
                if line.strip():
                    tail = (tail + [line])[-30:]
                    on_line(line)
    except APIError as exc:
        raise _api_error(exc, "build failed") from None
    if not image_id:
        raise BuildFailed("the engine did not report an image ID", tail)
    return image_id


class BuildFailed(DlboxError):
    def __init__(self, reason: str, tail: list[str]):
        super().__init__(f"build failed: {reason}", code="build_failed")
        self.tail = tail


@translated("importing the base failed")
def import_rootfs(path: str, *, repository: str, tag: str, image_labels: dict[str, str]) -> str:
    """`docker import` of a root filesystem tarball; returns the image ID."""
    from docker.errors import APIError

    changes = ["LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels(image_labels).items()),
               'CMD ["/bin/bash"]']
    try:
        out = client().api.import_image_from_file(path, repository=repository, tag=tag, changes=changes)
    except APIError as exc:
        raise _api_error(exc, "importing the base failed") from None
    for line in str(out).splitlines():
        try:
            status = json.loads(line).get("status", "")
        except ValueError:
            continue
        if status.startswith("sha256:"):
            return status
    return image_attrs(f"{repository}:{tag}")["Id"]


@translated("labelling the image failed")
def relabel(image_id: str, new_labels: dict[str, str], files: list[tuple[str, bytes, int, int]] = ()) -> str:
    """A new image: the same config plus `new_labels`, and `files` in one small layer; returns its ID.

    Used for what is known only after the build (the lock, the git commit), so the
    rendered Dockerfile stays a pure function of the spec.
    """
    from docker.errors import APIError

    api = client().api
    changes = "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in new_labels.items())
    # Never started. No user given: a commit keeps the container's config, so the image's own USER
    # stays; the root filesystem stays writable because put_archive writes the files into it.
    container = api.create_container(image_id, labels=labels(), network_disabled=True,
                                     host_config=helper_host_config(read_only=False))
    try:
        if files:
            put_files(container["Id"], list(files))
        return api.commit(container["Id"], changes=changes)["Id"]
    except APIError as exc:
        raise _api_error(exc, "labelling the image failed") from None
    finally:
        api.remove_container(container["Id"], force=True)


@translated("cannot read files from the image")
def read_files(image: str, paths: list[str]) -> dict[str, bytes]:
    """Files out of an image, without starting a container; missing ones (and links) are left out."""
    import io
    import tarfile

    from docker.errors import APIError, NotFound as DockerNotFound

    found = {}
    with _helper(image, ["true"], what=f"cannot read files from {image}") as (api, container):  # never started
        try:
            for path in paths:
                try:
                    stream, _ = api.get_archive(container["Id"], path)
                except DockerNotFound:
                    continue
                with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                    member = tar.next()
                    if member is not None and member.isfile():  # a link's target is not in the archive
                        found[path] = tar.extractfile(member).read()
        except APIError as exc:
            raise _api_error(exc, f"cannot read files from {image}") from None
    return found


def read_file(image: str, path: str) -> bytes:
    found = read_files(image, [path])
    if path not in found:
        raise NotFound(f"{image} has no {path}")
    return found[path]


@translated("cannot tag the image")
def tag(image_id: str, repository: str, tag_name: str) -> None:
    client().api.tag(image_id, repository, tag_name, force=True)


@translated("cannot remove the image")
def remove_image(ref: str, *, force: bool = False) -> None:
    from docker.errors import ImageNotFound, APIError

    try:
        client().api.remove_image(ref, force=force)
    except ImageNotFound:
        raise NotFound(f"no image {ref!r} in the engine") from None
    except APIError as exc:
        raise _api_error(exc, f"cannot remove image {ref!r}") from None


# --- one-off containers -------------------------------------------------------------------

_READ_PACKAGES = r"""
import importlib.metadata as md, json, os, subprocess, sys
python = sorted({(d.metadata["Name"], d.version) for d in md.distributions() if d.metadata["Name"]})
out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n"],
                     capture_output=True, text=True).stdout
osp = sorted({tuple(l.split("\t")[:2]) for l in out.splitlines() if l.endswith("\tinstalled")})
report = None
if os.path.exists("/opt/dlbox/pip-report.json"):
    with open("/opt/dlbox/pip-report.json") as f:
        full = json.load(f)
    report = {"install": [{"metadata": {k: i["metadata"].get(k) for k in ("name", "version")},
                           "download_info": {"archive_info": i.get("download_info", {}).get("archive_info", {})}}
                          for i in full.get("install", [])]}
print(json.dumps({"python_version": ".".join(map(str, sys.version_info[:3])),
                  "python": python, "os": osp, "report": report}))
"""


@translated("cannot configure a helper container")
def helper_host_config(*, read_only: bool = True) -> dict:
    """The host config of a short-lived helper container: no capabilities, no way up, small fixed
    limits, and (unless it must be written) a read-only root with a small tmpfs /tmp."""
    from dlbox.containers import policy as containers

    return client().api.create_host_config(
        cap_drop=["ALL"], security_opt=["no-new-privileges"], privileged=False,
        mem_limit=containers.HELPER_MEMORY, memswap_limit=containers.HELPER_MEMORY,
        pids_limit=containers.HELPER_PIDS, read_only=read_only, network_mode="none",
        tmpfs={"/tmp": "rw,nosuid,nodev,noexec,size=64m"} if read_only else None,
    )


def _probe_user(image: str) -> str:
    """Who a helper runs as: the image's own non-root uid:gid (its files are readable to it)."""
    from docker.errors import APIError, ImageNotFound

    from dlbox.containers import policy as containers

    try:
        image_labels = client().api.inspect_image(image)["Config"].get("Labels")
    except (ImageNotFound, APIError):
        image_labels = None  # the create that follows says what is wrong
    return containers.run_as(image_labels)


@contextlib.contextmanager
def _helper(image: str, command: list[str], *, entrypoint: list[str] | None = None, user: str | None = None,
            binds: list[str] | None = None, what: str | None = None) -> Iterator[tuple]:
    """A throwaway hardened helper of `image`, created (not started) and removed on the way out: no
    network, a helper's host config (helper_host_config), the image's non-root user unless `user`
    (root refused), `binds` as the engine writes them. Yields (the low-level API, the container)."""
    from docker.errors import APIError, ImageNotFound

    from dlbox.containers import policy as containers

    user = user or _probe_user(image)
    if not containers.non_root(user):
        raise DlboxError(f"refusing to run a helper of {image} as {user!r}: helpers run as a non-root uid:gid")
    api = client().api
    host_config = helper_host_config()
    if binds:
        host_config["Binds"] = binds
    try:
        container = api.create_container(image, command=command, entrypoint=entrypoint, user=user,
                                         network_disabled=True, labels=labels({"dlbox.kind": "probe"}),
                                         host_config=host_config)
    except ImageNotFound:
        raise NotFound(f"no image {image!r} in the engine") from None
    except APIError as exc:
        raise _api_error(exc, what or f"cannot run a container of {image!r}") from None
    try:
        yield api, container
    finally:
        api.remove_container(container, force=True)


@translated("cannot run a helper container")
def run_once(image: str, command: list[str], *, entrypoint: list[str] | None = None,
             user: str | None = None) -> tuple[int, str, str]:
    """Run a short command in a throwaway container with no network; returns (exit code, stdout, stderr)."""
    with _helper(image, command, entrypoint=entrypoint, user=user) as (api, container):
        api.start(container)
        code = api.wait(container)["StatusCode"]
        stdout = api.logs(container, stdout=True, stderr=False).decode(errors="replace")
        stderr = api.logs(container, stdout=False, stderr=True).decode(errors="replace")
        return code, stdout, stderr


@translated("cannot run a helper container")
def run_reader(image: str, command: list[str], *, entrypoint: list[str], source: str, target: str,
               max_output: int = 1024 * 1024, timeout: float = 120) -> tuple[int, bytes, str]:
    """Run a short command that reads the host folder `source`, mounted read-only at `target`, in a
    throwaway hardened helper of `image` (no network, read-only root, no capabilities, the image's
    non-root user). Returns (exit code, stdout, last stderr line): stdout capped at `max_output`
    bytes (past it the helper is killed and the exit code is None), the run killed after `timeout` s."""
    import requests

    with _helper(image, command, entrypoint=entrypoint, binds=[f"{source}:{target}:ro"]) as (api, container):
        api.start(container)
        try:
            code = api.wait(container, timeout=timeout)["StatusCode"]
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):  # the read timed out: too long
            api.kill(container)
            raise DlboxError(f"the helper reading {source} ran longer than {timeout:g}s") from None
        out = bytearray()
        for chunk in api.logs(container, stdout=True, stderr=False, stream=True):
            out += chunk
            if len(out) > max_output:
                return None, bytes(out[:max_output]), "its output was too long"
        err = api.logs(container, stdout=False, stderr=True, tail=5).decode(errors="replace")
        last = (err.strip().splitlines() or [""])[-1]
        return code, bytes(out), " ".join(last.split())[:MESSAGE_CHARS]


def read_packages(image: str, python: str = "/opt/venv/bin/python") -> dict:
    """What is actually installed in an image: Python distributions and dpkg packages."""
    code, out, err = run_once(image, ["-c", _READ_PACKAGES], entrypoint=[python])
    if code != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise DlboxError(f"cannot read the packages in {image}: {last}")
    return json.loads(out)


# --- cleanup by label (tests, and `dlbox` commands that remove what they made) -------------


@translated("cannot remove labelled objects")
def remove_labelled(label: str) -> dict[str, int]:
    """Remove every container, network, volume and image carrying `label` (k=v)."""
    from docker.errors import NotFound as DockerNotFound, APIError

    api = client().api
    removed = {"containers": 0, "networks": 0, "volumes": 0, "images": 0}
    for c in api.containers(all=True, filters={"label": label}):
        try:
            api.remove_container(c["Id"], force=True, v=True)
            removed["containers"] += 1
        except DockerNotFound:
            pass
    for n in api.networks(filters={"label": label}):  # after the containers: a network in use stays
        try:
            api.remove_network(n["Id"])
            removed["networks"] += 1
        except (DockerNotFound, APIError):
            pass
    for v in api.volumes(filters={"label": label}).get("Volumes") or []:
        try:
            api.remove_volume(v["Name"], force=True)
            removed["volumes"] += 1
        except DockerNotFound:
            pass
    # children before parents: retry until nothing more goes
    for _ in range(5):
        images = api.images(filters={"label": label}, all=True)
        if not images:
            break
        for img in images:
            try:
                api.remove_image(img["Id"], force=True)
                removed["images"] += 1
            except (DockerNotFound, APIError):
                pass
    return removed



# --- containers and volumes (workspaces, jobs) ----------------------------------------------


class PortInUse(DlboxError):
    def __init__(self, detail: str):
        super().__init__(f"a host port is already in use: {detail}", code="port_in_use")


@translated("cannot read the engine's capacity")
def capacity() -> dict:
    """What the engine's machine has: CPUs, memory (bytes), runtimes (e.g. nvidia)."""
    info = client().api.info()
    return {"cpus": info.get("NCPU"), "memory": info.get("MemTotal"), "runtimes": sorted(info.get("Runtimes") or {})}


@functools.cache
@translated("cannot read the engine's memory")
def machine_memory() -> int | None:
    """The engine machine's memory in bytes, read once per process (for the default memory limit)."""
    return client().api.info().get("MemTotal")


@translated("cannot create the container")
def create_container(spec, *, entrypoint: list[str] | None = None) -> str:
    """Create (not start) a container from a `containers.ContainerSpec`, on its network (made if
    missing) or on none; returns its ID.

    Every container gets the same floor: no capabilities, no-new-privileges, a pids limit and a
    memory limit (a default when the spec has none), whatever the spec says."""
    from docker.errors import APIError, ImageNotFound
    from docker.types import DeviceRequest, Mount

    from dlbox.containers import policy as containers
    from dlbox.engine import gpus

    if not containers.non_root(spec.user):
        raise DlboxError(f"refusing to run {spec.name} as {spec.user or 'the image default'!r}: "
                         "dlbox containers run as a non-root numeric uid:gid")
    memory = spec.limits.memory or containers.default_memory(machine_memory())

    api = client().api
    # a list, not a dict keyed by source: one host folder may be mounted twice (say ro and rw)
    binds = [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts]
    binds += [f"{vol}:{target}:rw" for vol, target in spec.volumes.items()]
    # volumes that live and go with the container, made empty and root's (a workspace's service files)
    own = [Mount(target, None, type="volume", labels=labels({"dlbox.kind": spec.labels.get("dlbox.kind", "")}))
           for target in spec.own_volumes]
    devices = None
    if spec.gpu_ids:
        wanted = gpus.device_request(spec.gpu_ids)
        devices = [DeviceRequest(driver=wanted["Driver"], count=wanted["Count"], device_ids=wanted["DeviceIDs"],
                                 capabilities=wanted["Capabilities"], options=wanted["Options"])]
    host_config = api.create_host_config(
        binds=binds,
        mounts=own or None,
        port_bindings={f"{port}/tcp": [(ip, host_port)] for port, (ip, host_port) in spec.ports.items()},
        mem_limit=memory,
        memswap_limit=memory,  # no swap beyond the limit: past it, the kernel OOM-kills
        nano_cpus=int(spec.limits.cpus * 1e9) if spec.limits.cpus else None,
        pids_limit=spec.limits.pids or containers.DEFAULT_PIDS,
        shm_size=spec.limits.shm_size,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        privileged=False,
        init=True,
        device_requests=devices,
        network_mode=spec.network.name if spec.network else "none",  # the owner's network, never docker0
        read_only=spec.read_only,
        tmpfs=dict(spec.tmpfs) or None,
        restart_policy=spec.restart,
    )

    if spec.network:
        ensure_network(spec.network)  # the engine accepts a missing one here and fails only at start
    try:
        created = api.create_container(
            spec.image, command=spec.command, entrypoint=entrypoint, name=spec.name, user=spec.user,
            labels=labels(spec.labels), environment=spec.env, working_dir=spec.workdir,
            ports=list(spec.ports), host_config=host_config, detach=True, healthcheck=spec.healthcheck,
        )
    except ImageNotFound:
        raise NotFound(f"no image {spec.image!r} in the engine") from None
    except APIError as exc:
        if exc.status_code == 409:
            raise DlboxError(f"a container named {spec.name} already exists", code="exists") from None
        raise _api_error(exc, f"cannot create container {spec.name}") from None
    return created["Id"]


@translated("cannot create the network")
def ensure_network(network) -> None:
    """Create a `networks.Network` (a bridge with its own interface name) unless it exists."""
    from docker.errors import APIError, NotFound as DockerNotFound

    api = client().api
    try:
        api.inspect_network(network.name)
        return
    except DockerNotFound:
        pass
    try:
        api.create_network(network.name, driver="bridge", options=network.options, check_duplicate=True,
                           labels=labels(network.labels))
    except APIError as exc:
        if exc.status_code == 409:  # made meanwhile by another dlbox process: the same network
            return
        text = str(getattr(exc, "explanation", "") or exc)
        if "address pool" in text:
            raise DlboxError(f"cannot create network {network.name}: the engine has no free address range left "
                             "(each dlbox user has a network; widen dockerd's default-address-pools)",
                             code="no_network") from None
        raise _api_error(exc, f"cannot create network {network.name}") from None


@translated("cannot move the container to its network")
def move_to_network(container: str, network) -> None:
    """Take a container off the default bridge and onto `network` (a workspace made before
    dlbox had networks per user); it keeps its name, ports and data."""
    from docker.errors import APIError

    ensure_network(network)
    api = client().api
    try:
        api.disconnect_container_from_network(container, "bridge")
        api.connect_container_to_network(container, network.name)
    except APIError as exc:
        raise _api_error(exc, f"cannot move the container to network {network.name}") from None


@translated("cannot list networks")
def list_networks(label_filters: list[str]) -> list[dict]:
    """Networks with all these labels: Name, Id, Labels, Options, IPAM (one listing call)."""
    return client().api.networks(filters={"label": label_filters})


def _inspected(inspect: Callable[[str], dict], name: str, key: str = "Id") -> dict | None:
    """What an SDK inspect call answers for `name`, or None when the engine has no such thing (`key`:
    the field every answer of this kind has)."""
    from docker.errors import NotFound as DockerNotFound

    try:
        return _one(inspect(name), key)
    except DockerNotFound:
        return None


@translated("cannot inspect the network")
def network_attrs(name: str) -> dict | None:
    return _inspected(client().api.inspect_network, name)


@translated("cannot remove the network")
def remove_network(name: str) -> None:
    """Remove a network; a missing one is fine. The engine refuses while containers are attached."""
    from docker.errors import APIError, NotFound as DockerNotFound

    try:
        client().api.remove_network(name)
    except DockerNotFound:
        pass
    except APIError as exc:
        raise _api_error(exc, f"cannot remove network {name}") from None


@translated("cannot copy files into the container")
def put_files(container: str, files: list[tuple[str, bytes, int, int]], *, into: str = "/") -> None:
    """Copy (absolute path, content, mode, uid) files, all below `into`, into a created container.

    With a read-only root the engine writes only into a volume: `into` is then that volume's target."""
    import io
    import tarfile
    from pathlib import PurePosixPath

    root = PurePosixPath(into)
    buf = io.BytesIO()
    dirs = sorted({str(p) for path, *_ in files for p in _parents(path, root)})
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, data, mode, uid in files:
            info = tarfile.TarInfo(str(PurePosixPath(path).relative_to(root)))  # ValueError: not below `into`
            info.size, info.mode, info.uid, info.gid = len(data), mode, uid, uid
            tar.addfile(info, io.BytesIO(data))
    client().api.put_archive(container, into, buf.getvalue())


def _parents(path: str, root) -> list[str]:
    """The folders between `root` and the file, relative to `root` (system folders of / left as they are)."""
    from pathlib import PurePosixPath

    return [str(p.relative_to(root)) for p in PurePosixPath(path).parents
            if p != root and p.is_relative_to(root) and str(p) not in ("/etc", "/tmp", "/opt")]


@translated("cannot start the container")
def start(container: str) -> None:
    from docker.errors import APIError

    try:
        client().api.start(container)
    except APIError as exc:
        text = str(getattr(exc, "explanation", "") or exc)
        if "port is already allocated" in text or "address already in use" in text:
            raise PortInUse(text.split(": ")[-1]) from None
        if "could not select device driver" in text:
            raise DlboxError("--gpus: the engine has no GPU runtime (install the NVIDIA container toolkit and "
                             "restart dockerd)", code="no_gpu_runtime") from None
        raise _api_error(exc, "cannot start the container") from None


@translated("cannot change the container's restart policy")
def set_restart_policy(container: str, policy: dict) -> None:
    """Change a container's restart policy ({"Name": "on-failure", "MaximumRetryCount": 5}, or "no")."""
    client().api.update_container(container, restart_policy=policy)


@translated("cannot stop the container")
def stop(container: str, timeout: int = 10) -> None:
    client().api.stop(container, timeout=timeout)


@translated("cannot restart the container")
def restart(container: str, timeout: int = 10) -> None:
    client().api.restart(container, timeout=timeout)


@translated("cannot remove the container")
def remove_container(container: str) -> None:
    from docker.errors import NotFound as DockerNotFound

    try:
        # v: the container's anonymous volumes (a workspace's service files) go with it; named ones never do
        client().api.remove_container(container, force=True, v=True)
    except DockerNotFound:
        pass


@translated("cannot inspect the container")
def container_attrs(name: str) -> dict | None:
    return _inspected(client().api.inspect_container, name)


def finished_at(attrs: dict) -> float | None:
    """When the container's process ended (Unix seconds), from its State.FinishedAt; None if it has not."""
    from datetime import datetime, timezone

    text = (attrs.get("State") or {}).get("FinishedAt") or ""
    if not text or text.startswith("0001-"):
        return None
    whole, _, rest = text.rstrip("Z").partition(".")  # nanoseconds: more than fromisoformat reads
    try:
        stamp = datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
    digits = "".join(c for c in rest if c.isdigit())[:6]
    return stamp + (int(digits) / 10 ** len(digits) if digits else 0.0)


@translated("cannot list containers")
def list_containers(label_filters: list[str]) -> list[dict]:
    from docker.errors import NotFound as DockerNotFound

    api = client().api
    found = []
    for summary in api.containers(all=True, filters={"label": label_filters}):
        try:
            found.append(api.inspect_container(summary["Id"]))
        except DockerNotFound:  # removed between the listing and the inspection
            continue
    return found


@translated("cannot list containers")
def container_images() -> list[dict]:
    """Every container on the engine (any state, dlbox's or not) with the image ID it uses: Id, Name,
    State, ImageID and Labels, from one listing call."""
    return [{"Id": c["Id"], "Name": (c.get("Names") or ["/?"])[0].lstrip("/"), "State": c["State"],
             "ImageID": c.get("ImageID") or "", "Labels": c.get("Labels") or {}}
            for c in client().api.containers(all=True)]


@translated("cannot list containers")
def container_summaries(label_filters: list[str], *, running: bool = False) -> list[dict]:
    """One listing call, no inspection: Id, State (running, exited, ...) and Labels of each container
    (`running`: only the running ones)."""
    filters = {"label": label_filters} | ({"status": "running"} if running else {})
    return [{"Id": c["Id"], "State": c["State"], "Labels": c.get("Labels") or {}}
            for c in client().api.containers(all=not running, filters=filters)]


@translated("cannot create the volume")
def ensure_volume(name: str, volume_labels: dict[str, str]) -> bool:
    """Create the named volume if missing; True if this call created it."""
    api = client().api
    if _inspected(api.inspect_volume, name, "Name") is not None:
        return False
    api.create_volume(name, labels=labels(volume_labels))
    return True


@translated("cannot inspect the volume")
def volume_facts(name: str) -> tuple[bool, dict[str, str]]:
    """(exists, labels) of a volume, in one engine call."""
    from docker.errors import NotFound as DockerNotFound

    try:
        return True, client().api.inspect_volume(name).get("Labels") or {}
    except DockerNotFound:
        return False, {}


@translated("cannot inspect the volume")
def volume_labels(name: str) -> dict[str, str]:
    """A volume's labels ({} when it does not exist)."""
    return (_inspected(client().api.inspect_volume, name, "Name") or {}).get("Labels") or {}


@translated("cannot inspect the volume")
def volume_exists(name: str) -> bool:
    return _inspected(client().api.inspect_volume, name, "Name") is not None


@translated("cannot remove the volume")
def remove_volume(name: str) -> None:
    from docker.errors import NotFound as DockerNotFound

    try:
        client().api.remove_volume(name, force=True)
    except DockerNotFound:
        pass


@translated("cannot run the command in the container")
def exec_stream(container: str, command: list[str], *, user: str | None = None, out=None, err=None) -> int:
    """Run a command in a running container, streaming its output; returns its exit code."""
    import sys

    api = client().api
    created = api.exec_create(container, command, user=user or "", stdout=True, stderr=True)
    for stdout, stderr in api.exec_start(created["Id"], stream=True, demux=True):
        if stdout:
            (out or sys.stdout.buffer).write(stdout)
            (out or sys.stdout.buffer).flush()
        if stderr:
            (err or sys.stderr.buffer).write(stderr)
            (err or sys.stderr.buffer).flush()
    return api.exec_inspect(created["Id"])["ExitCode"]


@translated("cannot run the command in the container")
def exec_capture(container: str, command: list[str], *, user: str | None = None) -> tuple[int, str]:
    """Run a short command in a running container; (-1, "") if it stopped meanwhile."""
    from docker.errors import APIError

    api = client().api
    try:
        created = api.exec_create(container, command, user=user or "", stdout=True, stderr=True)
        output = api.exec_start(created["Id"]).decode(errors="replace")
        return api.exec_inspect(created["Id"])["ExitCode"], output
    except APIError:
        return -1, ""


def logs(container: str, *, follow: bool = False, tail: int | str = "all"):
    """Yields chunks of the container's output (stdout and stderr), streamed: a log of any size is
    never held in memory whole."""
    with translated("cannot read the container's logs"):  # a generator: the errors come while iterating
        yield from client().api.logs(container, stream=True, follow=follow, tail=tail)


@translated("cannot read the container's events")
def oom_events(container: str, since: int) -> list[int]:
    """Times (epoch seconds) of OOM kills the engine saw in this container since `since`."""
    import time

    # `until` in the past: the engine answers at once (a future one makes it wait for that moment)
    events = client().api.events(since=since, until=f"{time.time():.6f}", decode=True,
                                 filters={"container": container, "event": "oom"})
    return [e.get("time", 0) for e in events]


def container_events(label_filters: list[str], actions: tuple[str, ...] = ("die",), *, retry: float = 1.0,
                     max_retry: float = 30.0) -> Iterator[dict]:
    """The engine's events of containers with all these labels, as {"action", "id", "labels"}; never ends.

    Survives the engine going away or restarting: it yields {"action": "disconnected", ...},
    reconnects, backing off from `retry` to `max_retry` seconds, then yields
    {"action": "reconnected", ...}, because events in the gap are lost and the caller should look
    at the engine again. The first connection yields {"action": "connected", ...}. Close the
    generator to stop it.

    What broke the stream goes through `translate`: a disconnected event carries it as
    "error": {"code", "message"} (engine_unavailable, engine_error). An engine refusal of the request
    itself (a 4xx: invalid filters, say) is raised, as is an exception that is not the engine's (a
    bug): asking again would only get the same answer.
    """
    import time

    import docker

    delay = retry
    seen_before = False
    while True:
        api = stream = None
        error = None
        try:
            api = docker.from_env(version="auto", timeout=60).api  # its own connection: the stream holds it
            stream = api.events(decode=True, filters={"type": "container", "event": list(actions),
                                                      "label": list(label_filters)})
            _raise_for_status(getattr(stream, "_response", None))  # the SDK's events() does not look at it
            yield {"action": "reconnected" if seen_before else "connected", "id": None, "labels": {}}
            seen_before = True
            delay = retry
            for event in stream:
                actor = event.get("Actor") or {}
                yield {"action": event.get("Action") or event.get("status"), "id": actor.get("ID") or event.get("id"),
                       "labels": actor.get("Attributes") or {}}
        except Exception as exc:  # noqa: BLE001 - engine down, restarting, or the connection dropped: retry
            error = translate(exc, "the engine's event stream failed")
            if error is exc or error.status < 500:
                raise error from None
        finally:
            for closable in (stream, api):
                try:
                    if closable is not None:
                        closable.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
        gone = {"action": "disconnected", "id": None, "labels": {}}
        if error is not None:
            gone["error"] = {"code": error.code, "message": error.message}
        yield gone
        time.sleep(delay)
        delay = min(delay * 2, max_retry)


def _raise_for_status(response) -> None:
    """The SDK's APIError for a refused answer (requests.Response), as its other calls raise it."""
    import requests
    from docker.errors import create_api_error_from_http_exception

    try:
        if response is not None:
            response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        create_api_error_from_http_exception(exc)  # raises


@translated("cannot read the container's memory use")
def peak_memory(container: str) -> int | None:
    """The most memory the container has used so far (cgroup v1 max_usage; v2: current usage)."""
    from docker.errors import APIError, NotFound as DockerNotFound

    try:
        stats = client().api.stats(container, stream=False, one_shot=True)
    except (APIError, DockerNotFound):
        return None
    memory = stats.get("memory_stats") or {}
    return memory.get("max_usage") or memory.get("usage")


# --- async log streams --------------------------------------------------------------------------
# The Docker SDK's streams block a thread each for as long as they last; a follower of a quiet job
# would hold one of the service's worker threads for hours. These read the Engine API with httpx
# on the event loop instead.


def _async_client(timeout: float | None):
    """An httpx.AsyncClient for the engine at DOCKER_HOST (unix:// or tcp://, TLS as the SDK does it)."""
    import httpx

    host = where()
    limits = httpx.Timeout(10.0, read=timeout)
    if host.startswith("unix://"):
        transport = httpx.AsyncHTTPTransport(uds=host.removeprefix("unix://"), verify=False)
        return httpx.AsyncClient(transport=transport, base_url="http://docker", timeout=limits)
    if host.startswith("tcp://"):
        if os.environ.get("DOCKER_TLS_VERIFY"):
            import ssl

            certs = os.environ.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
            context = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
            context.load_cert_chain(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
            return httpx.AsyncClient(base_url="https://" + host.removeprefix("tcp://"), verify=context,
                                     timeout=limits)
        return httpx.AsyncClient(base_url="http://" + host.removeprefix("tcp://"), verify=False, timeout=limits)
    raise DlboxError(f"DOCKER_HOST: {host!r} is neither unix:// nor tcp://", code="engine_unavailable")


async def stream_logs(container: str, *, follow: bool = False):
    """Async chunks of the container's output (stdout and stderr, in order) from its start; with
    `follow`, until the container ends. Holds no thread and never the whole log. Its errors go
    through `translated`, as the SDK's do."""
    from urllib.parse import quote

    what = f"cannot read the logs of container {container!r}"
    path = f"/containers/{quote(container, safe='')}"
    with translated(what):
        try:
            async with _async_client(timeout=None) as http:
                found = await http.get(f"{path}/json")
                await _answered(found, what)
                frames = None if found.json()["Config"].get("Tty") else Frames()
                query = {"stdout": "1", "stderr": "1", "follow": "1" if follow else "0"}
                async with http.stream("GET", f"{path}/logs", params=query) as answer:
                    await _answered(answer, what)
                    async for chunk in answer.aiter_raw():
                        data = chunk if frames is None else frames.feed(chunk)
                        if data:
                            yield data
        except FileNotFoundError:  # no socket at DOCKER_HOST's path
            raise unreachable() from None
        except OSError as exc:
            raise EngineError(f"{what}: {_explanation(exc)}") from None


async def _answered(answer, what: str) -> None:
    """Raise the dlbox error of an engine answer (httpx) that is not a success: the engine's own
    words (its JSON `message`), the code of its status as `translate` gives it for the SDK."""
    if answer.status_code < 400:
        return
    await answer.aread()
    try:
        body = answer.json()
    except ValueError:
        body = None
    words = body.get("message") if isinstance(body, dict) else None
    raise _refusal(answer.status_code, f"{what}: {_short(words or answer.text or answer.reason_phrase)}")


class Frames:
    """Docker's multiplexed stream (no TTY): frames of [stream, 0, 0, 0, size (4 bytes, big-endian)]
    then `size` bytes. feed() returns the payload bytes in what it was given; a frame may span chunks."""

    def __init__(self):
        self.header = b""
        self.left = 0  # payload bytes of the current frame still to come

    def feed(self, chunk: bytes) -> bytes:
        out = []
        at = 0
        while at < len(chunk):
            if self.left:
                take = chunk[at:at + self.left]
                out.append(take)
                self.left -= len(take)
                at += len(take)
                continue
            need = 8 - len(self.header)
            self.header += chunk[at:at + need]
            at += need
            if len(self.header) == 8:
                self.left = int.from_bytes(self.header[4:8], "big")
                self.header = b""
        return b"".join(out)
