"""Workspaces: one container per developer with Jupyter and/or SSH, a persistent volume, limits.

The engine is the truth about a workspace: its container (named dlbox-ws-NAME) carries its
settings as labels; its data lives in the volume dlbox-ws-NAME-data, the user's own state (HOME:
pip installs, Jupyter's and the shell's files) in dlbox-ws-NAME-home, the root filesystem being
read-only; its secrets live in the vault on the host and, as files, in the container. The
service's store keeps only who owns it and its last-seen state, for fast lists (records.sync).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlbox.containers import mount_policy
from dlbox import config
from dlbox.containers import policy as containers
from dlbox.engine import api as engine
from dlbox.engine import gpus
from dlbox.containers import networks
from dlbox.containers import workspace_files as services
from dlbox.workspaces import vault
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.progress import Progress

PREFIX = "dlbox-ws-"
KIND = "workspace"
WORKDIR = "/workspace"
READY_TIMEOUT = 180.0
LOCAL_OWNER = "local"  # who owns what the local CLI makes (a reserved user name on the server)


def container_name(name: str) -> str:
    return f"{PREFIX}{name}"


def volume_name(name: str) -> str:
    return f"{PREFIX}{name}-data"


def home_volume_name(name: str) -> str:
    return f"{PREFIX}{name}-home"


def volume_names(name: str) -> tuple[str, str]:
    """The workspace's named volumes, kept and purged together: /workspace and HOME."""
    return volume_name(name), home_volume_name(name)


@dataclass
class UpRequest:
    name: str
    spec_file: Path | None = None
    preset: str | None = None
    image: str | None = None
    jupyter: bool | None = None  # None: on when the image has Jupyter
    ssh: bool = False
    ssh_key: Path | None = None
    mounts: list[str] = field(default_factory=list)
    memory: str | None = None
    cpus: float | None = None
    gpus: str | None = None
    share_gpus: bool = False
    shm_size: str | None = None
    pids: int | None = None
    host: str = "127.0.0.1"
    jupyter_port: int | None = None
    ssh_port: int | None = None
    ssh_public_key: str | None = None  # the key's text, when it does not come from a file (the server)
    owner: str | None = None
    url_host: str | None = None  # the host name remote users reach this machine by, for a 0.0.0.0 workspace
    guard_mounts: bool = False  # a server user's: mount sources must stay root's to change (mount_policy.recheck)
    build_missing: bool = True  # the server lets only admins start a build


# --- up ---------------------------------------------------------------------------------------


def _image_for(req: UpRequest, progress: Progress):
    """(image summary, the spec's workspace resources or None, its default mounts). Builds the image if missing."""
    from dlbox.build import images

    if req.image and (req.spec_file or req.preset):
        raise UsageError("give one of SPEC, --preset or --image")
    if req.image:
        attrs = images.get(req.image)
        return images.summary(attrs) | {"ref": req.image, "env": attrs["Config"].get("Env") or []}, None, []
    spec_file, preset = req.spec_file, req.preset
    if spec_file is None and preset is None and not Path("dlbox.yaml").exists():
        preset = "tensorflow-2.9"
        progress.step("no SPEC, --preset or --image and no ./dlbox.yaml: using the tensorflow-2.9 preset")
    spec, project_dir, lock_file = images.load_source(spec_file, preset)
    found = images.ensure(spec, project_dir=project_dir, lock_file=lock_file, progress=progress) \
        if req.build_missing else images.find_built(spec)
    if found is None:
        raise DlboxError(f"--preset: no image of {spec.name} is built on this server yet; ask an admin to build it",
                         code="not_built")
    default_mounts = [mount_policy.parse_mount(m, base=project_dir, guarded=req.guard_mounts)
                      for m in spec.workspace.mounts]
    return (found | {"env": engine.image_attrs(found["id"])["Config"].get("Env") or []}, spec.workspace.resources,
            default_mounts)


def _port_range(port: int, flag: str) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"{flag}: {port} is not a port (1-65535)")
    return port


