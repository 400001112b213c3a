"""Images: build a spec into a locked, labelled image; list, inspect and verify them.

Flow: spec -> base (bootstrapped or registry) -> rendered Dockerfile -> engine build ->
packages read back out of the image -> lock -> labels and content tag.

A build the engine answers entirely from its cache gives the same image ID as before. Each build records
(in $DLBOX_HOME/builds/) which labelled image it made of the engine's image and with which lock; the next
build of that same ID takes the lock from there instead of reading the packages in another helper
container, and, labels equal, tags that same image instead of committing another one (`_earlier`). The
record is dlbox's own: an image someone derived from a dlbox image carries its labels, never its record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from typing import TYPE_CHECKING

from dlbox.engine import api as engine
from dlbox.errors import DlboxError, NotFound, UsageError

if TYPE_CHECKING:  # listing images must stay fast: the heavy modules load only to build
    from dlbox.build import lock as locks
    from dlbox.progress import Progress
    from dlbox.spec.model import Spec

LOCK_PATH = "/opt/dlbox/dlbox.lock"  # the image carries its own lock and spec
SPEC_PATH = "/opt/dlbox/dlbox.yaml"
LOCK_HASH_LABEL = "dlbox.lock-hash"


@dataclass(frozen=True)
class BuildResult:
    image: str
    id: str
    lock: locks.Lock
    lock_file: Path
    tags: list[str]

    def to_json(self) -> dict:
        return {"image": self.image, "id": self.id, "lock_hash": self.lock.hash,
                "lock_file": str(self.lock_file), "tags": self.tags}


def repository(spec: Spec) -> str:
    return f"dlbox/{spec.name}"


def load_source(spec_file: Path | None, preset: str | None):
    """(spec, project directory, lock file) from a SPEC argument, --preset, or ./dlbox.yaml."""
    from dlbox import config
    from dlbox.spec import presets as p
    from dlbox.spec import model as specs

    if spec_file and preset:
        raise UsageError("give either a SPEC file or --preset, not both")
    if preset:
        spec = specs.parse(p.text(preset), source=f"preset {preset}")
        lock_dir = config.home() / "presets"
        return spec, Path.cwd(), lock_dir / f"{preset}.lock"
    if spec_file is None:
        spec_file = Path("dlbox.yaml")
        if not spec_file.exists():
            raise UsageError("no SPEC given and no dlbox.yaml here; give a SPEC file or --preset NAME "
                             "(`dlbox init --preset NAME` writes one)")
    spec = specs.load(spec_file)
    spec_file = spec_file.resolve()
    return spec, spec_file.parent, spec_file.with_suffix(".lock")


def usable_lock(spec: Spec, lock_file: Path, progress: Progress) -> locks.Lock | None:
    """The lock to build from, if it still describes this spec."""
    from dlbox.build import lock as locks

    if not lock_file.exists():
        return None
    lock = locks.read(lock_file)
    if lock.spec_hash != spec.environment_hash():
        progress.step(f"{lock_file.name} is for an older version of the spec; resolving packages again")
        return None
    return lock


def build(spec: Spec, *, project_dir: Path, lock_file: Path, use_lock: bool = True, nocache: bool = False,
          ca_bundle: Path | None = None, tag: str = "latest", require_lock: bool = False,
          progress: Progress) -> BuildResult:
    """Build `spec`; with `require_lock`, only exactly the lock in `lock_file` (or fail)."""
    from dlbox.build import bases

    pinned = usable_lock(spec, lock_file, progress) if use_lock else None
    base = bases.ensure(spec.base, progress)
    if require_lock and (pinned is None or pinned.base != base):
        raise DlboxError(f"cannot rebuild exactly {lock_file.name}: it was made on base "
                         f"{pinned.base.rootfs_sha256 if pinned else '?'} and this engine's base is "
                         f"{base.rootfs_sha256}", code="lock_mismatch")
    if pinned is not None and pinned.base != base:
        progress.step(f"{lock_file.name} was made on another base ({pinned.base.ref}); resolving packages again")
        pinned = None
    shape = "lock" if pinned is not None else "spec"
    if pinned is not None and not nocache and _last_shape(spec, pinned) == "spec":
        # The newest image of exactly this lock was built from the spec's own requirements: render
        # the same Dockerfile so every layer comes from the cache (the engine follows the newest
        # matching layers). The lock check below still applies.
        shape = "spec"
    result = _build_once(spec, base, pinned, shape, project_dir=project_dir, lock_file=lock_file, nocache=nocache,
                         ca_bundle=ca_bundle, tag=tag, progress=progress)
    if result is None:  # the cache no longer held the locked set: install it from the lock instead
        progress.step(f"the cached layers no longer match {lock_file.name}; installing from the lock")
        result = _build_once(spec, base, pinned, "lock", project_dir=project_dir, lock_file=lock_file,
                             nocache=nocache, ca_bundle=ca_bundle, tag=tag, progress=progress)
    return result


def spec_yaml(spec: Spec) -> str:
    from dlbox.spec.model import to_yaml

    return to_yaml(spec)


def _last_shape(spec: Spec, lock: locks.Lock) -> str | None:
    """How the newest image of this spec and lock was rendered ("spec" or "lock"), if there is one."""
    same = [i for i in list_images(include_untagged=True)
            if i["spec_hash"] == spec.environment_hash() and i["lock_hash"] == lock.hash]
    return same[0]["from"] if same else None


def _build_once(spec, base, pinned, shape, *, project_dir, lock_file, nocache, ca_bundle, tag, progress):
    """One engine build; None when a spec-shaped build of a locked spec did not reproduce the lock."""
    from dlbox import gitinfo
    from dlbox.build import context
    from dlbox.build import render
    from dlbox.build import lock as locks

    plan = render.render(spec, base.ref, lock=pinned if shape == "lock" else None, ca_bundle=ca_bundle is not None)
    code_dir = (project_dir / spec.code.src).resolve() if spec.code else None
    if code_dir is not None and not code_dir.is_dir():
        raise DlboxError(f"code.src: {code_dir} is not a directory", code="build_failed")
    ctx = context.make(plan, ca_bundle=ca_bundle.read_bytes() if ca_bundle else None, code_dir=code_dir)
    how = {"lock": f"from {lock_file.name}", "spec": "resolving the spec's requirements"}[shape]
    if pinned is not None and shape == "spec":
        how = f"locked by {lock_file.name}, layers cached"
    progress.step(f"building {repository(spec)} ({how})")
    try:
        built = engine.build(ctx, nocache=nocache, on_line=progress.line)
    except engine.BuildFailed as exc:
        progress.show_tail(exc.tail)
        raise
    git = gitinfo.describe(project_dir)
    wanted = {LOCK_HASH_LABEL: "", "dlbox.git-commit": git["commit"] or "",
              "dlbox.git-dirty": str(git["dirty"]).lower(), "dlbox.from": shape}
    earlier = None if nocache else _earlier(built)
    lock = _earlier_lock(earlier, pinned) if earlier else None
    if lock is not None:
        progress.step(f"the engine's cache gave {built[:19]}, whose packages an earlier build read: lock "
                      f"{lock.hash[:12]}")
    else:
        progress.step("reading the installed packages for the lock")
        listing = engine.read_packages(built)
        lock = locks.from_listing(name=spec.name, spec_hash=spec.environment_hash(), base=base, listing=listing)
    if not lock.python.version.startswith(f"{spec.python}."):
        _discard(built)
        raise DlboxError(f"python: the image has Python {lock.python.version}, the spec says {spec.python}",
                         code="build_failed")
    if pinned is not None and lock.hash != pinned.hash:
        _discard(built)  # never keep an image that contradicts its lock
    if pinned is not None and lock.hash != pinned.hash and shape == "spec":
        return None
    if pinned is not None and lock.hash != pinned.hash:
        changes = locks.diff_packages(pinned, lock)
        first = changes[0] if changes else {"name": "base"}
        raise DlboxError(f"the rebuilt image does not match {lock_file.name} ({len(changes)} differences, "
                         f"first: {first['name']} {first.get('locked')} -> {first.get('found')}); "
                         "rebuild with --update-lock to accept the new set", code="lock_mismatch")
    wanted[LOCK_HASH_LABEL] = lock.hash
    same = earlier is not None and all(_labels(earlier).get(k) == v for k, v in wanted.items())
    final = earlier["Id"] if same else engine.relabel(built, wanted, files=[
        (LOCK_PATH, lock.to_json().encode(), 0o644, 0), (SPEC_PATH, spec_yaml(spec).encode(), 0o644, 0)])
    _record(built, final)
    tags = [f"{repository(spec)}:{lock.hash[:12]}", f"{repository(spec)}:{tag}"]
    for full in tags:
        repo, _, name = full.rpartition(":")
        engine.tag(final, repo, name)
    locks.write(lock, lock_file)
    progress.step(f"built {tags[-1]} ({final[:19]}), lock {lock.hash[:12]} written to {lock_file}")
    return BuildResult(image=tags[-1], id=final, lock=lock, lock_file=lock_file, tags=tags)


def _record_path(built: str) -> Path:
    from dlbox import config

    return config.home() / "builds" / (built.removeprefix("sha256:")[:64] + ".json")


def _record(built: str, final: str) -> None:
    """Remember which labelled image this build made of the engine's image `built` (best effort)."""
    import os
    import threading

    path = _record_path(built)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # builds run in threads too
        partial.write_text(json.dumps({"built": built, "image": final}))
        partial.replace(path)
    except OSError:
        pass  # without the record the next build reads the packages again


