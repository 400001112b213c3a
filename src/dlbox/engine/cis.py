"""The CIS Docker Benchmark's container-runtime rules (section 5), evaluated from the engine's data.

Pure: `check(attrs, info)` reads one container's `docker inspect`, the engine's `docker info`
and (for 5.7) its process list, and returns one `Finding` per rule. The test suite runs it on a
real workspace and job (tests/engine/test_cis.py); a future kind of container is checked the same
way. Rules are numbered as issue 10 numbers them (CIS Docker Benchmark v1.6/1.7, section 5).
Statuses: pass, warn, manual (a person must judge; the detail says what to look at), n/a.
"""

from __future__ import annotations

from dataclasses import dataclass

PASS, WARN, MANUAL, NA = "pass", "warn", "manual", "n/a"
# 5.6: host system directories a container must not see (CIS's list), the folder or below it.
SENSITIVE = ("/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr")


@dataclass(frozen=True)
class Finding:
    rule: str
    title: str
    status: str
    detail: str = ""


def _host(attrs: dict) -> dict:
    return attrs.get("HostConfig") or {}


def _security_options(info: dict) -> list[str]:
    # "name=seccomp,profile=default" (API >= 1.26) or plain "seccomp"
    return [opt.split(",")[0].removeprefix("name=") for opt in info.get("SecurityOptions") or []]


def _bindings(attrs: dict) -> list[tuple[str, str, str]]:
    """(container port, host ip, host port) of every published port."""
    out = []
    for port, bindings in (_host(attrs).get("PortBindings") or {}).items():
        for binding in bindings or []:
            out.append((port, binding.get("HostIp") or "", binding.get("HostPort") or ""))
    return out


def _mode(value: str | None, bad: str = "host") -> tuple[str, str]:
    return (WARN, f"{bad} namespace") if (value or "") == bad else (PASS, value or "private")