def _check_port(host: str, port: int, flag: str) -> int:
    _port_range(port, flag)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise DlboxError(f"{flag}: {host}:{port} is already in use", code="port_in_use") from None
    return port


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def public_key(req: UpRequest) -> tuple[str, Path | None]:
    if req.ssh_public_key is not None:
        text = req.ssh_public_key.strip()
        if not text.startswith(("ssh-", "ecdsa-", "sk-")) or "PRIVATE KEY" in text or "\n" in text:
            raise UsageError("ssh_public_key: not one OpenSSH public key line (ssh-ed25519 AAAA...)")
        return text, None
    candidates = [req.ssh_key] if req.ssh_key else [Path.home() / ".ssh" / n for n in ("id_ed25519.pub", "id_rsa.pub")]
    for path in candidates:
        if path and path.is_file():
            text = path.read_text().strip()
            if not text.startswith(("ssh-", "ecdsa-", "sk-")) or "PRIVATE KEY" in text:
                raise UsageError(f"--ssh-key: {path} is not an OpenSSH public key (give the .pub file)")
            return text, path.resolve()
    if req.ssh_key:
        raise UsageError(f"--ssh-key: {req.ssh_key} does not exist")
    raise UsageError("--ssh needs a public key: --ssh-key FILE.pub (no ~/.ssh/id_ed25519.pub or id_rsa.pub found)")


def _held_gpus(viewer: str | None = None) -> dict[str, list[str]]:
    """GPU IDs by holder, for a gpu_busy message to `viewer` (None: this machine's owner, who sees
    all). On a team server another user's workspace or job is not named."""
    held: dict[str, list[str]] = {}
    for attrs in engine.list_containers([engine.MANAGED, "dlbox.gpus"]):
        labels = attrs["Config"]["Labels"]
        if not labels.get("dlbox.gpus"):
            continue
        holder = labels.get("dlbox.workspace") or labels.get("dlbox.job") or attrs["Name"].lstrip("/")
        if viewer is not None and labels.get("dlbox.owner") != viewer:
            holder = f"another user's {'job' if labels.get('dlbox.job') else 'workspace'}"
        held.setdefault(holder, []).extend(labels["dlbox.gpus"].split(","))
    return held


@dataclass(frozen=True)
class UpFacts:
    """What planning a workspace needs from the engine and the host, read before anything is made.

    `gather` reads them; `plan` turns them and the request into a `Plan` without touching either,
    so a unit test can give any facts it likes."""

    image: dict  # the image's summary: id, ref, services, user, uid, gid, and env (its Config.Env)
    mounts: list[mount_policy.Mount] = field(default_factory=list)  # the request's, parsed on the host
    default_mounts: list[mount_policy.Mount] = field(default_factory=list)  # the spec's, parsed
    defaults: Any = None  # the spec's workspace resources (spec.model.Resources), or None
    capacity: dict = field(default_factory=dict)  # engine.capacity(), read only when a limit needs checking
    free_ports: dict[int, int] = field(default_factory=dict)  # container port -> a free host port, where not given
    authorized_key: str | None = None  # the SSH public key's text
    key_file: Path | None = None  # the file it came from, if any
    gpu_inventory: list[str] = field(default_factory=list)
    held_gpus: dict[str, list[str]] = field(default_factory=dict)  # holder -> GPU IDs
    token: str | None = None  # a fresh Jupyter token
    container_exists: bool = False  # a container of the workspace's name is there already
    volume_exists: bool = False  # a kept volume of its name is there ...
    volume_owner: str | None = None  # ... and the owner it records
    home_exists: bool = False  # the same of its HOME volume
    home_owner: str | None = None


@dataclass(frozen=True)
class Plan:
    """Everything `apply` does, decided: the container, its volume, the files to put in it, and
    what a failure takes back (the container, the volume if `apply` made it, the vault's record)."""

    name: str
    spec: containers.ContainerSpec
    volume_labels: dict[str, str]
    owner: str  # who the volume must belong to, when it is kept
    files: dict  # services.files' arguments but the host key (the vault makes that, in apply)
    ssh: bool  # a host key to make and put
    token: str | None
    fixed_ports: bool  # a port given by flag is not picked again when the engine finds it taken
    image_ref: str
    entrypoint: tuple[str, ...] = ("/bin/bash", f"{services.DIR}/start.sh")

    @property
    def volume(self) -> str:
        return volume_name(self.name)

    @property
    def home_volume(self) -> str:
        return home_volume_name(self.name)

    @property
    def host(self) -> str:
        return self.spec.labels["dlbox.host"]


# --- the pure checks: `plan` makes them all, in this order; `gather` each one before the first fact it saves reading