def _earlier(built: str) -> dict | None:
    """The labelled image (its inspect document) that an earlier build here made of `built`, if it is there."""
    try:
        record = json.loads(_record_path(built).read_text())
        if record.get("built") != built:
            return None
        attrs = engine.image_attrs(record["image"])
    except (OSError, ValueError, KeyError, TypeError, NotFound):
        return None
    return attrs if attrs.get("Id") == record["image"] and LOCK_HASH_LABEL in _labels(attrs) else None


def _earlier_lock(earlier: dict, pinned: locks.Lock | None) -> locks.Lock | None:
    """The lock of `built`'s packages as the earlier build read them: an image ID is a hash of the image's
    content, so the same ID holds the same packages. Without a lock file it is read from that image (no
    container starts); a lock file that disagrees is checked against the packages as usual (None)."""
    recorded = _labels(earlier).get(LOCK_HASH_LABEL)
    if pinned is not None:
        return pinned if recorded == pinned.hash else None
    lock = lock_of(earlier)
    return lock if lock.hash == recorded else None


# --- reading images back ------------------------------------------------------------------


def _discard(image_id: str) -> None:
    """Remove a build that must not be kept. It may be a cached layer that a tagged image still uses:
    then the engine keeps it, which is fine (it carries no tag), and the caller's error is the one to show."""
    try:
        engine.remove_image(image_id, force=True)
    except DlboxError:
        pass


