"""The registry's domain: register a run's SavedModel as version N, resolve references, move
aliases (every move recorded), and who sees what. The API's routes, the dashboard and the
inference service all call these; the store keeps the rows, files.py the files.

Models live in their owner's namespace. A caller sees their own models, the shared ones (an admin
shares), and (an admin) all; anything else does not exist for them (the same NotFound as a missing
one). Only the owner or an admin changes a model.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from dlbox.errors import DlboxError, Forbidden, NotFound, UsageError
from dlbox.jobs import runner as jobs
from dlbox.jobs.state import JobState
from dlbox.models import files, refs, signature
from dlbox.models.refs import Ref
from dlbox.store.db import Model, Store
from dlbox.store.db import ModelVersion as VersionRow

DEFAULT_PATH = "model"
PATH_PART = re.compile(r"[A-Za-z0-9_.+=-][A-Za-z0-9_.+= -]{0,127}")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version, as serving and every listing see it. `files` is its read-only folder."""

    owner: str
    name: str
    version: int
    files: Path
    files_hash: str
    files_bytes: int
    image_id: str
    lock_hash: str | None
    run_id: str
    git_commit: str | None
    git_dirty: bool
    code_hash: str | None
    metrics: dict
    signature: dict
    path: str
    registered_by: str
    registered_at: float
    aliases: tuple[str, ...] = field(default=())
    verdict: str | None = None  # a pipeline's candidate: "blessed" or "rejected"; None: registered by hand
    verdict_detail: dict | None = None  # the gate's verdict, metric by metric
    pipeline_id: str | None = None
    repo_digests: tuple[str, ...] = field(default=())

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["files"] = str(self.files)
        data["aliases"] = list(self.aliases)
        data["repo_digests"] = list(self.repo_digests)
        data["registered_at"] = iso(self.registered_at)
        return data


def _repo_digests(job) -> list[str]:
    """The job's recorded repository digests, and any the image has gained since (pushed after the run)."""
    from dlbox.engine import api as engine

    found = list(job.repo_digests or [])
    try:
        found += [d for d in engine.image_attrs(job.image_id).get("RepoDigests") or [] if d not in found]
    except DlboxError:  # the image is gone, or the engine does not answer: what was recorded stays
        pass
    return found


def iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z" if ts else None


def _version(model: Model, row: VersionRow, aliases: tuple[str, ...] = ()) -> ModelVersion:
    return ModelVersion(
        owner=model.owner, name=model.name, version=row.version, files=files.object_dir(row.files_hash),
        files_hash=row.files_hash, files_bytes=row.files_bytes, image_id=row.image_id, lock_hash=row.lock_hash,
        run_id=row.run_id, git_commit=row.git_commit, git_dirty=bool(row.git_dirty), code_hash=row.code_hash,
        metrics=dict(row.metrics or {}), signature=dict(row.signature or {}), path=row.path,
        registered_by=row.registered_by, registered_at=row.registered_at, aliases=aliases, verdict=row.verdict,
        verdict_detail=row.verdict_detail, pipeline_id=row.pipeline_id, repo_digests=tuple(row.repo_digests or ()))


# --- who sees what ------------------------------------------------------------------------------


def find(store: Store, caller: str, name: str, *, owner: str | None = None, admin: bool = False) -> Model:
    """Model `name` in `owner`'s namespace (default the caller's), if the caller may see it."""
    refs.check_name(name)
    model = store.get_model(owner or caller, name)
    if model is None or not (admin or model.owner == caller or model.shared):
        shown = f"{owner}/{name}" if owner and owner != caller else name
        raise NotFound(f"no model {shown!r} (see `dlbox models ls`)")
    return model


def writable(store: Store, caller: str, name: str, *, owner: str | None = None, admin: bool = False) -> Model:
    model = find(store, caller, name, owner=owner, admin=admin)
    if not admin and model.owner != caller:
        raise Forbidden(f"model {model.owner}/{model.name} is shared with you to use; only its owner changes it")
    return model


def _aliases_by_version(store: Store, model: Model) -> dict[int, tuple[str, ...]]:
    found: dict[int, list[str]] = {}
    for a in store.model_aliases(model.id):
        found.setdefault(a.version, []).append(a.alias)
    return {v: tuple(names) for v, names in found.items()}