def _check_request(req: UpRequest) -> tuple[str, str]:
    """(name, host to publish on)."""
    name = containers.check_name(req.name)
    if req.host not in ("127.0.0.1", "0.0.0.0", "::1", "::", "localhost"):
        try:
            socket.inet_aton(req.host)
        except OSError:
            raise UsageError(f"--host: {req.host!r} is not an IP address to publish ports on") from None
    return name, "127.0.0.1" if req.host == "localhost" else req.host


def _check_targets(mounts: list[mount_policy.Mount], home: str | None = None) -> None:
    targets = [m.target for m in mounts]
    own = [WORKDIR, "/tmp"] + ([home] if home else [])
    if set(own) & set(targets) or len(set(targets)) != len(targets):
        raise UsageError(f"--mount: each target must be unique and not {', '.join(own)} (the workspace's own)")


def _refuse_existing(name: str, exists: bool) -> None:
    if exists:
        raise DlboxError(f"workspace {name} already exists; `dlbox start {name}` or `dlbox rm {name}` first",
                         code="exists")


def _refuse_volume(name: str, owner: str, exists: bool, found: str | None, volume: str | None = None) -> None:
    """A kept volume is adopted only by its recorded owner: it holds their data. One without an owner
    (made before volumes recorded theirs) only by the machine's local owner, never by a server user."""
    if not exists or found == owner or (found is None and owner == LOCAL_OWNER):
        return
    whose = "records no owner" if found is None else "belongs to another user"
    raise DlboxError(f"workspace name {name} is taken: its kept volume {volume or volume_name(name)} {whose}; choose "
                     "another name (an admin can remove the volume with `dlbox rm NAME --purge-data`)", code="exists")


def _volume_facts(volume: str) -> tuple[bool, str | None]:
    """(exists, recorded owner) of a volume, as the engine has it now."""
    exists = engine.volume_exists(volume)
    return exists, engine.volume_labels(volume).get("dlbox.owner") if exists else None


def _check_ports(req: UpRequest) -> None:
    if req.jupyter_port:
        _port_range(req.jupyter_port, "--jupyter-port")
    if req.ssh_port:
        _port_range(req.ssh_port, "--ssh-port")


def _asks_limits(req: UpRequest, defaults) -> bool:
    return bool(req.memory or req.cpus is not None or req.gpus or (
        defaults is not None and (defaults.memory or defaults.cpus or defaults.gpus)))


def _limits(req: UpRequest, defaults, capacity: dict) -> containers.Limits:
    return containers.limits(defaults, memory=req.memory, cpus=req.cpus, shm_size=req.shm_size,
                             pids=req.pids, capacity=capacity)


def _jupyter(req: UpRequest, image: dict) -> bool:
    """Whether the workspace runs Jupyter; refuses a service the image does not have."""
    offered = image["services"]
    jupyter = ("jupyter" in offered) if req.jupyter is None else req.jupyter
    if jupyter and "jupyter" not in offered:
        raise UsageError(f"--jupyter: image {image['ref']} has no Jupyter (its spec's services: {offered})")
    if req.ssh and "ssh" not in offered:
        raise UsageError(f"--ssh: image {image['ref']} has no SSH server (add 'ssh' to its spec's services)")
    return jupyter


def _gpu_request(req: UpRequest, defaults):
    request = gpus.parse(req.gpus)
    return gpus.parse(defaults.gpus) if request is None and defaults is not None else request


def _check_gpu_runtime(capacity: dict) -> None:
    if "nvidia" not in capacity["runtimes"]:
        raise DlboxError("--gpus: the engine has no GPU runtime (install the NVIDIA container toolkit and "
                         f"restart dockerd; runtimes here: {', '.join(capacity['runtimes'])})",
                         code="no_gpu_runtime")


# --- up: gather (engine and host), plan (pure), apply (effects, undone on failure) --------------------


def up(req: UpRequest, progress: Progress) -> dict:
    return apply(plan(req, gather(req, progress)), progress)


