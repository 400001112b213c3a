"""A deployment's request, checked, and the reconcile decision: pure (plain values in, plain values out).

`check` turns flags into a `Request` or one UsageError line. `decide` says what the loop does for one
deployment, given what it should be (`Want`, from the registry) and what the engine reports (`Facts`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from dlbox.containers import policy as containers
from dlbox.errors import UsageError

MAX_BATCH = 1024
MAX_REPLICAS = 8  # serving containers behind one front (plan.MAX_REPLICAS)
MIN_MEMORY = 64 * 1024**2
DEFAULT_BATCH_TIMEOUT_MS = 2.0


@dataclass(frozen=True)
class Request:
    model: str  # NAME, OWNER/NAME, NAME:3 (pinned) or NAME@alias (followed)
    alias: str | None = None
    versions: tuple[int, ...] | None = None
    port: int | None = None
    grpc_port: int | None = None
    host: str | None = None  # None: the server's choice
    memory: int | None = None  # bytes
    replicas: int = 1
    name: str | None = None  # default: the model's name
    batch_max: int = 0
    batch_timeout_ms: float | None = None


def parse_versions(text: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2): distinct version numbers, in order."""
    from dlbox.models import refs

    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise UsageError(f"--versions {text!r}: give version numbers separated by commas, e.g. 1,2")
    numbers = [refs.check_version(p) for p in parts]
    if len(set(numbers)) != len(numbers):
        raise UsageError(f"--versions {text!r}: a version is named twice")
    return tuple(numbers)


def check(req: Request) -> Request:
    """The request with its model reference split and every flag checked; one line for the first problem."""
    from dlbox.models import refs

    ref = refs.resolve(req.model)
    alias, versions = req.alias, req.versions
    if ref.alias is not None or ref.version is not None:
        if alias is not None or versions is not None:
            raise UsageError(f"{req.model}: name the version in the model (NAME:3, NAME@alias) or with "
                             "--versions/--alias, not both")
        alias = ref.alias
        versions = (ref.version,) if ref.version is not None else None
    if alias is not None and versions is not None:
        raise UsageError("give --alias (follow it) or --versions (pin them), not both")
    if alias is not None:
        refs.check_alias(alias)
    if versions is not None:
        if not versions:
            raise UsageError("--versions: give at least one version")
        versions = tuple(refs.check_version(v) for v in versions)
    if isinstance(req.replicas, bool) or not isinstance(req.replicas, int) or not 1 <= req.replicas <= MAX_REPLICAS:
        raise UsageError(f"--replicas {req.replicas}: 1 to {MAX_REPLICAS} serving containers")
    for flag, port in (("--port", req.port), ("--grpc-port", req.grpc_port)):
        if port is not None and not 1 <= port <= 65535:
            raise UsageError(f"{flag} {port}: a port is 1 to 65535")
    if req.port is not None and req.port == req.grpc_port:
        raise UsageError(f"--port and --grpc-port are both {req.port}: give two ports")
    if req.host is not None:
        try:
            ipaddress.ip_address(req.host)
        except ValueError:
            raise UsageError(f"--host {req.host!r}: give an IP address of this machine (e.g. 127.0.0.1)") from None
    if req.memory is not None and req.memory < MIN_MEMORY:
        raise UsageError("--memory: at least 64m (TensorFlow alone needs more)")
    if req.batch_max and not 2 <= req.batch_max <= MAX_BATCH:
        raise UsageError(f"--batch-max {req.batch_max}: 2 to {MAX_BATCH} requests a batch (0: no batching)")
    if req.batch_max < 0:
        raise UsageError(f"--batch-max {req.batch_max}: 2 to {MAX_BATCH} requests a batch (0: no batching)")
    timeout = req.batch_timeout_ms
    if timeout is not None:
        if not req.batch_max:
            raise UsageError("--batch-timeout-ms needs --batch-max (batching is off without it)")
        if not 0 < timeout <= 1000:
            raise UsageError(f"--batch-timeout-ms {timeout:g}: more than 0, at most 1000")
    name = req.name if req.name is not None else ref.name
    if req.name is None and not containers.NAME.fullmatch(name):
        raise UsageError(f"model name {ref.name!r} is no deployment name: give --name (lowercase letters, "
                         "digits, '-' or '_', at most 41)")
    containers.check_name(name, "--name")
    model = f"{ref.owner}/{ref.name}" if ref.owner else ref.name
    return replace(req, model=model, alias=alias, versions=versions, name=name,
                   batch_timeout_ms=(timeout or DEFAULT_BATCH_TIMEOUT_MS) if req.batch_max else None)


# --- the reconcile decision ---------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """What should be served, from the registry."""

    image_id: str
    versions: tuple[int, ...]  # the version folders the container must hold
    labels: dict[str, int] = field(default_factory=dict)
    serve: tuple[int, ...] = ()  # kept loaded without a label (pinned versions)


@dataclass(frozen=True)
class Facts:
    """What the engine (and the deployment's host folder) says. status None: there is no container."""

    status: str | None
    exit_code: int | None = None
    restart_count: int = 0
    restart_max: int = 5
    image_id: str | None = None
    versions: tuple[int, ...] = ()  # the version folders linked for the container
    labels: dict[str, int] = field(default_factory=dict)
    serve: tuple[int, ...] = ()


@dataclass(frozen=True)
class Action:
    kind: str  # none | wait | create | recreate | move
    reason: str = ""
    add: tuple[int, ...] = ()  # versions to link in before a move


def decide(want: Want, facts: Facts) -> Action:
    if facts.status is None:
        return Action("create", "its container is gone")
    if facts.status == "dead":
        return Action("recreate", "its container is dead")
    if facts.status in ("exited", "created"):
        if facts.status == "created":
            return Action("recreate", "its container was made but never started")
        if facts.exit_code == 0:
            return Action("recreate", "its server exited (0), which the restart policy does not restart")
        if facts.restart_count >= facts.restart_max:
            return Action("recreate", f"its server exited ({facts.exit_code}) after {facts.restart_count} restarts, "
                                      "beyond its restart policy")
        return Action("wait", f"exited ({facts.exit_code}): the engine restarts it")
    if facts.status == "removing":
        return Action("wait", "its container is being removed")
    if facts.image_id is not None and facts.image_id != want.image_id:
        return Action("recreate", "the version to serve was trained in another image: a new container")
    add = tuple(v for v in want.versions if v not in facts.versions)
    if add or dict(facts.labels) != dict(want.labels) or sorted(facts.serve) != sorted(want.serve):
        moved = ", ".join(f"{k} -> {v}" for k, v in sorted(want.labels.items())) or "pinned versions"
        return Action("move", f"follows the registry: {moved}", add)
    return Action("none")
