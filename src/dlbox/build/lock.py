"""The lock: exactly what an image holds, and its content hash.

Pure: built from a package listing read out of an image (see `engine.read_packages`),
compared against another listing for drift, and hashed canonically so that two builds with
the same package set have the same lock hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from dlbox.errors import UsageError
from dlbox.spec.model import read_text

LOCK_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PythonPackage(_Model):
    name: str
    version: str
    hashes: list[str] = []


class OsPackage(_Model):
    name: str
    version: str


class BaseInfo(_Model):
    ref: str  # the base image (tag for a bootstrapped suite, registry reference otherwise)
    rootfs_sha256: str | None = None  # sha256 of the bootstrapped root filesystem tarball


class PythonSet(_Model):
    version: str
    packages: list[PythonPackage]


class OsSet(_Model):
    packages: list[OsPackage]


class Lock(_Model):
    lock_version: int = LOCK_VERSION
    name: str
    spec_hash: str
    base: BaseInfo
    python: PythonSet
    os: OsSet

    def content(self) -> dict:
        """What the environment is; the hash covers this and nothing else."""
        return {"base": self.base.model_dump(), "python": self.python.model_dump(), "os": self.os.model_dump()}

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        """The lock file: readable in a diff, one package a line."""
        def one(value) -> str:
            return json.dumps(value, sort_keys=True)

        def packages(items) -> str:
            return "[\n" + ",\n".join(f"    {one(p.model_dump())}" for p in items) + "\n   ]"

        return (
            "{\n"
            f' "lock_version": {self.lock_version},\n'
            f' "lock_hash": {one(self.hash)},\n'
            f' "name": {one(self.name)},\n'
            f' "spec_hash": {one(self.spec_hash)},\n'
            f' "base": {one(self.base.model_dump())},\n'
            f' "python": {{"version": {one(self.python.version)}, "packages": {packages(self.python.packages)}}},\n'
            f' "os": {{"packages": {packages(self.os.packages)}}}\n'
            "}\n"
        )


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def from_listing(*, name: str, spec_hash: str, base: BaseInfo, listing: dict) -> Lock:
    """Make a lock from what `engine.read_packages` found in an image.

    `listing` = {"python_version", "python": [[name, version]...], "os": [[name, version]...],
    "report": pip's --report document or None}.
    """
    hashes = _report_hashes(listing.get("report"))
    # sorted before the dicts: a name listed twice (two dist-info folders, NumPy and numpy) then
    # resolves to the same package whatever order the listing came in, and so does the hash
    python = sorted(
        {normalize(n): PythonPackage(name=normalize(n), version=v, hashes=hashes.get((normalize(n), v), []))
         for n, v in sorted((n, v) for n, v in listing["python"])}.values(),
        key=lambda p: p.name,
    )
    os_packages = sorted({n: OsPackage(name=n, version=v) for n, v in sorted((n, v) for n, v in listing["os"])}
                         .values(), key=lambda p: p.name)
    return Lock(
        name=name,
        spec_hash=spec_hash,
        base=base,
        python=PythonSet(version=listing["python_version"], packages=python),
        os=OsSet(packages=os_packages),
    )


def _report_hashes(report: dict | None) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for item in (report or {}).get("install", []):
        meta = item.get("metadata", {})
        archive = item.get("download_info", {}).get("archive_info", {})
        digests = archive.get("hashes") or {}
        if not digests and "=" in archive.get("hash", ""):
            algo, _, value = archive["hash"].partition("=")
            digests = {algo: value}
        if "sha256" in digests:
            found[(normalize(meta.get("name", "")), meta.get("version", ""))] = [f"sha256:{digests['sha256']}"]
    return found


def drift(lock: Lock, listing: dict) -> list[dict]:
    """What the image holds that the lock does not say, as {kind, name, locked, found}."""
    out = []
    for kind, locked_pkgs, found_pairs, norm in (
        ("python", lock.python.packages, listing["python"], normalize),
        ("os", lock.os.packages, listing["os"], str),
    ):
        locked = {p.name: p.version for p in locked_pkgs}
        found = {norm(n): v for n, v in found_pairs}
        for pkg in sorted(set(locked) | set(found)):
            if locked.get(pkg) != found.get(pkg):
                out.append({"kind": kind, "name": pkg, "locked": locked.get(pkg), "found": found.get(pkg)})
    return out


def diff_packages(a: Lock, b: Lock) -> list[dict]:
    """Package differences between two locks (used by `runs diff` and rebuild checks)."""
    listing = {
        "python": [(p.name, p.version) for p in b.python.packages],
        "os": [(p.name, p.version) for p in b.os.packages],
    }
    return drift(a, listing)


def read(path: Path) -> Lock:
    return parse_text(read_text(path, "lock file"), source=f"lock file {path}")


def parse_text(text: str, *, source: str) -> Lock:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not a dlbox lock ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a dlbox lock (not a JSON object)")
    stated = data.pop("lock_hash", None)
    try:
        lock = Lock.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"{source} is not a dlbox lock: {place}: {first['msg']}") from None
    if stated and stated != lock.hash:
        raise UsageError(f"{source} was edited: its lock_hash does not match its content")
    return lock


def write(lock: Lock, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(lock.to_json())
    tmp.replace(path)