def gather(req: UpRequest, progress: Progress) -> UpFacts:
    """Read what planning needs, refusing a bad request before the first engine call or build it would waste."""
    name, host = _check_request(req)
    mounts = [mount_policy.parse_mount(m, guarded=req.guard_mounts) for m in req.mounts]
    _check_targets(mounts)
    gpus.parse(req.gpus)
    _refuse_existing(name, engine.container_attrs(container_name(name)) is not None)
    volume_exists, volume_owner = _volume_facts(volume_name(name))
    home_exists, home_owner = _volume_facts(home_volume_name(name))
    # before anything is built or made
    _refuse_volume(name, req.owner or LOCAL_OWNER, volume_exists, volume_owner)
    _refuse_volume(name, req.owner or LOCAL_OWNER, home_exists, home_owner, home_volume_name(name))
    if req.jupyter_port:
        _check_port(host, req.jupyter_port, "--jupyter-port")
    if req.ssh_port:
        _check_port(host, req.ssh_port, "--ssh-port")
    image, defaults, default_mounts = _image_for(req, progress)
    capacity = engine.capacity() if _asks_limits(req, defaults) else {}  # the engine's info call only when needed
    _limits(req, defaults, capacity)
    jupyter = _jupyter(req, image)
    authorized, key_file = public_key(req) if req.ssh else (None, None)
    inventory, held = [], {}
    if _gpu_request(req, defaults) is not None and "nvidia" in capacity["runtimes"]:
        inventory, held = gpus.inventory(), _held_gpus(req.owner)
    free = {}
    if jupyter and not req.jupyter_port:
        free[services.JUPYTER_PORT] = _free_port(host)
    if req.ssh and not req.ssh_port:
        free[services.SSH_PORT] = _free_port(host)
    return UpFacts(image=image, mounts=mounts, default_mounts=default_mounts, defaults=defaults, capacity=capacity,
                   free_ports=free, authorized_key=authorized, key_file=key_file, gpu_inventory=inventory,
                   held_gpus=held, token=vault.new_token() if jupyter else None,
                   volume_exists=volume_exists, volume_owner=volume_owner, home_exists=home_exists,
                   home_owner=home_owner)


def plan(req: UpRequest, facts: UpFacts) -> Plan:
    """The workspace `req` asks for, given `facts`: pure (no engine, no host), and every refusal `up` makes."""
    name, host = _check_request(req)
    _check_targets(facts.mounts)
    gpu_request = gpus.parse(req.gpus)
    owner = req.owner or LOCAL_OWNER
    _refuse_existing(name, facts.container_exists)
    _refuse_volume(name, owner, facts.volume_exists, facts.volume_owner)
    _refuse_volume(name, owner, facts.home_exists, facts.home_owner, home_volume_name(name))
    _check_ports(req)
    image, defaults = facts.image, facts.defaults
    user = (image.get("user") or "dl")
    home = containers.image_home({"dlbox.user": user}) or "/home/dl"
    given = {m.target for m in facts.mounts}
    # the spec's mounts, unless a flag replaces one
    mounts = list(facts.mounts) + [m for m in facts.default_mounts if m.target not in given]
    _check_targets(mounts, home)
    limits = _limits(req, defaults, facts.capacity)
    jupyter = _jupyter(req, image)
    if req.ssh and facts.authorized_key is None:
        raise UsageError("--ssh needs a public key: --ssh-key FILE.pub (no ~/.ssh/id_ed25519.pub or id_rsa.pub found)")
    if gpu_request is None and defaults is not None:
        gpu_request = gpus.parse(defaults.gpus)
    gpu_ids = None
    if gpu_request is not None:
        _check_gpu_runtime(facts.capacity)
        gpu_ids = gpus.allocate(gpu_request, available=facts.gpu_inventory, held=facts.held_gpus,
                                share=req.share_gpus)

    run_as = containers.run_as({"dlbox.uid": image.get("uid"), "dlbox.gid": image.get("gid")})
    uid = containers.uid_gid(run_as)[0]
    token = facts.token if jupyter else None
    if jupyter and token is None:
        raise DlboxError("planning a Jupyter workspace needs a token (UpFacts.token)")
    home_id = config.home_id()
    labels = {
        "dlbox.kind": KIND, "dlbox.workspace": name, "dlbox.image": image["ref"], "dlbox.host": host,
        "dlbox.user": user, "dlbox.mounts": json.dumps([m.to_json() for m in mounts]),
        "dlbox.home": home_id,
    }
    if gpu_ids:
        labels["dlbox.gpus"] = ",".join(gpu_ids)
    if facts.key_file:
        labels["dlbox.ssh-key"] = str(facts.key_file)
    if req.owner:
        labels["dlbox.owner"] = req.owner
    if req.url_host and host in ("0.0.0.0", "::"):
        labels["dlbox.url-host"] = check_url_host(req.url_host)
    ports = {}
    if jupyter:
        ports[services.JUPYTER_PORT] = (host, req.jupyter_port or facts.free_ports[services.JUPYTER_PORT])
    if req.ssh:
        ports[services.SSH_PORT] = (host, req.ssh_port or facts.free_ports[services.SSH_PORT])
    image_env = dict(item.split("=", 1) for item in image.get("env") or [])
    env = services.state_env(home, image_env)
    # CIS 5.13: a read-only root; the writable places are /workspace, HOME (both kept), /tmp, and
    # the service files' own volume (root's)
    spec = _with_ports(containers.ContainerSpec(
        name=container_name(name), image=image["id"], command=[], user=run_as, labels=labels,
        mounts=mounts, volumes={volume_name(name): WORKDIR, home_volume_name(name): home}, limits=limits,
        gpu_ids=gpu_ids, workdir=WORKDIR, network=networks.for_owner(req.owner), env=env,
        read_only=True, tmpfs=containers.scratch(run_as, None), own_volumes=(services.DIR,),
        healthcheck=services.HEALTHCHECK, restart=services.RESTART,
    ), ports)
    return Plan(
        name=name, spec=spec, owner=owner, token=token, ssh=req.ssh, image_ref=image["ref"],
        volume_labels={"dlbox.kind": KIND, "dlbox.workspace": name, "dlbox.owner": owner, "dlbox.home": home_id},
        files={"user": user, "uid": uid, "token": token, "authorized_keys": facts.authorized_key,
               "env": image_env | env},
        fixed_ports=bool(req.jupyter_port or req.ssh_port),
    )


