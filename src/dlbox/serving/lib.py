"""The folder mounted read-only at plan.LIB in every deployment: the server program, and the
`tensorflow_serving` generated protos (pure Python) from the tensorflow-serving-api wheel.

Why extract from the wheel at prepare time, not vendor it in dlbox's source: the protos are
generated code of another project and version-bound to TF 2.9's protos; a pinned wheel (by sha256)
from pip's own configured index (or DLBOX_SERVING_API_WHEEL, a file) keeps them exactly that
release. The wheel is cached in the dlbox cache, so after the first prepare no index is needed; the
host's pip index here is local, so this works offline. Only `tensorflow_serving/**.py` is taken,
by checked relative names (no zip-slip); nothing is installed into any environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path, PurePosixPath

from dlbox import config
from dlbox.errors import DlboxError

WHEEL = "tensorflow_serving_api-2.9.3-py2.py3-none-any.whl"
REQUIREMENT = "tensorflow-serving-api==2.9.3"
WHEEL_SHA256 = "ca3d843887eefe0ee0663f71bfe4defede46769f5ffca2da7ccab9058c0c98f7"
PROGRAM = "dlbox_serving.py"


def wheel() -> Path:
    """The pinned wheel: DLBOX_SERVING_API_WHEEL, the cache, or downloaded into the cache by pip."""
    given = os.environ.get("DLBOX_SERVING_API_WHEEL")
    path = Path(given) if given else config.cache_dir() / "wheels" / WHEEL
    if not path.is_file() and not given:
        path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                               "-q", "-d", str(path.parent), REQUIREMENT], capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise DlboxError(f"cannot get {REQUIREMENT} for the gRPC API ({tail}); "
                             f"set DLBOX_SERVING_API_WHEEL to a copy of {WHEEL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != WHEEL_SHA256:
        raise DlboxError(f"{path}: sha256 {digest[:16]}… is not the pinned {REQUIREMENT} wheel")
    return path


def _members(archive: zipfile.ZipFile) -> list[str]:
    out = []
    for name in archive.namelist():
        parts = PurePosixPath(name).parts
        if (parts and parts[0] == "tensorflow_serving" and name.endswith(".py") and ".." not in parts
                and not name.startswith("/") and "\\" not in name):
            out.append(name)
    return out


def prepare() -> Path:
    """The lib folder of this dlbox's server program and the pinned protos, made once: its name is
    their hash, so a running deployment's folder is never changed under it (a new dlbox makes a new one).
    Root's, world-readable: the container's user reads it."""
    program = resources.files("dlbox.serving").joinpath(f"files/{PROGRAM}").read_bytes()
    stamp = hashlib.sha256(program + WHEEL_SHA256.encode()).hexdigest()[:16]
    target = config.home() / "lib" / f"serving-{stamp}"
    if (target / PROGRAM).is_file():
        return target
    with zipfile.ZipFile(wheel()) as archive:
        files = {name: archive.read(name) for name in _members(archive)}
    partial = target.with_name(f".serving.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    for name, data in [*files.items(), (PROGRAM, program)]:
        path = partial / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    for folder in [partial, *(p for p in partial.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)
    target.parent.chmod(0o755)
    try:
        partial.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(partial, ignore_errors=True)
    return target
