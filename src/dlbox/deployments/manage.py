"""Deployments: record the intent, start it, show it, remove it, and reconcile it (the loop).

The store holds what should run (model, alias or pinned versions, ports, limits); the engine holds
what runs. `serve` starts the container first and writes the row only once it exists, removing the
container if the row cannot be written: a failed serve leaves neither. The loop's `Reconciler` brings
back a container that is gone or dead beyond its restart policy, and follows a moved alias by linking
the new version's files into the deployment's models folder and moving the label (the server loads
and warms it before switching: no failed request, no new container). A version trained in another
image needs a new container: that one re-create is a brief gap, said in `last_error`'s place as a note.
"""

from __future__ import annotations

import threading
import time

from dlbox import config
from dlbox.deployments.intent import Action, Facts, Request, Want, check, decide
from dlbox.engine import api as engine
from dlbox.errors import DlboxError, Forbidden, NotFound
from dlbox.models import refs, registry
from dlbox.progress import Progress
from dlbox.serving import deploy as serving
from dlbox.serving.plan import container_name
from dlbox.store.db import Deployment, Store
from dlbox.supply import distribute

PERIOD = 2.0  # the loop looks at deployments at most this often
RECREATE_PAUSE = 30.0  # at most one re-create of a deployment in this long (a crashing one is not hammered)
LOG_TAIL_MAX = 10000
_lock = threading.Lock()  # serve, rm and the reconcile pass never interleave on one deployment


# --- what should be served ------------------------------------------------------------------------


def _versions(store: Store, caller: str, model_owner: str | None, model_name: str, alias: str | None,
              pinned: list[int] | None, *, admin: bool) -> tuple[Want, dict[int, registry.ModelVersion]]:
    """The versions to hold, from the registry, as `caller` sees it (NotFound for a hidden model)."""
    if alias is not None:
        found = [registry.resolve(store, caller, refs.Ref(model_name, alias=alias, owner=model_owner), admin=admin)]
    elif pinned:
        found = [registry.resolve(store, caller, refs.Ref(model_name, version=v, owner=model_owner), admin=admin)
                 for v in pinned]
    else:
        found = [registry.resolve(store, caller, refs.Ref(model_name, owner=model_owner), admin=admin)]
    images = {v.image_id for v in found}
    if len(images) > 1:
        raise DlboxError(f"versions {', '.join(str(v.version) for v in found)} of {model_name} were trained in "
                         "different images: serve them as separate deployments", code="invalid")
    by_number = {v.version: v for v in found}
    labels = {alias: found[0].version} if alias is not None else {}
    serve = () if alias is not None else tuple(sorted(by_number))
    return Want(image_id=found[0].image_id, versions=tuple(sorted(by_number)), labels=labels, serve=serve), by_number


def _digests(versions: dict[int, registry.ModelVersion]) -> list[str]:
    return sorted({d for v in versions.values() for d in v.repo_digests})


def _image(want: Want, versions: dict[int, registry.ModelVersion]) -> list[str]:
    """Make sure the engine has the versions' image: pulled by a recorded repository digest when it lacks
    it. Its repository digests (recorded and the engine's own), for the deployment's row."""
    digests = _digests(versions)
    if distribute.ensure(want.image_id, digests, Progress(quiet=True), "serve") is None:
        raise DlboxError(f"the image {want.image_id[:19]} the model was trained in is not in the engine"
                         + (" and could not be pulled by its digest" if digests else
                            " and no repository digest of it was recorded (push it with `dlbox push`)"),
                         code="not_built")
    found = engine.image_attrs(want.image_id).get("RepoDigests") or []
    return sorted(set(digests) | set(found))


def _want(store: Store, row: Deployment):
    return _versions(store, row.model_owner, row.model_owner, row.model_name, row.alias, row.versions, admin=True)


# --- serve ------------------------------------------------------------------------------------------