def resolve(store: Store, owner: str, ref: str | Ref, *, admin: bool = False) -> ModelVersion:
    """The version `ref` names (NAME: the newest; NAME:3; NAME@alias; OWNER/ first for a shared one),
    as seen by user `owner` (`admin`: sees every namespace). NotFound for a missing or hidden one."""
    parsed = ref if isinstance(ref, Ref) else refs.resolve(ref)
    model = find(store, owner, parsed.name, owner=parsed.owner, admin=admin)
    aliases = _aliases_by_version(store, model)
    if parsed.alias is not None:
        number = {a: v for v, names in aliases.items() for a in names}.get(parsed.alias)
        if number is None:
            raise NotFound(f"model {model.name} has no alias {parsed.alias!r} (see `dlbox models show {model.name}`)")
    elif parsed.version is not None:
        number = parsed.version
    else:
        rows = store.model_versions(model.id)
        if not rows:
            raise NotFound(f"model {model.name} has no versions left")
        number = rows[-1].version
    row = store.get_model_version(model.id, number)
    if row is None:
        raise NotFound(f"model {model.name} has no version {number}")
    return _version(model, row, aliases.get(number, ()))


# --- registering --------------------------------------------------------------------------------


def check_path(path: str) -> str:
    """A folder inside the run's artifacts: relative, no '..', plain names."""
    parts = PurePosixPath(path).parts if isinstance(path, str) and path else ()
    if not parts or path.startswith("/") or len(path) > 512 or not all(
            p not in (".", "..") and PATH_PART.fullmatch(p) for p in parts):
        raise UsageError(f"--path {path!r} is not a folder inside the run's artifacts (e.g. model, out/saved)")
    return "/".join(parts)


FORMATS = ("savedmodel", "files")
VERDICTS = ("blessed", "rejected")
EMPTY_SIGNATURE = {"tags": [], "signatures": {}}


def register(store: Store, owner: str, name: str, *, run: str, path: str = DEFAULT_PATH,
             admin: bool = False, format: str = "savedmodel", metrics: dict | None = None,
             verdict: str | None = None, verdict_detail: dict | None = None,
             pipeline_id: str | None = None) -> ModelVersion:
    """Make the next version of `owner`'s model `name` from the SavedModel at `path` in run `run`'s artifacts.

    The files are copied into a staging folder, frozen, hashed and their signature read in the run's own
    image; only then do they move to their content-addressed place and the version row is written. Any
    failure leaves no version row and no new files.

    A pipeline's register stage passes the rest: `format="files"` takes any folder of regular files (no
    signature is read: it has none; serving needs a SavedModel), `metrics` the evaluation's (instead of
    the run's), and the gate's `verdict` ("blessed" or "rejected") with its detail."""
    refs.check_name(name)
    clean = check_path(path)
    job = store.get_job(run) if isinstance(run, str) and run.isalnum() and len(run) <= 32 else None
    if job is None or not (admin or job.user == owner):
        raise NotFound(f"no run {run!r} (see `dlbox runs`)")
    if job.state != JobState.SUCCEEDED.value:
        raise DlboxError(f"run {job.id} is {job.state}: only a succeeded run's model can be registered",
                         code="not_finished")
    what = f"{clean} in run {job.id}'s artifacts"
    kept = jobs.artifacts(job.id)
    if any(link["path"] == clean or link["path"].startswith(clean + "/") for link in kept.get("links") or []):
        raise files.NotAModel(f"{what} held links when the run ended (kept as links, not files): save the model "
                              "as regular files")
    source = jobs.run_dir(job.id) / "artifacts" / clean
    if not os.path.lexists(source):
        raise files.NotAModel(f"there is no {what} (see `dlbox runs show {job.id}`)")
    if not os.path.isdir(source) or os.path.islink(source):
        raise files.NotAModel(f"{what} is not a folder")
    if format not in FORMATS or (verdict is not None and verdict not in VERDICTS):
        raise UsageError(f"format must be one of {', '.join(FORMATS)}; verdict one of {', '.join(VERDICTS)}")
    pb = source / "saved_model.pb"
    if format == "savedmodel" and (not os.path.isfile(pb) or os.path.islink(pb)):
        raise files.NotAModel(f"{what} is no SavedModel (it has no saved_model.pb)")
    staging = files.staging_dir()
    made = None
    try:
        files.copy_tree(source, staging, what=clean)
        files.freeze(staging)
        sig = signature.read(job.image_id, staging, what=what) if format == "savedmodel" else EMPTY_SIGNATURE
        digest = files.tree_hash(staging)
        target = files.object_dir(digest.files_hash)
        if not target.exists():
            try:
                os.rename(staging, target)
                made = target
            except OSError:  # made meanwhile by a registration of the same files
                if not target.is_dir():
                    raise
        if metrics is None:
            metrics = store.last_metrics([job.id])[job.id]
        row = store.add_model_version(
            owner, name, files_hash=digest.files_hash, files_bytes=digest.bytes, path=clean, run_id=job.id,
            image_id=job.image_id, lock_hash=job.lock_hash, git_commit=job.git_commit, git_dirty=bool(job.git_dirty),
            code_hash=_code_hash(job), metrics=metrics, signature=sig, registered_by=owner,
            registered_at=time.time(), verdict=verdict, verdict_detail=verdict_detail, pipeline_id=pipeline_id,
            repo_digests=_repo_digests(job))
    except BaseException:
        if made is not None and not store_uses(store, made.name):
            files.remove_tree(made)
        raise
    finally:
        files.remove_tree(staging)
    model = store.get_model(owner, name)
    return _version(model, row)