def _labels(attrs: dict) -> dict:
    return attrs.get("Labels") or attrs.get("Config", {}).get("Labels") or {}


def summary(attrs: dict) -> dict:
    """One image as the listing shows it; from an inspect document or a list summary."""
    labels = _labels(attrs)
    tags = sorted(t for t in attrs.get("RepoTags") or [] if t != "<none>:<none>")
    content = [t for t in tags if t.endswith(":" + labels.get(LOCK_HASH_LABEL, "-")[:12])]
    friendly = [t for t in tags if t not in content]
    created = attrs.get("Created", "")
    return {
        "ref": (friendly or content or [attrs["Id"]])[0],
        "id": attrs["Id"],
        "name": labels.get("dlbox.name"),
        "tags": tags,
        "lock_hash": labels.get(LOCK_HASH_LABEL),
        "from": labels.get("dlbox.from"),
        "spec_hash": labels.get("dlbox.spec-hash"),
        "git_commit": labels.get("dlbox.git-commit") or None,
        "git_dirty": labels.get("dlbox.git-dirty") == "true",
        "dlbox_version": labels.get("dlbox.version"),
        "services": [s for s in labels.get("dlbox.services", "").split(",") if s],
        "user": labels.get("dlbox.user"),
        "uid": labels.get("dlbox.uid"),
        "size": attrs.get("Size"),
        "created": _iso(created),
    }


def _iso(created: str | int) -> str:
    if isinstance(created, int):  # list summaries give epoch seconds
        stamp = datetime.fromtimestamp(created, timezone.utc)
    else:  # inspect gives RFC 3339 with nanoseconds
        try:
            stamp = datetime.fromisoformat(created[:19]).replace(tzinfo=timezone.utc)
        except ValueError:
            return created
    return stamp.isoformat().replace("+00:00", "Z")


def list_images(*, include_untagged: bool = False) -> list[dict]:
    """Images built by dlbox, newest first; untagged (replaced) ones only when asked."""
    found = [summary(a) for a in engine.list_images([engine.MANAGED, LOCK_HASH_LABEL])]
    if not include_untagged:
        found = [image for image in found if image["tags"]]
    return sorted(found, key=lambda s: (s["created"], s["ref"]), reverse=True)


def get(ref: str) -> dict:
    attrs = engine.image_attrs(ref)
    if LOCK_HASH_LABEL not in _labels(attrs):
        raise NotFound(f"{ref!r} is not an image built by dlbox (it has no lock label)")
    return attrs


def lock_of(attrs: dict) -> locks.Lock:
    from dlbox.build import lock as locks

    return locks.parse_text(engine.read_file(attrs["Id"], LOCK_PATH).decode(), source=attrs["Id"])


def inspect(ref: str) -> dict:
    attrs = get(ref)
    return {**summary(attrs), "lock": json.loads(lock_of(attrs).to_json())}


def verify(ref: str) -> dict:
    attrs = get(ref)
    lock = lock_of(attrs)
    found = engine.read_packages(attrs["Id"])
    from dlbox.build import lock as locks

    drift = locks.drift(lock, found)
    return {"ok": not drift, "image": ref, "id": attrs["Id"], "lock_hash": lock.hash, "drift": drift}



def find_built(spec: Spec) -> dict | None:
    """The newest tagged image built from exactly this spec, if any."""
    candidates = [i for i in list_images() if i["name"] == spec.name and i["spec_hash"] == spec.environment_hash()]
    return candidates[0] if candidates else None


def ensure(spec: Spec, *, project_dir: Path, lock_file: Path, progress: Progress) -> dict:
    """The image for `spec`: the one already built, or a new build (with progress)."""
    from dlbox import config

    found = find_built(spec)
    if found is None:
        progress.step(f"no image for {spec.name} yet; building it")
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        result = build(spec, project_dir=project_dir, lock_file=lock_file, ca_bundle=config.default_ca_bundle(),
                       progress=progress)
        attrs = engine.image_attrs(result.id)
        found = summary(attrs) | {"env": attrs["Config"].get("Env") or []}  # up needs it: no second inspect
    return found
