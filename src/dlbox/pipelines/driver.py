"""The pipeline driver: run by the service's reconcile loop, it moves each pipeline one stage at a time.

Intent is in the store (the `pipelines` and `pipeline_stages` rows); the driver only ever acts on what the
rows say, so a pipeline goes on after the CLI exits and after the service restarts:

- a job stage (test, train, evaluate) submits its job and records it on the stage in one transaction
  (`Store.start_stage_job`), so a service killed in between leaves either both or neither; afterwards the
  stage only watches that job. Its job is never submitted twice.
- build runs in a thread of the service (an image build takes minutes); the engine's build cache keeps its
  finished layers, so a build the service was killed in is built again (its stage's `attempts` says so).
- gate, register, deploy and report are quick and idempotent: register finds the version an earlier,
  interrupted attempt made (by pipeline id) instead of making another one.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

from dlbox import config, snapshots
from dlbox.errors import DlboxError, NotFound, StoreUnavailable
from dlbox.jobs import runner as jobs
from dlbox.jobs.state import JobState
from dlbox.pipelines import gates
from dlbox.pipelines.source import model_name, spec_of
from dlbox.pipelines.state import ALWAYS, JOB_STAGES, STAGES, PipelineState, StageState, after_failure, final, next_stage
from dlbox.store.db import Pipeline, PipelineStage, Store

CHAMPION = "champion"
JUNIT_PREFIX = "artifacts/"


def home(pipeline_id: str) -> Path:
    """$DLBOX_HOME/pipelines/ID: stage logs, the lock of its build, the report."""
    return config.home() / "pipelines" / pipeline_id


def log_path(pipeline_id: str, stage: str) -> Path:
    return home(pipeline_id) / "logs" / f"{stage}.log"


def log(pipeline_id: str, stage: str, text: str) -> None:
    path = log_path(pipeline_id, stage)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} {text}\n")


class LogProgress:
    """The build flow's Progress, written to the build stage's log."""

    def __init__(self, pipeline_id: str):
        self.pipeline_id = pipeline_id

    def step(self, message: str) -> None:
        log(self.pipeline_id, "build", f"> {message}")

    def line(self, text: str) -> None:
        log(self.pipeline_id, "build", f"  {text.rstrip()}")

    def show_tail(self, lines: list[str]) -> None:
        pass


def _message(exc: Exception) -> str:
    if isinstance(exc, DlboxError):
        return " ".join(str(exc).split())[:1000]
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class Driver:
    def __init__(self, store: Store, capacity: jobs.Capacity, wake=lambda: None):
        self.store = store
        self.capacity = capacity
        self.wake = wake
        self.builds: dict[str, threading.Thread] = {}
        self.built: dict[str, tuple[bool, dict | str]] = {}  # pipeline -> (ok, result or reason), from the thread
        self.errors: dict[str, str] = {}
        self.since = time.time()  # a build stage running since before this is an earlier process's

    def run_once(self) -> None:
        for pipeline in self.store.pipelines(states={PipelineState.QUEUED.value, PipelineState.RUNNING.value}):
            try:
                self.advance(pipeline.id)
                self.errors.pop(pipeline.id, None)
            except Exception as exc:  # noqa: BLE001 - one pipeline's trouble (the store, say) must not stop others
                self.errors[pipeline.id] = _message(exc)

    # --- moving a pipeline ---------------------------------------------------------------------

    def advance(self, pipeline_id: str) -> None:
        """As far as this pipeline can go now: quick stages follow each other in one pass."""
        for _ in range(len(STAGES) + 2):
            pipeline = self.store.get_pipeline(pipeline_id)
            if pipeline.state == PipelineState.QUEUED.value:
                pipeline = self.store.pipeline_transition(pipeline.id, PipelineState.RUNNING.value)
            stages = {s.name: s for s in self.store.stages(pipeline.id)}
            if pipeline.cancel_requested:
                self._cancel(pipeline, stages)
                return
            name = next_stage({n: s.state for n, s in stages.items()})
            if name is None:
                self._end(pipeline, stages)
                return
            stage = stages[name]
            if stage.state == StageState.PENDING.value:
                stage = self.store.stage_transition(pipeline.id, name, StageState.RUNNING.value)
            before = stage.state
            try:
                getattr(self, f"_{name}")(pipeline, stage)
            except StoreUnavailable:
                raise  # nothing can be recorded now: the next pass tries again
            except Exception as exc:  # noqa: BLE001 - the stage fails with the reason; the pipeline stops
                if self._stage(pipeline, name).state != StageState.RUNNING.value:
                    raise  # it had ended before the error: nothing to fail (run_once keeps the error)
                self._fail(pipeline, name, _message(exc))
            if self.store.stages(pipeline.id)[STAGES.index(name)].state == before:
                return  # still running (a job, a build): the next pass looks again

    def _done(self, pipeline: Pipeline, name: str, *, reason: str | None = None, result: dict | None = None,
              state: str = StageState.SUCCEEDED.value) -> None:
        fields = {"result": result} if result is not None else {}
        self.store.stage_transition(pipeline.id, name, state, reason=reason, **fields)
        log(pipeline.id, name, f"{state}{': ' + reason if reason else ''}")

    def _fail(self, pipeline: Pipeline, name: str, reason: str, result: dict | None = None) -> None:
        self._done(pipeline, name, reason=reason, result=result, state=StageState.FAILED.value)
        stages = {s.name: s.state for s in self.store.stages(pipeline.id)}
        for later in after_failure(stages):
            self.store.stage_transition(pipeline.id, later, StageState.SKIPPED.value,
                                        reason=f"not run: {name} failed")

    def _outcome(self, pipeline: Pipeline, stages: dict[str, PipelineStage],
                 report_ok: bool | None = None) -> tuple[PipelineState, str]:
        """How the pipeline ends, and why (`report_ok`: the report stage's success, before it is recorded)."""
        states = {n: s.state for n, s in stages.items()}
        if report_ok is not None:
            states["report"] = StageState.SUCCEEDED.value if report_ok else StageState.FAILED.value
        blessed = None if pipeline.verdict is None else bool(pipeline.verdict.get("passed"))
        # a report that could not be written is its stage's failure, but does not undo a promotion
        counted = {n: (StageState.SUCCEEDED.value if n in ALWAYS and blessed is not None else s)
                   for n, s in states.items()}
        end = final(counted, blessed)
        if end is PipelineState.FAILED:
            failed = next((s for s in stages.values() if s.state == StageState.FAILED.value), None)
            reason = f"{failed.name}: {failed.reason}" if failed else "no verdict was reached"
        elif end is PipelineState.REJECTED:
            reason = f"rejected by the gate: {pipeline.verdict.get('reason')}"
        else:
            reason = f"{pipeline.model_name}:{pipeline.model_version} is the champion"
        return end, reason

    def _end(self, pipeline: Pipeline, stages: dict[str, PipelineStage]) -> None:
        end, reason = self._outcome(pipeline, stages)
        self.store.pipeline_transition(pipeline.id, end.value, reason=reason)

    def _cancel(self, pipeline: Pipeline, stages: dict[str, PipelineStage]) -> None:
        waiting = False
        for name in STAGES:
            stage = stages[name]
            if stage.state == StageState.PENDING.value:
                self.store.stage_transition(pipeline.id, name, StageState.CANCELLED.value, reason="cancelled")
            elif stage.state == StageState.RUNNING.value:
                job = self.store.get_job(stage.job_ids[0]) if stage.job_ids else None
                if job is not None and not JobState(job.state).is_finished():
                    if not job.cancel_requested:
                        self.store.update(job.id, cancel_requested=True)
                        self.wake()
                    waiting = True
                elif name == "build" and pipeline.id in self.builds and self.builds[pipeline.id].is_alive():
                    waiting = True  # a build cannot be stopped half-way; it ends, then the stage is cancelled
                else:
                    self.store.stage_transition(pipeline.id, name, StageState.CANCELLED.value, reason="cancelled")
        if not waiting:
            self.store.pipeline_transition(pipeline.id, PipelineState.CANCELLED.value, reason="cancelled")

    def _stage(self, pipeline: Pipeline, name: str) -> PipelineStage:
        return self.store.stages(pipeline.id)[STAGES.index(name)]

    def _run_of(self, pipeline: Pipeline, name: str) -> str:
        stage = self._stage(pipeline, name)
        if not stage.job_ids:
            raise DlboxError(f"the {name} stage made no run", code="failed")
        return stage.job_ids[0]

    # --- the stages ----------------------------------------------------------------------------

    def _build(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        thread = self.builds.get(pipeline.id)
        if thread is not None and thread.is_alive():
            return
        if pipeline.id in self.built:
            ok, outcome = self.built.pop(pipeline.id)
            self.builds.pop(pipeline.id, None)
            if not ok:  # a message, or (a failed scan gate) the image with its scan
                failed = outcome if isinstance(outcome, dict) else {"reason": str(outcome)}
                self._fail(pipeline, "build", failed["reason"], result=failed if len(failed) > 1 else None)
                return
            self.store.update_pipeline(pipeline.id, image_id=outcome["id"], lock_hash=outcome["lock_hash"])
            self._done(pipeline, "build", reason=f"image {outcome['id'][7:19]} (lock {outcome['lock_hash'][:12]})",
                       result=outcome)
            return
        if thread is None and stage.started_at and stage.started_at < self.since:
            # running, yet no thread of this process builds it: the service was stopped during the build
            self.store.update_stage(pipeline.id, "build", attempts=stage.attempts + 1)
            log(pipeline.id, "build", "the service restarted during the build: building again (the engine's "
                                      "cache keeps the finished layers)")
        spec = spec_of(pipeline)
        account = self.store.get_user(pipeline.user)
        found = None
        if account is not None and account.role != "admin":  # on the team server only admins build images
            from dlbox.build import images

            if spec.pipeline.scan and spec.pipeline.scan.advisories:  # read by the server: a path there, or a URL
                self._fail(pipeline, "build", "pipeline.scan.advisories: only an admin may choose the advisory "
                                              "source on the server; leave it out to use the server's")
                return
            found = images.find_built(spec)
            if found is None:
                self._fail(pipeline, "build", f"no image of this dlbox.yaml ({spec.name}) is built on this server, and "
                                              "only admins build images: ask one to `dlbox build` it")
                return
            found = {"id": found["id"], "image": found["ref"], "lock_hash": found.get("lock_hash") or "", "tags": []}
            if spec.pipeline.scan is None:
                self.built[pipeline.id] = (True, found)
                self.wake()
                return
        thread = threading.Thread(target=self._build_thread, args=(pipeline.id, pipeline.code_hash, spec, found),
                                  daemon=True, name=f"pipeline-build-{pipeline.id}")
        self.builds[pipeline.id] = thread
        thread.start()

    def _build_thread(self, pipeline_id: str, code_hash: str, spec, found: dict | None = None) -> None:
        """Build the commit's image (or take `found`, the one built already), then the scan gate if any."""
        try:
            progress = LogProgress(pipeline_id)
            outcome = found or self._build_image(pipeline_id, code_hash, spec, progress)
            self.built[pipeline_id] = self._scan_gate(pipeline_id, spec.pipeline.scan, outcome, progress)
        except Exception as exc:  # noqa: BLE001 - the stage fails with the reason
            self.built[pipeline_id] = (False, _message(exc))
        self.wake()

    @staticmethod
    def _scan_gate(pipeline_id: str, gate, outcome: dict, progress) -> tuple[bool, dict]:
        if gate is None:
            return True, outcome
        from dlbox.supply import scan

        progress.step(f"scanning {outcome['image']} (fail on {gate.fail_on})")
        result = scan.gate(outcome["id"], fail_on=gate.fail_on, advisories=gate.advisories)
        verdict = scan.gate_text(result)
        log(pipeline_id, "build", verdict)
        found = outcome | {"scan": scan.summary(result) | {"fail_on": gate.fail_on}}
        return (False, found | {"reason": verdict}) if result["gate"]["failed"] else (True, found)

    @staticmethod
    def _build_image(pipeline_id: str, code_hash: str, spec, progress) -> dict:
        from dlbox.build import images

        lock_file = home(pipeline_id) / "dlbox.lock"
        lock_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        committed = snapshots.file_text(code_hash, "dlbox.lock")
        if committed is not None and not lock_file.exists():
            lock_file.write_bytes(committed)  # the commit's lock decides the packages, as in `dlbox build`
        progress.step(f"building {spec.name} from the commit's dlbox.yaml")
        result = images.build(spec, project_dir=snapshots.tree(code_hash), lock_file=lock_file,
                              ca_bundle=config.default_ca_bundle(), progress=progress)
        return {"id": result.id, "image": result.image, "lock_hash": result.lock.hash, "tags": result.tags}

    def _job_stage(self, pipeline: Pipeline, stage: PipelineStage, config_, *, input_run: str | None = None) -> None:
        """Submit the stage's job once; then watch it. Gives the finished job (None while it runs)."""
        from dlbox.jobs import submit

        if not stage.job_ids:
            request = submit.JobRequest(
                image=pipeline.image_id, command=list(config_.command), name=f"pipeline-{pipeline.id}-{stage.name}",
                params=dict(config_.params), memory=config_.memory, cpus=config_.cpus, gpus=config_.gpus,
                code_hash=pipeline.code_hash, git_commit=pipeline.git_commit)
            job = submit.build_job(request, pipeline.user, self.capacity)
            job.input_run = input_run
            if self.store.start_stage_job(pipeline.id, stage.name, job):
                log(pipeline.id, stage.name, f"submitted run {job.id}: {' '.join(config_.command)[:300]}")
                self.wake()
            return None
        job = self.store.get_job(stage.job_ids[0])
        if job is None:
            raise DlboxError(f"its run {stage.job_ids[0]} no longer exists", code="failed")
        if not JobState(job.state).is_finished():
            if (job.started_at and time.time() - job.started_at > config_.timeout and not job.cancel_requested):
                self.store.update(job.id, cancel_requested=True)
                self.store.update_stage(pipeline.id, stage.name, reason=f"over its timeout of {config_.timeout} s")
                log(pipeline.id, stage.name, f"run {job.id} is over its timeout of {config_.timeout} s: cancelling")
                self.wake()
            return None
        return job

    def _job_failed(self, job) -> str:
        why = job.reason or (f"exit code {job.exit_code}" if job.exit_code is not None else job.state)
        return f"run {job.id} {job.state}: {why}"

    def _test(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        spec = spec_of(pipeline)
        if spec.pipeline.test is None:
            self._done(pipeline, "test", reason="no test: section", state=StageState.SKIPPED.value)
            return
        job = self._job_stage(pipeline, stage, spec.pipeline.test)
        if job is None:
            return
        result = {"run": job.id}
        junit = self._junit(job.id, spec.pipeline.test.junit)
        if junit is not None:
            result["junit"] = junit
        summary = junit.get("summary") if junit else None
        if job.state != JobState.SUCCEEDED.value:
            self._fail(pipeline, "test", self._job_failed(job) + (f" ({summary})" if summary else ""), result)
        elif junit and (junit.get("failures") or junit.get("errors")):
            self._fail(pipeline, "test", f"{summary} (run {job.id} exited 0)", result)
        else:
            self._done(pipeline, "test", reason=summary or f"run {job.id} succeeded (no JUnit XML)", result=result)

    def _junit(self, job_id: str, path: str) -> dict | None:
        from dlbox.pipelines import junit

        target = jobs.run_dir(job_id) / "artifacts" / path  # the service's copy: collect copies no links
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None  # not written (or not a plain file)
        try:
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                parsed = junit.parse(handle.read(junit.MAX_BYTES + 1))
        except (OSError, ValueError) as exc:
            return {"error": str(exc)[:300]}
        return {**parsed, "summary": junit.summary(parsed)}

    def _train(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        job = self._job_stage(pipeline, stage, spec_of(pipeline).pipeline.train)
        if job is None:
            return
        if job.state != JobState.SUCCEEDED.value:
            self._fail(pipeline, "train", self._job_failed(job), {"run": job.id})
        else:
            self._done(pipeline, "train", reason=f"run {job.id} succeeded", result={"run": job.id})

    def _evaluate(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        train = self._run_of(pipeline, "train")
        job = self._job_stage(pipeline, stage, spec_of(pipeline).pipeline.evaluate, input_run=train)
        if job is None:
            return
        if job.state != JobState.SUCCEEDED.value:
            self._fail(pipeline, "evaluate", self._job_failed(job), {"run": job.id})
            return
        metrics = self.store.last_metrics([job.id])[job.id]
        self._done(pipeline, "evaluate", reason=f"run {job.id}: {len(metrics)} metrics",
                   result={"run": job.id, "metrics": metrics})

    def _champion(self, pipeline: Pipeline, name: str):
        from dlbox.models import registry

        try:
            return registry.resolve(self.store, pipeline.user, f"{name}@{CHAMPION}")
        except NotFound:
            return None

    def _verdict(self, pipeline: Pipeline) -> tuple[gates.Verdict, object, str]:
        spec = spec_of(pipeline)
        name = model_name(spec)
        metrics = self.store.last_metrics([self._run_of(pipeline, "evaluate")]).popitem()[1]
        champion = self._champion(pipeline, name)
        verdict = gates.evaluate(spec.pipeline.gate, metrics, champion.metrics if champion else None,
                                 champion_ref=champion.ref if champion else None)
        return verdict, champion, name

    def _gate(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        verdict, champion, name = self._verdict(pipeline)
        self.store.update_pipeline(pipeline.id, verdict=verdict.to_json(), model_name=name,
                                   champion_version=champion.version if champion else None)
        for metric in verdict.metrics:
            log(pipeline.id, "gate", f"{metric.name}: {'pass' if metric.passed else 'FAIL'}: "
                                     + "; ".join(c.message for c in metric.checks))
        against = f"against champion {champion.ref}" if champion else "no champion yet (first run)"
        self._done(pipeline, "gate", reason=f"{'blessed' if verdict.passed else 'rejected'} ({against}): "
                                            f"{verdict.reason}", result={"passed": verdict.passed})

    def _register(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        from dlbox.models import registry

        spec = spec_of(pipeline)
        verdict_json = pipeline.verdict or {}
        champion = self._champion(pipeline, model_name(spec))
        if (champion.version if champion else None) != pipeline.champion_version:
            # another pipeline moved the champion since this gate ran: judge against the new one
            verdict, champion, _ = self._verdict(pipeline)
            verdict_json = verdict.to_json()
            self.store.update_pipeline(pipeline.id, verdict=verdict_json,
                                       champion_version=champion.version if champion else None)
            log(pipeline.id, "register", "the champion moved since the gate ran: gated again against "
                                         f"{champion.ref if champion else 'no champion'}")
        blessed = bool(verdict_json.get("passed"))
        made = self.store.version_of_pipeline(pipeline.id)  # an interrupted earlier attempt's version
        if made is not None:
            version = made[1].version
        else:
            evaluation = self.store.last_metrics([self._run_of(pipeline, "evaluate")]).popitem()[1]
            cfg = spec.pipeline.register_
            version = registry.register(
                self.store, pipeline.user, model_name(spec), run=self._run_of(pipeline, "train"), path=cfg.path,
                format=cfg.format, metrics=evaluation, verdict="blessed" if blessed else "rejected",
                verdict_detail=verdict_json, pipeline_id=pipeline.id).version
        self.store.update_pipeline(pipeline.id, model_name=model_name(spec), model_version=version)
        if blessed:
            registry.move_alias(self.store, pipeline.user, model_name(spec), CHAMPION, version)
            self._done(pipeline, "register", reason=f"{model_name(spec)}:{version} blessed; it is the champion",
                       result={"model": model_name(spec), "version": version, "verdict": "blessed"})
        else:
            kept = f"{champion.ref} stays the champion" if champion else "there is still no champion"
            self._done(pipeline, "register", reason=f"{model_name(spec)}:{version} rejected; {kept}",
                       result={"model": model_name(spec), "version": version, "verdict": "rejected"})

    def _deploy(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        from dlbox.models import registry
        from dlbox.pipelines import deploy

        spec = spec_of(pipeline)
        if not (pipeline.verdict or {}).get("passed"):
            self._done(pipeline, "deploy", reason="rejected by the gate: the champion and any deployment stay as "
                                                  "they were", state=StageState.SKIPPED.value)
            return
        if not spec.pipeline.deploy.enabled:
            self._done(pipeline, "deploy", reason="deploy.enabled is false", state=StageState.SKIPPED.value)
            return
        version = registry.resolve(self.store, pipeline.user, f"{pipeline.model_name}:{pipeline.model_version}")
        note = deploy.deploy(self.store, version)
        if note is None:
            self._done(pipeline, "deploy", reason="skipped: no deployment follows this model",
                       state=StageState.SKIPPED.value)
        else:
            self._done(pipeline, "deploy", reason=str(note)[:1000], result={"note": str(note)[:1000]})

    def _report(self, pipeline: Pipeline, stage: PipelineStage) -> None:
        from dlbox.pipelines import report

        current = self.store.get_pipeline(pipeline.id)
        end, reason = self._outcome(current, {s.name: s for s in self.store.stages(pipeline.id)}, report_ok=True)
        written = report.write(self.store, current, outcome=(end.value, reason))
        self._done(pipeline, "report", reason=f"{len(written)} files in {report.folder(pipeline.id)}",
                   result={"files": sorted(written)})


def stage_job_ids(store: Store, pipeline_id: str) -> dict[str, list[str]]:
    return {s.name: list(s.job_ids or []) for s in store.stages(pipeline_id)}


__all__ = ["Driver", "JOB_STAGES", "home", "log_path", "spec_of"]
