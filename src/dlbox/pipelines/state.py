"""The pipeline and stage state machines (pure). Every change goes through
jobs.state.check_transition with PIPELINE_ALLOWED or STAGE_ALLOWED.

pipeline: queued -> running -> promoted | rejected | failed | cancelled   (queued may end cancelled or failed)
stage:    pending -> running -> succeeded | failed | skipped | cancelled   (skipped: it found nothing to do)
          pending -> skipped | cancelled                                   (never started)

Stages run in STAGES order, one at a time. A failed stage stops the pipeline: the stages after it are
skipped, except `report`, which is still written so the failure has one. A gate that rejects the
candidate is no failure: register records it as rejected, deploy is skipped, the pipeline ends rejected.
"""

from __future__ import annotations

from enum import Enum

STAGES = ("build", "test", "train", "evaluate", "gate", "register", "deploy", "report")
ALWAYS = ("report",)  # run even after a failure
JOB_STAGES = ("test", "train", "evaluate")


class PipelineState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in (PipelineState.PROMOTED, PipelineState.REJECTED, PipelineState.FAILED, PipelineState.CANCELLED)


class StageState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self not in (StageState.PENDING, StageState.RUNNING)


PIPELINE_ALLOWED = {
    PipelineState.QUEUED: {PipelineState.RUNNING, PipelineState.CANCELLED, PipelineState.FAILED},
    PipelineState.RUNNING: {PipelineState.PROMOTED, PipelineState.REJECTED, PipelineState.FAILED,
                            PipelineState.CANCELLED},
    **{s: set() for s in PipelineState if s.is_finished()},
}
STAGE_ALLOWED = {
    StageState.PENDING: {StageState.RUNNING, StageState.SKIPPED, StageState.CANCELLED},
    StageState.RUNNING: {StageState.SUCCEEDED, StageState.FAILED, StageState.SKIPPED, StageState.CANCELLED},
    **{s: set() for s in StageState if s.is_finished()},
}

# the exit code of `dlbox pipeline run --follow` (and `show`) for each end
EXIT = {PipelineState.PROMOTED: 0, PipelineState.FAILED: 1, PipelineState.CANCELLED: 1, PipelineState.REJECTED: 3}


def next_stage(stages: dict[str, str]) -> str | None:
    """The stage to work on (running, or the first pending one after only finished ones); None when all ended.

    `stages`: name -> state for every stage in STAGES."""
    for name in STAGES:
        state = StageState(stages[name])
        if state is StageState.RUNNING or state is StageState.PENDING:
            return name
    return None


def after_failure(stages: dict[str, str]) -> list[str]:
    """The pending stages to skip once a stage failed (ALWAYS ones stay pending and still run)."""
    return [n for n in STAGES if stages[n] == StageState.PENDING.value and n not in ALWAYS]


def final(stages: dict[str, str], blessed: bool | None, cancelled: bool = False) -> PipelineState:
    """The pipeline's end from its stages and the gate's verdict (None: no verdict reached)."""
    if cancelled:
        return PipelineState.CANCELLED
    if any(stages[n] in (StageState.FAILED.value, StageState.CANCELLED.value) for n in STAGES):
        return PipelineState.FAILED
    if blessed is None:
        return PipelineState.FAILED
    return PipelineState.PROMOTED if blessed else PipelineState.REJECTED
