"""Deployments: record the intent, start it, show it, remove it, and reconcile it (the loop).

The store holds what should run (model, alias or pinned versions, ports, replicas, limits); the engine
holds what runs: a front holding the ports and N replicas behind it (serving.fleet). `serve` starts the
containers first and writes the row only once they exist, removing them if the row cannot be written: a
failed serve leaves neither. The loop's `Reconciler` brings back a front or replica that is gone or dead
beyond its restart policy (the front sends no request to it meanwhile), follows a moved alias by linking
the new version's files into the generation and moving the label (each replica loads and warms it before
switching), and moves to a version trained in another image by a new generation of replicas: the front
switches once all of them are ready, the old generation drains and is removed (no failed request).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from dlbox import config
from dlbox.deployments.intent import Facts, Request, Want, check, decide
from dlbox.engine import api as engine
from dlbox.errors import DlboxError, Forbidden, NotFound
from dlbox.models import refs, registry
from dlbox.progress import Progress
from dlbox.serving import fleet
from dlbox.serving.fleet import Shape
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
        shape = Shape(caller, model.name, req.memory, batch_max=req.batch_max,
                      batch_timeout_ms=req.batch_timeout_ms or 2.0)
        dep = fleet.up(req.name, shape, want.image_id, {n: v.files for n, v in versions.items()}, want.labels,
                       want.serve, req.port, req.grpc_port, host, count=req.replicas)
        try:
            store.add_deployment(Deployment(
                name=req.name, owner=caller, model_owner=model.owner, model_name=model.name, alias=req.alias,
                versions=pinned if req.alias is None else None, port=int(dep.rest_url.rsplit(":", 1)[1]),
                grpc_port=int(dep.grpc_target.rsplit(":", 1)[1]) if dep.grpc_target else None, host=host,
                memory=req.memory, replicas=req.replicas, batch_max=req.batch_max,
                batch_timeout_ms=req.batch_timeout_ms or 2.0, desired="running", restarts=0,
                image_id=want.image_id, repo_digests=repo_digests))
        except BaseException:
            fleet.remove(req.name)
            raise
    return describe(store.get_deployment(req.name))


# --- showing ----------------------------------------------------------------------------------------


def _url_host(host: str) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"[{host}]" if ":" in host else host


def _facts(attrs: dict | None, versions=(), current: dict | None = None) -> Facts:
    """What the engine says of one container (and its generation's folder)."""
    if attrs is None:
        return Facts(status=None)
    current = current or {}
    state = attrs.get("State") or {}
    policy = (attrs.get("HostConfig") or {}).get("RestartPolicy") or {}
    return Facts(status=state.get("Status"), exit_code=state.get("ExitCode"),
                 restart_count=int(attrs.get("RestartCount") or 0),
                 restart_max=int(policy.get("MaximumRetryCount") or 0), image_id=attrs.get("Image"),
                 versions=tuple(versions), labels={str(k): int(v) for k, v in (current.get("labels") or {}).items()},
                 serve=tuple(int(v) for v in current.get("versions") or ()))


@dataclass
class Seen:
    """A deployment's containers as the engine has them, and the host's replicas file."""

    front: dict | None
    file: dict | None  # serving.fleet.current: generation, image, backends, previous
    replicas: dict[int, dict]  # index -> inspected, of the current generation
    others: list[dict]  # replicas of any other generation (the one moved from, while it drains)
    versions: tuple[int, ...] = ()  # the current generation's linked versions
    config: dict = field(default_factory=dict)  # its label config

    @property
    def generation(self) -> int | None:
        return self.file["generation"] if self.file else None


def seen(name: str) -> Seen:
    file = fleet.current(name)
    generation = str(file["generation"]) if file else None
    by_index, others = {}, []
    for attrs in fleet.replicas(name):
        labels = attrs["Config"].get("Labels") or {}
        if labels.get("dlbox.generation") == generation and labels.get("dlbox.replica", "").isdigit():
            by_index[int(labels["dlbox.replica"])] = attrs
        else:
            others.append(attrs)
    versions, current = fleet.generation_state(name, file["generation"]) if file else ([], {})
    return Seen(engine.container_attrs(container_name(name)), file, by_index, others, tuple(versions), current)


def _state(attrs: dict | None) -> tuple[str, str | None]:
    state = (attrs or {}).get("State") or {}
    return state.get("Status") or "missing", (state.get("Health") or {}).get("Status")


def describe(row: Deployment) -> dict:
    s = seen(row.name)
    front = _facts(s.front, s.versions, s.config)
    ours = s.front is not None and (s.front["Config"].get("Labels") or {}).get("dlbox.home") == config.home_id()
    replicas = []
    for index in range(row.replicas):
        attrs = s.replicas.get(index)
        status, health = _state(attrs)
        replicas.append({"name": fleet.replica_name(row.name, s.generation or 1, index), "generation": s.generation,
                         "state": status, "health": health,
                         "restart_count": int((attrs or {}).get("RestartCount") or 0)})
    for attrs in s.others:
        status, health = _state(attrs)
        replicas.append({"name": attrs["Name"].lstrip("/"), "state": status, "health": health,
                         "generation": int((attrs["Config"].get("Labels") or {}).get("dlbox.generation") or 0),
                         "restart_count": int(attrs.get("RestartCount") or 0)})
    engine_restarts = front.restart_count + sum(r["restart_count"] for r in replicas)
    state = (front.status or "missing") if ours or s.front is None else "foreign"
    if state == "running" and not any(r["state"] == "running" for r in replicas[:row.replicas]):
        state = "no replica running"
    url_host = _url_host(row.host)
    previous = (s.file or {}).get("previous")
    return {
        "name": row.name, "owner": row.owner, "model": row.model_name, "model_owner": row.model_owner,
        "follows": row.alias, "pinned": list(row.versions) if row.versions else None,
        "state": state, "health": _state(s.front)[1], "labels": dict(front.labels), "versions": list(front.versions),
        "serving": sorted(set(front.labels.values()) | set(front.serve)),
        "restart_count": engine_restarts, "recreated": row.restarts, "restarts": engine_restarts + row.restarts,
        "last_error": row.last_error, "image_id": (s.file or {}).get("image") or row.image_id,
        "repo_digests": list(row.repo_digests or []),
        "rest_url": f"http://{url_host}:{row.port}", "predict_url": f"http://{url_host}:{row.port}/v1/models/"
                                                                    f"{row.model_name}:predict",
        "grpc_target": f"{url_host}:{row.grpc_port}" if row.grpc_port else None,
        "host": row.host, "port": row.port, "grpc_port": row.grpc_port, "memory": row.memory, "replicas": row.replicas,
        "generation": s.generation, "moving_from": int(previous["generation"]) if previous else None,
        "replica_states": replicas,
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
    """The intent goes first (the loop then leaves it alone), then the containers and the host folder."""
    with _lock:
        row = _visible(store, caller, name, admin=admin)
        store.remove_deployment(row.name)
        fleet.remove(row.name)
    return {"name": row.name, "removed": True}


def logs(store: Store, caller: str, name: str, *, admin: bool = False, tail: int = 200) -> str:
    """The servers' output (request lines without payloads, loads, errors): the last `tail` lines of each
    replica, and the front's."""
    row = _visible(store, caller, name, admin=admin)
    s = seen(row.name)
    containers = [*(s.replicas[i] for i in sorted(s.replicas)), *s.others, *([s.front] if s.front else [])]
    if not containers:
        raise NotFound(f"deployment {row.name} has no container right now (the loop starts it again)")
    tail = max(1, min(int(tail), LOG_TAIL_MAX))
    out = []
    for attrs in containers:
        text = b"".join(engine.logs(attrs["Id"], tail=tail)).decode("utf-8", errors="replace")
        out.append(f"==> {attrs['Name'].lstrip('/')} <==\n{text}")
    return "".join(out)


# --- reconcile --------------------------------------------------------------------------------------


class Reconciler:
    """One pass a PERIOD at most, from the loop: each running deployment made to match its row."""

    def __init__(self, store: Store):
        self.store = store
        self.last_pass = 0.0
        self.recreated_at: dict[tuple, float] = {}

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
        s = seen(row.name)
        if s.front is not None and (s.front["Config"].get("Labels") or {}).get("dlbox.home") != config.home_id():
            return f"the container name {container_name(row.name)} is held by something else; dlbox leaves it"
        shape = Shape(row.owner, row.model_name, row.memory, grpc=row.grpc_port is not None,
                      batch_max=row.batch_max, batch_timeout_ms=row.batch_timeout_ms or 2.0)
        files = {n: v.files for n, v in versions.items()}
        if s.file is None:  # nothing of it is left: all of it again
            return self._again(row, ("all",), "its containers are gone",
                               lambda: self._up(row, shape, want, versions, files))
        notes = []
        front = decide(want, replace(_facts(s.front), image_id=None))  # its state only: it holds no model
        if front.kind in ("create", "recreate"):
            notes.append(self._again(row, ("front",), f"the front ({front.reason})",
                                     lambda: fleet.start_front(row.name, shape, s.file["image"], row.port,
                                                               row.grpc_port, row.host)))
        generation, image = s.generation, s.file["image"]
        for index in range(row.replicas):  # a dead replica: the front sends it nothing meanwhile
            seen_one = _facts(s.replicas.get(index), s.versions, s.config)
            action = decide(Want(image, want.versions, want.labels, want.serve), seen_one)
            if action.kind in ("create", "recreate"):
                notes.append(self._again(row, (generation, index), f"replica {index} of generation {generation} "
                                         f"({action.reason})",
                                         lambda i=index: fleet.start_replica(row.name, shape, generation, i, image)))
        if s.file.get("previous"):
            notes.append(self._moving(row))
        elif image != want.image_id:
            digests = _image(want, versions)  # pulled first: a pull that fails leaves the old generation serving
            new = fleet.begin_generation(row.name, shape, want.image_id, files, want.labels, want.serve,
                                         row.replicas)
            self.store.update_deployment(row.name, image_id=want.image_id, repo_digests=digests)
            notes.append(f"moving to generation {new} (the version was trained in another image): its "
                         f"{row.replicas} replica(s) load and warm; generation {generation} serves meanwhile")
        else:
            action = decide(want, _facts({"State": {"Status": "running"}, "Image": image}, s.versions, s.config))
            if action.kind == "move":
                fleet.move_labels(row.name, generation, want.labels, want.serve, {n: files[n] for n in action.add})
        notes = [n for n in notes if n]
        if notes:
            return "; ".join(notes)[:500]
        # all is well; a note of a start again stays (the restarts count it too)
        return row.last_error if (row.last_error or "").startswith("started again") else None

    def _moving(self, row: Deployment) -> str | None:
        """A move to a new generation under way: done once the front serves it and the old one drained."""
        now = fleet.current(row.name)
        status = fleet.front_status(row.host, row.port)
        if status and status.get("generation") == now["generation"] and not status.get("draining"):
            fleet.finish_generation(row.name)
            return None
        return (f"moving to generation {now['generation']}: waiting for its replicas to be ready "
                f"(generation {now['previous']['generation']} serves meanwhile)")

    def _up(self, row: Deployment, shape: Shape, want: Want, versions: dict, files: dict) -> None:
        digests = _image(want, versions)  # before the old containers go: a pull that fails keeps them
        fleet.remove(row.name)
        fleet.up(row.name, shape, want.image_id, files, want.labels, want.serve, row.port, row.grpc_port, row.host,
                 count=row.replicas)
        self.store.update_deployment(row.name, image_id=want.image_id, repo_digests=digests)

    def _again(self, row: Deployment, key: tuple, reason: str, start) -> str:
        """Start one part again, at most once a RECREATE_PAUSE (a crashing one is not hammered)."""
        now = time.monotonic()
        if now - self.recreated_at.get((row.name, *key), -RECREATE_PAUSE) < RECREATE_PAUSE:
            return f"{reason}; started again less than {RECREATE_PAUSE:.0f}s ago, waiting"
        self.recreated_at[(row.name, *key)] = now
        start()
        self.store.update_deployment(row.name, restarts=self.store.get_deployment(row.name).restarts + 1)
        return f"started again: {reason}"