def serve(store: Store, caller: str, request: Request, *, admin: bool = False, default_host: str = "127.0.0.1",
          choose_host: bool = True) -> dict:
    """Record deployment `request` for `caller` and start it; the description, with its endpoints."""
    req = check(request)
    if req.host is not None and not choose_host and req.host != default_host:
        raise Forbidden("the server chooses the host deployments listen on; leave --host out")
    ref = refs.resolve(req.model)
    model = registry.find(store, caller, ref.name, owner=ref.owner, admin=admin)
    pinned = list(req.versions) if req.versions is not None else None
    want, versions = _versions(store, caller, model.owner, model.name, req.alias, pinned, admin=admin)
    if req.alias is None and pinned is None:
        pinned = list(want.versions)  # NAME alone: its newest version now, pinned (not whatever comes later)
    host = req.host or default_host
    with _lock:
        if store.get_deployment(req.name) is not None or engine.container_attrs(container_name(req.name)):
            raise DlboxError(f"a deployment named {req.name} already exists (see `dlbox deployments ls`; "
                             "--name gives another)", code="exists")
        repo_digests = _image(want, versions)
        dep = serving.up(req.name, caller, want.image_id, {n: v.files for n, v in versions.items()}, want.labels,
                         model.name, req.port, req.grpc_port, host, req.memory, linked=True, serve=list(want.serve),
                         batch_max=req.batch_max, batch_timeout_ms=req.batch_timeout_ms or 2.0)
        try:
            store.add_deployment(Deployment(
                name=req.name, owner=caller, model_owner=model.owner, model_name=model.name, alias=req.alias,
                versions=pinned if req.alias is None else None, port=int(dep.rest_url.rsplit(":", 1)[1]),
                grpc_port=int(dep.grpc_target.rsplit(":", 1)[1]) if dep.grpc_target else None, host=host,
                memory=req.memory, replicas=1, batch_max=req.batch_max,
                batch_timeout_ms=req.batch_timeout_ms or 2.0, desired="running", restarts=0,
                image_id=want.image_id, repo_digests=repo_digests))
        except BaseException:
            serving.remove(req.name)
            raise
    return describe(store.get_deployment(req.name))


# --- showing ----------------------------------------------------------------------------------------


def _url_host(host: str) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"[{host}]" if ":" in host else host


def facts(name: str, attrs: dict | None = None) -> tuple[Facts, dict | None]:
    """What the engine says of deployment `name`'s container (and its host folder), and the raw attrs."""
    attrs = attrs if attrs is not None else engine.container_attrs(container_name(name))
    if attrs is None:
        return Facts(status=None), None
    current = serving.current_labels(name) or {}
    state = attrs.get("State") or {}
    policy = (attrs.get("HostConfig") or {}).get("RestartPolicy") or {}
    return Facts(status=state.get("Status"), exit_code=state.get("ExitCode"),
                 restart_count=int(attrs.get("RestartCount") or 0),
                 restart_max=int(policy.get("MaximumRetryCount") or 0), image_id=attrs.get("Image"),
                 versions=tuple(serving.linked_versions(name)),
                 labels={str(k): int(v) for k, v in (current.get("labels") or {}).items()},
                 serve=tuple(int(v) for v in current.get("versions") or ())), attrs


def describe(row: Deployment) -> dict:
    seen, attrs = facts(row.name)
    ours = attrs is not None and (attrs["Config"].get("Labels") or {}).get("dlbox.home") == config.home_id()
    health = ((attrs or {}).get("State") or {}).get("Health", {}) or {}
    url_host = _url_host(row.host)
    return {
        "name": row.name, "owner": row.owner, "model": row.model_name, "model_owner": row.model_owner,
        "follows": row.alias, "pinned": list(row.versions) if row.versions else None,
        "state": (seen.status or "missing") if ours or attrs is None else "foreign",
        "health": health.get("Status"), "labels": dict(seen.labels), "versions": list(seen.versions),
        "serving": sorted(set(seen.labels.values()) | set(seen.serve)),
        "restart_count": seen.restart_count, "recreated": row.restarts, "restarts": seen.restart_count + row.restarts,
        "last_error": row.last_error, "image_id": seen.image_id or row.image_id,
        "repo_digests": list(row.repo_digests or []),
        "rest_url": f"http://{url_host}:{row.port}", "predict_url": f"http://{url_host}:{row.port}/v1/models/"
                                                                    f"{row.model_name}:predict",
        "grpc_target": f"{url_host}:{row.grpc_port}" if row.grpc_port else None,
        "host": row.host, "port": row.port, "grpc_port": row.grpc_port, "memory": row.memory, "replicas": row.replicas,
        "batching": {"max": row.batch_max, "timeout_ms": row.batch_timeout_ms} if row.batch_max else None,
        "desired": row.desired, "created_at": registry.iso(row.created_at), "updated_at": registry.iso(row.updated_at),
    }