def _with_ports(spec: containers.ContainerSpec, ports: dict[int, tuple[str, int]]) -> containers.ContainerSpec:
    """The spec publishing `ports`, each also recorded as a dlbox.port.N label (what `describe` reads)."""
    labels = {k: v for k, v in spec.labels.items() if not k.startswith("dlbox.port.")}
    return dataclasses.replace(spec, ports=dict(ports),
                               labels=labels | {f"dlbox.port.{p}": str(hp) for p, (_, hp) in ports.items()})


def apply(plan: Plan, progress: Progress) -> dict:
    """Make the planned workspace: volume, container (on its owner's network), files, start, ready.

    On any failure (Ctrl-C included) nothing half-made stays: the container, the volume if this
    call made it, and the vault's record go. The owner's network stays: it is shared with the
    owner's other workspaces and jobs."""
    progress.step(f"creating workspace {plan.name} from {plan.image_ref}")
    made_volume, made_home, container_id = False, False, None
    spec = plan.spec
    try:
        host_key, host_pub = vault.host_key(plan.name) if plan.ssh else (None, None)
        files = services.files(host_key=host_key, **plan.files)
        made_volume = engine.ensure_volume(plan.volume, plan.volume_labels)
        made_home = engine.ensure_volume(plan.home_volume, plan.volume_labels)
        if not (made_volume and made_home):  # kept, or made meanwhile by a parallel `up`: only its owner goes on
            check_volume_owner(plan.name, plan.owner)
        for attempt in range(5):
            if attempt:  # the engine found a picked port taken meanwhile: pick again
                spec = _with_ports(spec, {p: (ip, _free_port(plan.host)) for p, (ip, _) in spec.ports.items()})
            mount_policy.recheck(spec.mounts)  # the image may have taken minutes: the sources must still be what was checked
            container_id = engine.create_container(spec, entrypoint=list(plan.entrypoint))
            engine.put_files(container_id, files, into=services.DIR)
            try:
                engine.start(container_id)
                break
            except engine.PortInUse:
                engine.remove_container(container_id)
                container_id = None
                if plan.fixed_ports or attempt == 4:
                    raise
        vault.save(plan.name, {"token": plan.token, "host_public_key": host_pub})
        progress.step("waiting for the services to answer")
        _wait_ready(container_id, plan.host, spec.ports, plan.token)
    except BaseException:
        # nothing half-made: the container (its service-file volume with it), volumes this call made, the secrets
        for undo in (lambda: container_id and engine.remove_container(container_id),
                     lambda: made_volume and engine.remove_volume(plan.volume),
                     lambda: made_home and engine.remove_volume(plan.home_volume),
                     lambda: vault.forget(plan.name)):
            try:
                undo()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise
    progress.step(f"workspace {plan.name} is up")
    return describe(engine.container_attrs(container_id), token=plan.token, fresh=True)


