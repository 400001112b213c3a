"""The job state machine. Every state change goes through `check_transition`.

queued -> starting -> running -> finishing -> succeeded | failed | cancelled | oom-killed | lost
(queued and starting may also end as cancelled, failed or lost). A finishing job's container has
exited: its outputs are being collected, and it no longer holds capacity.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    FINISHING = "finishing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    OOM_KILLED = "oom-killed"
    LOST = "lost"

    def is_finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.OOM_KILLED, JobState.LOST})

ALLOWED = {
    JobState.QUEUED: {JobState.STARTING, JobState.CANCELLED, JobState.FAILED},
    JobState.STARTING: {JobState.RUNNING, JobState.FAILED, JobState.CANCELLED, JobState.LOST, JobState.QUEUED},
    JobState.RUNNING: {JobState.FINISHING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                       JobState.OOM_KILLED, JobState.LOST},
    JobState.FINISHING: set(FINISHED),
    **{state: set() for state in FINISHED},
}


# not finished yet: what `dlbox jobs` lists; of these, STARTING and RUNNING hold capacity
ACTIVE = frozenset({JobState.QUEUED, JobState.STARTING, JobState.RUNNING, JobState.FINISHING})


class BadTransition(Exception):
    pass


def check_transition(current: JobState, new: JobState) -> None:
    if new not in ALLOWED[current]:
        raise BadTransition(f"a job cannot go from {current.value} to {new.value}")


def final_state(*, exit_code: int, oom_killed: bool, cancel_requested: bool) -> tuple[JobState, str]:
    """How a job that ran ended, and why, from what the engine says of its container."""
    if cancel_requested:
        return JobState.CANCELLED, f"cancelled (exit code {exit_code})"
    if oom_killed:
        return JobState.OOM_KILLED, f"killed by the kernel: out of memory (exit code {exit_code})"
    if exit_code == 0:
        return JobState.SUCCEEDED, "exit code 0"
    return JobState.FAILED, f"exit code {exit_code}"
