"""Whether a workspace is idle: pure, from samples that workspaces/idle.py reads.

A workspace is idle only when, for the whole duration, every one of these held:
  - Jupyter saw no API activity (its own last_activity) and no kernel was busy;
  - no SSH session was open;
  - no process but dlbox's own services (Jupyter, sshd, init, sleep) used more than CPU_SHARE of one
    CPU, from the container's cgroup: a `nohup python train.py` started over SSH keeps it up.

CPU is the difference of two samples: the cgroup's total less the own services' share. A first
sample, or one after a gap (the service was down), has nothing to compare with, so the clock
starts again there: an unknown interval never counts as idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CPU_SHARE = 0.05  # of one CPU, averaged between two samples
MAX_GAP = 120.0  # seconds between two samples beyond which nothing is known of the interval
# by process name (comm); init (pid 1, the start script) and the sampler's own exec count too
OWN = frozenset({"jupyter", "jupyter-server", "sshd", "sleep"})


@dataclass(frozen=True)
class Sample:
    """What one look at a running workspace found (times in seconds since the epoch, CPU in seconds)."""

    at: float
    cgroup_cpu: float  # the container's cgroup CPU time so far
    own_cpu: dict[int, float] = field(default_factory=dict)  # pid -> CPU time, for dlbox's own service processes
    kernels_busy: int = 0  # Jupyter kernels whose execution_state is not idle
    jupyter_activity: float | None = None  # Jupyter's last_activity; None: no Jupyter or no answer
    ssh_sessions: int = 0  # established connections to sshd
    jupyter_unreachable: bool = False  # it runs Jupyter but gave no answer: its activity is unknown


def other_cpu_share(prev: Sample, cur: Sample) -> float:
    """Share of one CPU that processes other than dlbox's services used between two samples."""
    span = cur.at - prev.at
    if span <= 0:
        return 0.0
    own = sum(max(0.0, t - prev.own_cpu[pid]) for pid, t in cur.own_cpu.items() if pid in prev.own_cpu)
    own += sum(t for pid, t in cur.own_cpu.items() if pid not in prev.own_cpu)  # new own processes: all theirs
    return max(0.0, (cur.cgroup_cpu - prev.cgroup_cpu) - own) / span


def activity(prev: Sample | None, cur: Sample, *, cpu_share: float = CPU_SHARE, max_gap: float = MAX_GAP) -> list[str]:
    """Why the workspace was active at `cur` (empty: it was quiet since `prev`)."""
    why = []
    if prev is None or cur.at - prev.at > max_gap or cur.cgroup_cpu < prev.cgroup_cpu:
        why.append("no earlier sample to compare with")  # first, after a gap, or the container restarted
    elif other_cpu_share(prev, cur) > cpu_share:
        why.append(f"processes used {other_cpu_share(prev, cur):.0%} of a CPU")
    if cur.kernels_busy:
        why.append(f"{cur.kernels_busy} kernel(s) busy")
    if cur.ssh_sessions:
        why.append(f"{cur.ssh_sessions} SSH session(s) open")
    if cur.jupyter_unreachable:
        why.append("Jupyter did not answer")
    return why


def advance(since: float | None, prev: Sample | None, cur: Sample, **limits: float) -> float:
    """The time since which the workspace has been quiet, after sample `cur`.

    `since` is the value before (None: unknown). Activity at `cur` moves it to cur.at; Jupyter's own
    last_activity moves it forward to that time; it never moves back."""
    quiet_since = cur.at if activity(prev, cur, **limits) or since is None else since
    if cur.jupyter_activity is not None:
        quiet_since = max(quiet_since, min(cur.jupyter_activity, cur.at))
    return quiet_since if since is None else max(since, quiet_since)


def is_idle(since: float | None, now: float, idle_stop: float) -> bool:
    """Quiet for the whole of `idle_stop` seconds (0: idle stop is off)."""
    return bool(idle_stop) and since is not None and now - since >= idle_stop


def stopped_text(note: dict | None) -> str | None:
    """"stopped: idle for 2h" from the note workspaces/idle.py records when it stops a workspace."""
    from dlbox.sizes import format_duration

    if not note or note.get("reason") != "idle":
        return None
    return f"stopped: idle for {format_duration(note.get('idle_for_s') or 0)}"