def check_volume_owner(name: str, owner: str) -> None:
    """Refuse kept volumes `owner` may not adopt (see _refuse_volume), as the engine has them now."""
    for volume in volume_names(name):
        _refuse_volume(name, owner, *_volume_facts(volume), volume)


def check_url_host(text: str) -> str:
    """A host name or IP for workspace URLs: what a client used to reach the server, so no ports, paths or spaces."""
    import re

    host = text.strip().lower()
    if re.fullmatch(r"\[[0-9a-f:.]{2,45}\]", host) or re.fullmatch(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?", host):
        return host
    raise UsageError(f"host: {text[:80]!r} is not a host name or IP address")


def _wait_ready(container_id: str, host: str, ports: dict, token: str | None, timeout: float = READY_TIMEOUT) -> None:
    connect = _connect_host(host)
    deadline = time.monotonic() + timeout
    pending = dict(ports)
    while pending:
        attrs = engine.container_attrs(container_id)
        if attrs is None or not attrs["State"]["Running"]:
            raise DlboxError(f"the workspace's container stopped while starting: {_last_log_line(container_id)}")
        for port, (_, host_port) in list(pending.items()):
            if (port == services.JUPYTER_PORT and _jupyter_answers(connect, host_port, token)) or \
                    (port == services.SSH_PORT and _ssh_answers(connect, host_port)):
                del pending[port]
        if pending and time.monotonic() > deadline:
            raise DlboxError(f"the workspace's services did not answer within {timeout:.0f}s: "
                             f"{_last_log_line(container_id)}")
        if pending:
            time.sleep(0.1)


def _jupyter_answers(host: str, port: int, token: str | None) -> bool:
    request = urllib.request.Request(f"http://{host}:{port}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _ssh_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            return conn.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def _last_log_line(container_id: str) -> str:
    try:
        text = b"".join(engine.logs(container_id, tail=20)).decode(errors="replace")
    except Exception:  # the container may be gone already
        return "no output"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


# --- reading workspaces back --------------------------------------------------------------------


def _attrs(name: str) -> dict:
    attrs = engine.container_attrs(container_name(name))
    if attrs is None or (attrs["Config"]["Labels"] or {}).get("dlbox.kind") != KIND:
        raise NotFound(f"no workspace {name!r} (see `dlbox ls`)")
    return attrs


def describe(attrs: dict, *, token: str | None = None, fresh: bool = False) -> dict:
    """The workspace as `ls --json` and `up --json` show it; the token only when given."""
    labels = attrs["Config"]["Labels"] or {}
    host_config = attrs["HostConfig"]
    name = labels["dlbox.workspace"]
    host = labels.get("dlbox.host", "127.0.0.1")
    shown_host = labels.get("dlbox.url-host") or _connect_host(host)  # 0.0.0.0: the name remote users know
    jupyter_port = labels.get(f"dlbox.port.{services.JUPYTER_PORT}")
    ssh_port = labels.get(f"dlbox.port.{services.SSH_PORT}")
    jupyter = None
    if jupyter_port:
        url = f"http://{shown_host}:{jupyter_port}/"
        jupyter = {"url": f"{url}?token={token}" if token else url, "port": int(jupyter_port)}
        if token:
            jupyter["token"] = token
    ssh = {"host": shown_host.strip("[]"), "port": int(ssh_port), "user": labels.get("dlbox.user", "dl")} if ssh_port else None
    nano = host_config.get("NanoCpus") or 0
    limits = containers.Limits(memory=host_config.get("Memory") or None, cpus=nano / 1e9 if nano else None,
                               shm_size=host_config.get("ShmSize") or 0, pids=host_config.get("PidsLimit") or 0)
    state = attrs["State"]
    return {
        "name": name,
        "state": state["Status"],
        "image": labels.get("dlbox.image"),
        "image_id": attrs["Image"],
        "container_id": attrs["Id"],
        "jupyter": jupyter,
        "ssh": ssh,
        "mounts": json.loads(labels.get("dlbox.mounts", "[]")),
        "volume": {"name": volume_name(name), "target": WORKDIR},
        "resources": {**limits.to_json(), "gpus": labels["dlbox.gpus"].split(",") if labels.get("dlbox.gpus") else None},
        "health": (state.get("Health") or {}).get("Status"),  # starting, healthy, unhealthy; None: no check
        "created": attrs["Created"][:19] + "Z",
        "oom": {"kills": 0, "last": None, "killed_main_process": False} if fresh else _oom(attrs),
    }


def _oom(attrs: dict) -> dict:
    """OOM kills in the workspace: the kernel's count (cgroup) and the engine's last event."""
    kills = 0
    if attrs["State"]["Running"]:
        code, out = engine.exec_capture(attrs["Id"], ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.oom_control "
                                                      "/sys/fs/cgroup/memory.events 2>/dev/null"])
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                kills = int(value)
    created = _epoch(attrs["Created"])
    times = engine.oom_events(attrs["Id"], since=created)
    last = max(times) if times else None
    return {"kills": max(kills, len(times)) if (kills or times) else 0,
            "last": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last)) if last else None,
            "killed_main_process": bool(attrs["State"].get("OOMKilled"))}