def store_uses(store: Store, files_hash: str) -> bool:
    try:
        return store.files_in_use(files_hash)
    except DlboxError:  # the database is away: keep the files (an orphan costs disk, a loss costs a model)
        return True


def _code_hash(job) -> str | None:
    """The run's code snapshot hash, when run records have one (a later feature may add the field)."""
    for name in ("code_hash", "snapshot_hash", "code_snapshot_hash"):
        value = getattr(job, name, None)
        if value:
            return str(value)
    return None


# --- listing, aliases, history ------------------------------------------------------------------


def summary(store: Store, model: Model) -> dict:
    rows = store.model_versions(model.id)
    return {"owner": model.owner, "name": model.name, "shared": bool(model.shared),
            "versions": [r.version for r in rows], "latest": rows[-1].version if rows else None,
            "aliases": {a.alias: a.version for a in store.model_aliases(model.id)},
            "created_at": iso(model.created_at)}


def listing(store: Store, caller: str, *, admin: bool = False, limit: int | None = None, skip: int = 0) -> list[dict]:
    found = store.models(visible_to=None if admin else caller, limit=limit, skip=skip)
    return [summary(store, m) for m in found]


def detail(store: Store, caller: str, name: str, *, owner: str | None = None, admin: bool = False) -> dict:
    model = find(store, caller, name, owner=owner, admin=admin)
    aliases = _aliases_by_version(store, model)
    versions = [_version(model, r, aliases.get(r.version, ())).to_json() for r in store.model_versions(model.id)]
    return summary(store, model) | {"version_details": versions, "history": history(store, caller, name, owner=owner,
                                                                                      admin=admin)}


def move_alias(store: Store, caller: str, name: str, alias: str, version: int | None, *, owner: str | None = None,
               admin: bool = False) -> dict:
    """Set or move `alias` to `version`, or delete it (None). Gives {owner, name, alias, version, previous}."""
    refs.check_alias(alias)
    model = writable(store, caller, name, owner=owner, admin=admin)
    if version is not None:
        refs.check_version(version)
        if store.get_model_version(model.id, version) is None:
            raise NotFound(f"model {model.name} has no version {version}")
    elif alias not in {a.alias for a in store.model_aliases(model.id)}:
        raise NotFound(f"model {model.name} has no alias {alias!r}")
    previous = store.move_alias(model.id, alias, version, by=caller)
    return {"owner": model.owner, "name": model.name, "alias": alias, "version": version, "previous": previous}


def history(store: Store, caller: str, name: str, *, owner: str | None = None, admin: bool = False) -> list[dict]:
    model = find(store, caller, name, owner=owner, admin=admin)
    return [{"alias": m.alias, "from_version": m.from_version, "to_version": m.to_version, "by": m.moved_by,
             "at": iso(m.moved_at)} for m in store.alias_history(model.id)]


def remove_version(store: Store, caller: str, name: str, version: int, *, owner: str | None = None,
                   admin: bool = False) -> dict:
    """Delete one version (its number is never given again); aliases on it go too, each a recorded move.
    Its files go when no other version has the same ones."""
    model = writable(store, caller, name, owner=owner, admin=admin)
    row = store.get_model_version(model.id, refs.check_version(version))
    if row is None:
        raise NotFound(f"model {model.name} has no version {version}")
    aliases = store.remove_model_version(model.id, row.version, by=caller)
    if not store.files_in_use(row.files_hash):
        files.remove_tree(files.object_dir(row.files_hash))
    return {"owner": model.owner, "name": model.name, "version": row.version, "removed": True, "aliases": aliases}


def share(store: Store, owner: str, name: str, shared: bool) -> dict:
    """Let every user see (and serve) `owner`'s model, or stop; the caller must be an admin (checked by the route)."""
    model = store.get_model(owner, refs.check_name(name))
    if model is None:
        raise NotFound(f"no model {owner}/{name}")
    store.share_model(model.id, shared)
    return summary(store, store.get_model(owner, name))
