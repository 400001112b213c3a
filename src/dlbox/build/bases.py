"""Base images: a Debian suite bootstrapped from the mirror, or a registry image.

With no registry reachable, `debootstrap` builds the root filesystem, `docker import` makes
it an image. The result is cached by its inputs (the tag carries their hash) and recorded with
the sha256 of the root filesystem tarball that was imported.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from dlbox import config
from dlbox.engine import api as engine
from dlbox.errors import DlboxError
from dlbox.build.lock import BaseInfo
from dlbox.progress import Progress
from dlbox.spec.model import Base

RECIPE = 1  # bump when the bootstrap steps change, so old bases are not reused
INCLUDE = ("python3", "python3-venv", "python3-pip", "ca-certificates")
ROOTFS_LABEL = "dlbox.base.rootfs-sha256"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def inputs(base: Base) -> dict:
    return {"suite": base.debian, "mirror": base.effective_mirror, "variant": "minbase",
            "include": list(INCLUDE), "arch": _ARCH.get(platform.machine(), platform.machine()), "recipe": RECIPE}


def ref(base: Base) -> str:
    """The image the spec builds FROM; for a Debian suite, named by the hash of its inputs."""
    if base.image:
        return base.image
    digest = hashlib.sha256(json.dumps(inputs(base), sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.base_repository()}/debian-{base.debian}:{digest}"


def ensure(base: Base, progress: Progress) -> BaseInfo:
    """Make sure the base exists in the engine; bootstrap it if needed."""
    target = ref(base)
    if base.image:
        return BaseInfo(ref=target)
    found = _recorded(target)
    if found:
        return found
    lock_dir = config.home() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{target.replace('/', '_').replace(':', '_')}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one bootstrap per base at a time
        found = _recorded(target)
        if found:
            return found
        return bootstrap(base, target, progress)


def _recorded(target: str) -> BaseInfo | None:
    if not engine.image_exists(target):
        return None
    rootfs = (engine.image_attrs(target)["Config"].get("Labels") or {}).get(ROOTFS_LABEL)
    return BaseInfo(ref=target, rootfs_sha256=rootfs)


def bootstrap(base: Base, target: str, progress: Progress) -> BaseInfo:
    if shutil.which("debootstrap") is None:
        raise DlboxError("debootstrap is not installed; install it (`apt-get install debootstrap`) "
                         "or start from a registry image (`base: {image: ...}`)")
    if os.geteuid() != 0:
        raise DlboxError("bootstrapping a Debian base needs root (debootstrap); run as root once, "
                         "or start from a registry image (`base: {image: ...}`)")
    spec = inputs(base)
    cache = config.cache_dir() / "debootstrap" / f"{spec['suite']}-{spec['arch']}"
    cache.mkdir(parents=True, exist_ok=True)
    config.home().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dlbox-base-", dir=config.home()))
    rootfs, tarball = work / "rootfs", work / "rootfs.tar"
    try:
        progress.step(f"bootstrapping Debian {spec['suite']} from {spec['mirror']} (first time only)")
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
                   f"--cache-dir={cache}", f"--arch={spec['arch']}", spec["suite"], str(rootfs), spec["mirror"]]
        _stream(command, progress)
        progress.step("packing the root filesystem")
        digest = _pack(rootfs, tarball)
        progress.step(f"importing the base as {target}")
        repository, _, tag = target.partition(":")
        engine.import_rootfs(str(tarball), repository=repository, tag=tag, image_labels={
            "dlbox.kind": "base", ROOTFS_LABEL: digest, "dlbox.base.inputs": json.dumps(spec, sort_keys=True)})
        return BaseInfo(ref=target, rootfs_sha256=digest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stream(command: list[str], progress: Progress) -> None:
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            progress.line(line.rstrip())
    if proc.returncode != 0:
        progress.show_tail(tail)
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        raise DlboxError(f"debootstrap failed ({proc.returncode}): {last}")


def _pack(rootfs: Path, tarball: Path) -> str:
    """tar the root filesystem in a stable order and return the tarball's sha256."""
    # apt lists and logs only make the image bigger and the tarball less stable
    for leftover in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        for child in (rootfs / leftover).glob("*"):
            if child.is_file() and child.name not in ("lock",):
                child.unlink()
    result = subprocess.run(
        ["tar", "-C", str(rootfs), "--sort=name", "--numeric-owner", "--xattrs", "-cf", str(tarball), "."],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise DlboxError(f"packing the base failed: {result.stderr.strip().splitlines()[-1:]}")
    sha = hashlib.sha256()
    with tarball.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
