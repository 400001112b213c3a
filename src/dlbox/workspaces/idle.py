"""Idle stop: the reconcile loop samples running workspaces and stops those idle for their duration.

A workspace's duration is its `dlbox.idle-stop` label (seconds, from `dlbox up --idle-stop` or its
spec's `workspace.idle_stop`; 0: never), else the server's default (`dlbox server --idle-stop`).
Each sample is one exec in the container (its cgroup's CPU time, each process's, sshd's established
connections) and two API calls to its Jupyter with the workspace's token; the decision is
workspaces/idleness.py's. A stop is recorded (vault.note_stop: beside the workspace's secrets) and the
workspace is stopped, never removed: `dlbox start` brings it back with the same URL and token.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

from dlbox import config
from dlbox.containers import workspace_files as services
from dlbox.engine import api as engine
from dlbox.workspaces import idleness, manage, vault

LABEL = manage.IDLE_LABEL
MIN_PERIOD, MAX_PERIOD = 3.0, 60.0  # seconds between two samples of one workspace
BUSY = ("busy", "starting", "restarting", "autorestarting")  # a kernel's execution_state that is work (not idle or dead)
CLK_TCK = 100  # USER_HZ: /proc/PID/stat's unit on Linux

# One exec: the cgroup's CPU (v2 cpu.stat usage_usec, or v1 cpuacct.usage in ns), sshd's
# established connections (state 01 on local port 2222), and every process's comm and CPU ticks.
PROBE = f"""\
echo @cg2; cat /sys/fs/cgroup/cpu.stat 2>/dev/null
echo @cg1; cat /sys/fs/cgroup/cpuacct/cpuacct.usage /sys/fs/cgroup/cpu,cpuacct/cpuacct.usage 2>/dev/null
echo @tcp; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
echo @self $$
echo @stat; cat /proc/[0-9]*/stat 2>/dev/null
"""
SSH_LOCAL = f":{services.SSH_PORT:04X}"


def duration_of(labels: dict, default: int | None) -> int:
    """The workspace's idle-stop seconds: its label, else the server's default; 0: off."""
    text = labels.get(LABEL)
    if text is not None and text.isdigit():
        return int(text)
    return default or 0


def parse_probe(text: str, at: float) -> idleness.Sample:
    """The sample in the probe's output."""
    sections: dict[str, list[str]] = {}
    current = None
    self_pid = None
    for line in text.splitlines():
        if line.startswith("@self "):
            self_pid = int(line.split()[1]) if line.split()[1].isdigit() else None
        elif line.startswith("@"):
            current = line[1:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    cgroup = 0.0
    for line in sections.get("cg2", []):
        if line.startswith("usage_usec "):
            cgroup = int(line.split()[1]) / 1e6
    if not sections.get("cg2"):
        values = [line.strip() for line in sections.get("cg1", []) if line.strip().isdigit()]
        cgroup = int(values[0]) / 1e9 if values else 0.0
    ssh = 0
    for line in sections.get("tcp", []):
        parts = line.split()
        if len(parts) > 3 and parts[1].endswith(SSH_LOCAL) and parts[3] == "01":
            ssh += 1
    own: dict[int, float] = {}
    for line in sections.get("stat", []):
        head, _, tail = line.rpartition(")")
        pid_text, _, comm = head.partition(" (")
        fields = tail.split()
        if not pid_text.strip().isdigit() or len(fields) < 13:
            continue
        pid = int(pid_text)
        ppid = int(fields[1])
        if pid == 1 or comm in idleness.OWN or pid == self_pid or ppid == self_pid:
            own[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return idleness.Sample(at=at, cgroup_cpu=cgroup, own_cpu=own, ssh_sessions=ssh)


def _parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def _jupyter(host: str, port: int, token: str) -> tuple[float | None, int] | None:
    """(last_activity, busy kernels) from Jupyter's own API, or None if it does not answer.
    no_track_activity: this look is not activity itself."""
    def get(path: str):
        request = urllib.request.Request(f"http://{host}:{port}{path}?no_track_activity=1",
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read(1 << 20))

    try:
        status, kernels = get("/api/status"), get("/api/kernels")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    busy = sum(1 for k in kernels if isinstance(k, dict) and k.get("execution_state") in BUSY)
    return _parse_time(status.get("last_activity")), busy


def sample(summary: dict) -> idleness.Sample | None:
    """One look at a running workspace (a container summary); None if it stopped meanwhile."""
    labels = summary.get("Labels") or {}
    at = time.time()
    code, out = engine.exec_capture(summary["Id"], ["sh", "-c", PROBE])
    if code == -1:
        return None
    found = parse_probe(out, at)
    port = labels.get(f"dlbox.port.{services.JUPYTER_PORT}")
    if not port:
        return found
    token = vault.load(labels["dlbox.workspace"]).get("token") or ""
    answer = _jupyter(manage._connect_host(labels.get("dlbox.host", "127.0.0.1")), int(port), token)
    if answer is None:
        return idleness.Sample(**{**found.__dict__, "jupyter_unreachable": True})
    return idleness.Sample(**{**found.__dict__, "jupyter_activity": answer[0], "kernels_busy": answer[1]})


# --- the watcher the loop keeps -------------------------------------------------------------------


@dataclass
class _Watch:
    container_id: str
    prev: idleness.Sample | None = None
    since: float | None = None
    due: float = 0.0


class Watcher:
    """The loop's memory of each running workspace: its last sample and since when it is quiet."""

    def __init__(self, default: int | None = None):
        self.default = default or 0
        self.watches: dict[str, _Watch] = {}
        self.next_pass = 0.0

    def run_once(self, now: float | None = None) -> list[str]:
        """Sample the workspaces that are due; stop those idle long enough. The names stopped."""
        now = time.time() if now is None else now
        if now < self.next_pass:  # the loop wakes each second; one listing per MIN_PERIOD is plenty
            return []
        self.next_pass = now + MIN_PERIOD
        running = engine.container_summaries([engine.MANAGED, f"dlbox.kind={manage.KIND}",
                                              f"dlbox.home={config.home_id()}"], running=True)
        seen, stopped = set(), []
        for summary in running:
            labels = summary.get("Labels") or {}
            name = labels.get("dlbox.workspace")
            duration = duration_of(labels, self.default)
            if not name or not duration:
                continue
            seen.add(name)
            watch = self.watches.get(name)
            if watch is None or watch.container_id != summary["Id"]:
                watch = self.watches[name] = _Watch(summary["Id"])
            if now < watch.due:
                continue
            watch.due = now + min(MAX_PERIOD, max(MIN_PERIOD, duration / 5))
            cur = sample(summary)
            if cur is None:
                continue
            watch.since = idleness.advance(watch.since, watch.prev, cur)
            watch.prev = cur
            if idleness.is_idle(watch.since, cur.at, duration):
                vault.note_stop(name, {"reason": "idle", "idle_for_s": int(cur.at - watch.since),
                                       "idle_since": watch.since, "at": cur.at})
                try:
                    manage.stop(name)
                except Exception:
                    vault.clear_stop(name)
                    raise
                stopped.append(name)
                seen.discard(name)
        for name in set(self.watches) - seen:
            del self.watches[name]
        return stopped