def _epoch(created: str) -> int:
    from datetime import datetime, timezone

    return int(datetime.fromisoformat(created[:19]).replace(tzinfo=timezone.utc).timestamp())


def ls() -> list[dict]:
    rows = [describe(a) for a in engine.list_containers([engine.MANAGED, f"dlbox.kind={KIND}"])]
    return sorted(rows, key=lambda r: r["name"])


def show(name: str, *, with_token: bool = False) -> dict:
    token = vault.load(name).get("token") if with_token else None
    return describe(_attrs(name), token=token)


# --- lifecycle ----------------------------------------------------------------------------------


def stop(name: str, progress: Progress | None = None) -> dict:
    attrs = _attrs(name)
    engine.set_restart_policy(attrs["Id"], services.NO_RESTART)  # stopped on purpose: no engine restart revives it
    engine.stop(attrs["Id"])
    return describe(engine.container_attrs(attrs["Id"]))


def _recheck_mounts(attrs: dict) -> None:
    mount_policy.recheck([mount_policy.Mount(**m) for m in json.loads(attrs["Config"]["Labels"].get("dlbox.mounts", "[]"))])


def start(name: str, progress: Progress) -> dict:
    attrs = _attrs(name)
    if not attrs["State"]["Running"]:
        _recheck_mounts(attrs)
        _ensure_network(attrs)
        engine.set_restart_policy(attrs["Id"], services.RESTART)
        engine.start(attrs["Id"])
    return _ready(name, attrs["Id"], progress)


def restart(name: str, progress: Progress) -> dict:
    attrs = _attrs(name)
    _recheck_mounts(attrs)
    _ensure_network(attrs)
    engine.set_restart_policy(attrs["Id"], services.RESTART)
    engine.restart(attrs["Id"])
    return _ready(name, attrs["Id"], progress)


def _ensure_network(attrs: dict) -> None:
    """The owner's network may have gone while the workspace was stopped (the engine lets a network
    with only stopped containers be removed); the same name made again is what it starts on. A
    workspace from before networks per user leaves the default bridge for its owner's network."""
    network = networks.for_owner((attrs["Config"]["Labels"] or {}).get("dlbox.owner"))
    if "bridge" in (attrs["NetworkSettings"].get("Networks") or {}):
        engine.move_to_network(attrs["Id"], network)
    elif attrs["HostConfig"].get("NetworkMode") == network.name:
        engine.ensure_network(network)


def _ports(labels: dict) -> dict[int, tuple[str, int]]:
    host = labels.get("dlbox.host", "127.0.0.1")
    return {port: (host, int(labels[f"dlbox.port.{port}"]))
            for port in (services.JUPYTER_PORT, services.SSH_PORT) if f"dlbox.port.{port}" in labels}


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def _ready(name: str, container_id: str, progress: Progress) -> dict:
    attrs = engine.container_attrs(container_id)
    labels = attrs["Config"]["Labels"] or {}
    token = vault.load(name).get("token")
    progress.step("waiting for the services to answer")
    _wait_ready(container_id, labels.get("dlbox.host", "127.0.0.1"), _ports(labels), token)
    return describe(engine.container_attrs(container_id))  # only `up` and `token` print the token