def check(attrs: dict, info: dict, processes: list[str] | None = None) -> list[Finding]:
    host = _host(attrs)
    config = attrs.get("Config") or {}
    security = host.get("SecurityOpt") or []
    options = _security_options(info)
    mounts = attrs.get("Mounts") or []
    found: list[Finding] = []

    def add(rule: str, title: str, status: str, detail: str = "") -> None:
        found.append(Finding(rule, title, status, detail))

    swarm = (info.get("Swarm") or {}).get("LocalNodeState", "inactive")
    add("5.1", "swarm mode is not enabled", PASS if swarm in ("inactive", "") else WARN, f"swarm: {swarm}")
    if "apparmor" not in options:
        add("5.2", "AppArmor profile", NA, "the engine's kernel has no AppArmor")
    else:
        profile = attrs.get("AppArmorProfile") or ""
        add("5.2", "AppArmor profile", PASS if profile and profile != "unconfined" else WARN, profile or "none")
    if "selinux" not in options:
        add("5.3", "SELinux options", NA, "the engine runs without SELinux")
    else:
        add("5.3", "SELinux options", PASS if any(o.startswith("label") for o in security) else WARN, ", ".join(security))
    cap_add, cap_drop = host.get("CapAdd") or [], host.get("CapDrop") or []
    add("5.4", "capabilities restricted", PASS if not cap_add and "ALL" in [c.upper() for c in cap_drop] else WARN,
        f"add {cap_add or 'none'}, drop {cap_drop or 'none'}")
    add("5.5", "not privileged", WARN if host.get("Privileged") else PASS)
    exposed = [source for m in mounts if m.get("Type") == "bind" and (source := m.get("Source") or "")
               and (source == "/" or any(source == d or source.startswith(d + "/") for d in SENSITIVE[1:]))]
    add("5.6", "no sensitive host directories mounted", WARN if exposed else PASS, ", ".join(exposed))
    if processes is None:
        add("5.7", "no sshd in the container", MANUAL, "no process list given")
    else:
        sshd = [p for p in processes if "sshd" in p.split(" ")[0].rsplit("/", 1)[-1]]
        add("5.7", "no sshd in the container", WARN if sshd else PASS, "; ".join(sshd))
    low = [f"{ip or '*'}:{hp}->{port}" for port, ip, hp in _bindings(attrs) if hp.isdigit() and int(hp) < 1024]
    add("5.8", "no privileged host ports", WARN if low else PASS, ", ".join(low))
    add("5.9", "only needed ports open", MANUAL,
        ", ".join(f"{ip or '*'}:{hp}->{port}" for port, ip, hp in _bindings(attrs)) or "none published")
    status, detail = _mode(host.get("NetworkMode"))
    add("5.10", "not on the host's network", status, detail)
    add("5.11", "memory limited", PASS if (host.get("Memory") or 0) > 0 else WARN, str(host.get("Memory") or 0))
    shares, nano, quota = host.get("CpuShares") or 0, host.get("NanoCpus") or 0, host.get("CpuQuota") or 0
    add("5.12", "CPU priority set", PASS if nano > 0 or quota > 0 or shares not in (0, 1024) else WARN,
        f"cpus {nano / 1e9:g}, shares {shares}, quota {quota}")
    add("5.13", "read-only root filesystem", PASS if host.get("ReadonlyRootfs") else WARN)
    open_ips = [f"{ip or '*'}:{hp}" for _, ip, hp in _bindings(attrs) if ip in ("", "0.0.0.0", "::")]
    add("5.14", "incoming traffic bound to one host interface", WARN if open_ips else PASS, ", ".join(open_ips))
    policy = host.get("RestartPolicy") or {}
    name, retries = policy.get("Name") or "no", policy.get("MaximumRetryCount") or 0
    add("5.15", "restart policy on-failure, at most 5", PASS if name == "no" or (name == "on-failure" and 0 < retries <= 5)
        else WARN, f"{name}:{retries}")
    for rule, key, title in (("5.16", "PidMode", "host PID namespace not shared"),
                             ("5.17", "IpcMode", "host IPC namespace not shared")):
        status, detail = _mode(host.get(key))
        add(rule, title, status, detail)
    devices = [d.get("PathOnHost") for d in host.get("Devices") or []]
    add("5.18", "no host devices", WARN if devices else PASS, ", ".join(map(str, devices)))
    add("5.19", "ulimits overridden where needed", MANUAL,
        ", ".join(f"{u['Name']}={u['Soft']}:{u['Hard']}" for u in host.get("Ulimits") or []) or "the engine's defaults")
    shared = [m.get("Destination") for m in mounts if (m.get("Propagation") or "") in ("shared", "rshared")]
    add("5.20", "mount propagation not shared", WARN if shared else PASS, ", ".join(map(str, shared)))
    status, detail = _mode(host.get("UTSMode"))
    add("5.21", "host UTS namespace not shared", status, detail)
    unconfined = any(o.replace(":", "=") == "seccomp=unconfined" for o in security)
    add("5.22", "default seccomp profile not disabled",
        WARN if unconfined or "seccomp" not in options else PASS,
        "unconfined" if unconfined else ("the engine has no seccomp" if "seccomp" not in options else "default"))
    add("5.25", "cgroup parent is the engine's default", WARN if host.get("CgroupParent") else PASS,
        host.get("CgroupParent") or "default")
    add("5.26", "no-new-privileges", PASS if any(o.split("=")[0].split(":")[0] == "no-new-privileges"
                                                 and not o.endswith(("false", "=0")) for o in security) else WARN)
    test = ((config.get("Healthcheck") or {}).get("Test")) or []
    add("5.27", "healthcheck", PASS if test and test[0] != "NONE" else WARN, " ".join(test) or "none")
    pids = host.get("PidsLimit") or 0
    add("5.28", "PIDs limit", PASS if pids > 0 else WARN, str(pids))
    networks = sorted((attrs.get("NetworkSettings") or {}).get("Networks") or {})
    on_bridge = (host.get("NetworkMode") or "default") in ("default", "bridge") or "bridge" in networks
    add("5.30", "not on docker0 (the default bridge)", WARN if on_bridge else PASS,
        f"network mode {host.get('NetworkMode')}, networks {', '.join(networks) or 'none'}")
    status, detail = _mode(host.get("UsernsMode"))
    add("5.31", "host user namespace not shared", status, detail)
    sockets = [m.get("Source") for m in mounts if (m.get("Source") or "").endswith("docker.sock")]
    add("5.32", "Docker socket not mounted", WARN if sockets else PASS, ", ".join(map(str, sockets)))
    return found


def warnings(findings: list[Finding], exceptions: dict[str, str] | None = None) -> list[Finding]:
    """The findings that warn, less those with a documented exception (rule -> why)."""
    return [f for f in findings if f.status == WARN and f.rule not in (exceptions or {})]
