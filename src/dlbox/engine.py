"""The one module that talks to the container engine (Docker Engine API via the Docker SDK).

Everything else hands it plain values and gets plain values back. It honours DOCKER_HOST.
Engine errors become DlboxError with one readable line.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from typing import IO, Any

from dlbox import config
from dlbox.errors import DlboxError, NotFound

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
        raise DlboxError(
            f"no Docker Engine answers at {where()}: start one (`dockerd &` as root, or `make engine` "
            "in a dlbox checkout) or point DOCKER_HOST at one",
            code="engine_unavailable",
        ) from None


def _api_error(exc: Exception, what: str) -> DlboxError:
    explanation = getattr(exc, "explanation", None) or str(exc)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return DlboxError(f"{what}: {explanation}")


def labels(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Labels for anything dlbox creates: managed, the caller's, and DLBOX_LABELS."""
    return {"dlbox.managed": "true", **(extra or {}), **config.extra_labels()}


# --- images -------------------------------------------------------------------------------


def image_attrs(ref: str) -> dict:
    from docker.errors import ImageNotFound, APIError

    try:
        return client().api.inspect_image(ref)
    except ImageNotFound:
        raise NotFound(f"no image {ref!r} in the engine (see `dlbox images`)") from None
    except APIError as exc:
        raise _api_error(exc, f"cannot inspect image {ref!r}") from None


def image_exists(ref: str) -> bool:
    try:
        image_attrs(ref)
        return True
    except NotFound:
        return False


def list_images(label_filters: Iterable[str] = (MANAGED,)) -> list[dict]:
    """Summaries (Id, RepoTags, Labels, Size, Created) in one engine call."""
    return client().api.images(filters={"label": list(label_filters)})


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


def relabel(image_id: str, new_labels: dict[str, str]) -> str:
    """A new image with the same layers and config plus `new_labels`; returns its ID.

    Used for what is known only after the build (the lock, the git commit), so the
    rendered Dockerfile stays a pure function of the spec.
    """
    from docker.errors import APIError

    api = client().api
    changes = "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in new_labels.items())
    container = api.create_container(image_id, labels=labels())
    try:
        return api.commit(container["Id"], changes=changes)["Id"]
    except APIError as exc:
        raise _api_error(exc, "labelling the image failed") from None
    finally:
        api.remove_container(container["Id"], force=True)


def tag(image_id: str, repository: str, tag_name: str) -> None:
    client().api.tag(image_id, repository, tag_name, force=True)


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


def run_once(image: str, command: list[str], *, entrypoint: list[str] | None = None,
             network: bool = False, user: str | None = None) -> tuple[int, str, str]:
    """Run a short command in a throwaway container; returns (exit code, stdout, stderr)."""
    from docker.errors import APIError, ImageNotFound

    api = client().api
    try:
        container = api.create_container(
            image, command=command, entrypoint=entrypoint, user=user or "",
            network_disabled=not network, labels=labels({"dlbox.kind": "probe"}),
            host_config=api.create_host_config(security_opt=["no-new-privileges"]),
        )
    except ImageNotFound:
        raise NotFound(f"no image {image!r} in the engine") from None
    except APIError as exc:
        raise _api_error(exc, f"cannot run a container of {image!r}") from None
    try:
        api.start(container)
        code = api.wait(container)["StatusCode"]
        stdout = api.logs(container, stdout=True, stderr=False).decode(errors="replace")
        stderr = api.logs(container, stdout=False, stderr=True).decode(errors="replace")
        return code, stdout, stderr
    finally:
        api.remove_container(container, force=True)


def read_packages(image: str, python: str = "/opt/venv/bin/python") -> dict:
    """What is actually installed in an image: Python distributions and dpkg packages."""
    code, out, err = run_once(image, ["-c", _READ_PACKAGES], entrypoint=[python])
    if code != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise DlboxError(f"cannot read the packages in {image}: {last}")
    return json.loads(out)


# --- cleanup by label (tests, and `dlbox` commands that remove what they made) -------------


def remove_labelled(label: str) -> dict[str, int]:
    """Remove every container, volume and image carrying `label` (k=v)."""
    from docker.errors import NotFound as DockerNotFound, APIError

    api = client().api
    removed = {"containers": 0, "volumes": 0, "images": 0}
    for c in api.containers(all=True, filters={"label": label}):
        try:
            api.remove_container(c["Id"], force=True, v=True)
            removed["containers"] += 1
        except DockerNotFound:
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


def engine_info() -> dict[str, Any]:
    return client().api.info()
