"""The job state machine. Every state change goes through `check_transition` (pipelines' too).

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
    """A state change that its machine does not allow (of a job, a pipeline or a stage)."""


def check_transition(table: dict, current, new) -> None:
    """Refuse a change that `table` (state -> the states it may go to) does not allow. The states may be
    given as their values; the message names the machine by its enum (JobState: "a job cannot go...")."""
    kind = type(next(iter(table)))
    current, new = kind(current), kind(new)
    if new not in table[current]:
        noun = kind.__name__.removesuffix("State").lower()
        raise BadTransition(f"a {noun} cannot go from {current.value} to {new.value}")


def final_state(*, exit_code: int, oom_killed: bool, cancel_requested: bool,
                engine_restart: bool = False) -> tuple[JobState, str]:
    """How a job that ran ended, and why, from what the engine says of its container.
    `engine_restart`: it was stopped by the engine's own shutdown, not by anything the job did."""
    if cancel_requested:
        return JobState.CANCELLED, f"cancelled (exit code {exit_code})"
    if oom_killed:
        return JobState.OOM_KILLED, f"killed by the kernel: out of memory (exit code {exit_code})"
    if engine_restart:
        return JobState.LOST, (f"stopped by a restart of the container engine (dockerd without live-restore "
                               f"stops every container), exit code {exit_code}")
    if exit_code == 0:
        return JobState.SUCCEEDED, "exit code 0"
    return JobState.FAILED, f"exit code {exit_code}"



# A dockerd shutting down closes its API first and then stops the containers (SIGTERM: 143,
# SIGKILL after the grace: 137), so a job it stopped ended while the service could not reach it.
ENGINE_STOP_CODES = (137, 143)


class Outages:
    """When the engine could not be reached (its event stream cut), the last few, in Unix seconds."""

    KEEP = 10

    def __init__(self) -> None:
        self.spans: list[tuple[float, float | None]] = []  # (since, until); until None: not back yet

    def gone(self, when: float) -> None:
        """The engine stopped answering: an outage begins, unless one is open."""
        if not self.spans or self.spans[-1][1] is not None:
            self.spans = [*self.spans[-(self.KEEP - 1):], (when, None)]

    def back(self, when: float) -> None:
        if self.spans and self.spans[-1][1] is None:
            self.spans[-1] = (self.spans[-1][0], when)

    def stopped_by_engine(self, exit_code: int, finished_at: float | None, now: float, slack: float = 2.0) -> bool:
        """Did a container end with a stop signal during an outage (an open one lasts until `now`)?"""
        if exit_code not in ENGINE_STOP_CODES or finished_at is None:
            return False
        return any(since - slack <= finished_at <= (until if until is not None else now) + slack
                   for since, until in self.spans)