def rm(name: str, *, purge_data: bool = False) -> dict:
    """Remove the workspace; its volumes (/workspace and HOME) stay unless `purge_data`."""
    attrs = engine.container_attrs(container_name(name))
    kept = [v for v in volume_names(name) if engine.volume_exists(v)]
    if attrs is None and not (purge_data and kept):
        raise NotFound(f"no workspace {name!r} (see `dlbox ls`)")
    if attrs is not None:
        _attrs(name)  # refuse to remove a container that is not a workspace
        engine.remove_container(attrs["Id"])
    vault.forget(name)
    if purge_data:
        for volume in kept:
            engine.remove_volume(volume)
    return {"name": name, "removed": True,
            "data": "purged" if purge_data else f"kept in volumes {' and '.join(volume_names(name))}"}


def rotate_token(name: str, progress: Progress) -> dict:
    attrs = _attrs(name)
    described = describe(attrs)
    if not described["jupyter"]:
        raise UsageError(f"workspace {name} runs no Jupyter server")
    if not any(m.get("Destination") == services.DIR for m in attrs.get("Mounts") or []):
        raise DlboxError(f"workspace {name} was made before read-only roots and keeps its token elsewhere; "
                         f"`dlbox rm {name}` and `dlbox up {name}` again (its volumes stay)")
    uid = int((attrs["Config"]["Labels"] or {}).get("dlbox.uid") or 1000)
    token = vault.new_token()
    engine.put_files(attrs["Id"], [(services.TOKEN_FILE, token.encode(), 0o400, uid)], into=services.DIR)
    vault.save(name, {**vault.load(name), "token": token})
    if attrs["State"]["Running"]:
        # the start script restarts Jupyter, which reads the new token; nohup'd work keeps running
        engine.exec_capture(attrs["Id"], ["sh", "-c", f"kill $(cat {services.PID_DIR}/jupyter.pid)"])
        host, port = _ports(attrs["Config"]["Labels"])[services.JUPYTER_PORT]
        host = _connect_host(host)
        deadline = time.monotonic() + READY_TIMEOUT
        progress.step("restarting Jupyter with the new token")
        while not _jupyter_answers(host, port, token):
            if time.monotonic() > deadline:
                raise DlboxError(f"Jupyter did not come back with the new token: {_last_log_line(attrs['Id'])}")
            time.sleep(0.25)
    return describe(engine.container_attrs(attrs["Id"]), token=token)


def container_of(name: str) -> str:
    attrs = _attrs(name)
    if not attrs["State"]["Running"]:
        raise DlboxError(f"workspace {name} is {attrs['State']['Status']}; `dlbox start {name}` first",
                         code="not_running")
    return attrs["Id"]


# --- SSH client side ----------------------------------------------------------------------------


def ssh_config_text() -> tuple[str, str]:
    """(ssh_config text, known_hosts text) for every workspace with SSH."""
    blocks, known = [], []
    known_hosts = config.home() / "known_hosts"
    for row in ls():
        if not row["ssh"]:
            continue
        name, ssh = row["name"], row["ssh"]
        labels = engine.container_attrs(row["container_id"])["Config"]["Labels"]
        key = labels.get("dlbox.ssh-key", "")
        identity = key[:-4] if key.endswith(".pub") and Path(key[:-4]).exists() else None
        blocks.append("\n".join(filter(None, [
            f"Host dlbox-{name}",
            f"    HostName {ssh['host']}",
            f"    Port {ssh['port']}",
            f"    User {ssh['user']}",
            f"    IdentityFile {identity}" if identity else None,
            "    IdentitiesOnly yes" if identity else None,
            f"    HostKeyAlias dlbox-{name}",
            f"    UserKnownHostsFile {known_hosts}",
            "    StrictHostKeyChecking yes",
        ])))
        public = vault.load(name).get("host_public_key")
        if public:
            known.append(f"dlbox-{name} {' '.join(public.split()[:2])}")
    header = "# written by `dlbox ssh-config`; add `Include <this file>` to ~/.ssh/config\n"
    return header + "\n\n".join(blocks) + "\n", "\n".join(known) + ("\n" if known else "")


def write_ssh_config() -> dict:
    text, known = ssh_config_text()
    root = config.home()
    root.mkdir(parents=True, exist_ok=True)
    config_path, known_path = root / "ssh_config", root / "known_hosts"
    config_path.write_text(text)
    known_path.write_text(known)
    return {"config": str(config_path), "known_hosts": str(known_path),
            "hosts": [line.split()[1] for line in text.splitlines() if line.startswith("Host ")]}