def _visible(store: Store, caller: str, name: str, *, admin: bool) -> Deployment:
    row = store.get_deployment(name) if isinstance(name, str) and len(name) <= 64 else None
    if row is None or not (admin or row.owner == caller):
        raise NotFound(f"no deployment {name!r} (see `dlbox deployments ls`)")
    return row


def listing(store: Store, caller: str, *, admin: bool = False) -> list[dict]:
    return [describe(r) for r in store.deployments(None if admin else caller)]


def show(store: Store, caller: str, name: str, *, admin: bool = False) -> dict:
    return describe(_visible(store, caller, name, admin=admin))


def remove(store: Store, caller: str, name: str, *, admin: bool = False) -> dict:
    """The intent goes first (the loop then leaves it alone), then the container and the host folder."""
    with _lock:
        row = _visible(store, caller, name, admin=admin)
        store.remove_deployment(row.name)
        serving.remove(row.name)
    return {"name": row.name, "removed": True}


def logs(store: Store, caller: str, name: str, *, admin: bool = False, tail: int = 200) -> str:
    """The server's output (request lines without payloads, loads, errors): the last `tail` lines."""
    row = _visible(store, caller, name, admin=admin)
    if engine.container_attrs(container_name(row.name)) is None:
        raise NotFound(f"deployment {row.name} has no container right now (the loop starts it again)")
    chunks = engine.logs(container_name(row.name), tail=max(1, min(int(tail), LOG_TAIL_MAX)))
    return b"".join(chunks).decode("utf-8", errors="replace")


# --- reconcile --------------------------------------------------------------------------------------


class Reconciler:
    """One pass a PERIOD at most, from the loop: each running deployment made to match its row."""

    def __init__(self, store: Store):
        self.store = store
        self.last_pass = 0.0
        self.recreated_at: dict[str, float] = {}

    def maybe_run(self) -> None:
        if time.monotonic() - self.last_pass >= PERIOD:
            self.run_once()

    def run_once(self) -> None:
        self.last_pass = time.monotonic()
        for row in self.store.deployments():
            if row.desired != "running":
                continue
            with _lock:
                current = self.store.get_deployment(row.name)  # rm may have taken it meanwhile
                if current is None:
                    continue
                try:
                    note = self.reconcile(current)
                except Exception as exc:  # noqa: BLE001 - one deployment's trouble never stops the others
                    note = (f"{type(exc).__name__}: {exc}" if not isinstance(exc, DlboxError) else exc.message)
                    note = note.splitlines()[0][:500] if note else type(exc).__name__
                if note != current.last_error:
                    self.store.update_deployment(current.name, last_error=note)

    def reconcile(self, row: Deployment) -> str | None:
        """Act for one deployment; gives the note to keep as its last error (None: all is well)."""
        want, versions = _want(self.store, row)
        seen, attrs = facts(row.name)
        if attrs is not None and (attrs["Config"].get("Labels") or {}).get("dlbox.home") != config.home_id():
            return f"the container name {container_name(row.name)} is held by something else; dlbox leaves it"
        action = decide(want, seen)
        if action.kind == "wait":
            return row.last_error
        if action.kind == "none":  # all is well; a note of a re-create stays (the restarts count it too)
            return row.last_error if (row.last_error or "").startswith("started again") else None
        if action.kind == "move":
            serving.move_labels(row.name, want.labels, list(want.serve),
                                add={n: versions[n].files for n in action.add})
            return None
        return self._start_again(row, want, versions, action)

    def _start_again(self, row: Deployment, want: Want, versions: dict, action: Action) -> str | None:
        now = time.monotonic()
        if now - self.recreated_at.get(row.name, -RECREATE_PAUSE) < RECREATE_PAUSE:
            return f"{action.reason}; started again less than {RECREATE_PAUSE:.0f}s ago, waiting"
        self.recreated_at[row.name] = now
        repo_digests = _image(want, versions)  # before the old container goes: a pull that fails keeps it
        serving.remove(row.name)
        serving.up(row.name, row.owner, want.image_id, {n: v.files for n, v in versions.items()}, want.labels,
                   row.model_name, row.port, row.grpc_port, row.host, row.memory, linked=True,
                   serve=list(want.serve), batch_max=row.batch_max, batch_timeout_ms=row.batch_timeout_ms)
        self.store.update_deployment(row.name, restarts=row.restarts + 1, image_id=want.image_id,
                                     repo_digests=repo_digests)
        return f"started again: {action.reason}"
