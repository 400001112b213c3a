"""Benchmark 8: the digits training in a job, against a plain `docker run`.

The digits training (examples/digits/train.py, 20 epochs, mounted read-only at /code) in a
dlbox job against a plain `docker run` of the same image, both --cpus 2 and no memory limit:
each training run is timed from its container's start to its exit as the engine saw it
(start and die events; for raw also State.StartedAt/FinishedAt, shown as a check), and the
throughput ratio is raw time / dlbox time. 5 of each, interleaved (ABBAABBAAB), median.
Target: ratio >= 0.97.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
from datetime import datetime
from pathlib import Path

from common import (DOCKER, JOB_IMAGE, LABEL, PRESET, QUICK, BenchError, Row, Runner, check_job_image, docker_api,
                    live_guard, live_raw, lost_hint, raw_name, raw_rm, say, secs, service, submit, verdict,
                    wait_jobs)

TRAIN_TARGET = 0.97   # raw / dlbox training time (dlbox's throughput relative to raw)
TRAIN_ORDER = "AB" if QUICK else "ABBAABBAAB"  # 5 each: one run is ~7 s, and noise of ±0.5 s decides 0.97
TRAIN_EPOCHS = 20
TRAIN_CPUS = 2
TRAIN_TIMEOUT = 1200.0
DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 8
TITLE = f"8. digits training, {TRAIN_EPOCHS} epochs, in a job"


def engine_time(text: str) -> float:
    """An engine timestamp (RFC 3339 with nanoseconds, e.g. 2024-05-01T10:00:00.123456789Z) as epoch seconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match:
        raise BenchError(f"cannot read the engine's timestamp {text!r}")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole = datetime.fromisoformat(match.group(1) + zone).timestamp()
    return whole + float("0." + (match.group(2) or "0"))


class ContainerEvents:
    """The engine's start and die events of this run's containers (by name), read in a thread."""

    def __init__(self) -> None:
        import docker  # in the venv (dlbox needs it)

        self.client = docker.from_env(timeout=60).api  # a connection of its own: events stream on it
        self.times: dict[str, dict[str, float]] = {}
        self.error: str | None = None
        self.cond = threading.Condition()
        self.stream = self.client.events(decode=True, filters={"type": "container", "label": LABEL,
                                                               "event": ["start", "die"]})
        self.thread = threading.Thread(target=self._read, daemon=True, name="events")
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name")
                action = event.get("Action") or event.get("status")
                if name and action in ("start", "die") and event.get("timeNano"):
                    with self.cond:
                        self.times.setdefault(name, {})[action] = event["timeNano"] / 1e9
                        self.cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - closed by close(), or the engine went away
            with self.cond:
                self.error = f"{type(exc).__name__}: {exc}"
                self.cond.notify_all()

    def duration(self, name: str, timeout: float = 15.0) -> float:
        """Seconds from the container's start event to its die event."""
        with self.cond:
            self.cond.wait_for(lambda: {"start", "die"} <= set(self.times.get(name, {})) or self.error, timeout)
            seen = self.times.get(name, {})
            if not {"start", "die"} <= set(seen):
                raise BenchError(f"the engine sent no start and die events for {name}"
                                 + (f" (event stream: {self.error})" if self.error else ""))
            return seen["die"] - seen["start"]

    def close(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001
            pass
        self.client.close()


ACCURACY = re.compile(r"test accuracy ([0-9.]+)")


def train_dlbox(runner: Runner, events: ContainerEvents, i: int) -> tuple[float, str]:
    job_id = submit(runner, f"train-dlbox-{i}", "--cpus", f"{TRAIN_CPUS:g}", "--mount", f"{DIGITS}:/code:ro",
                    "--param", f"epochs={TRAIN_EPOCHS}", "--", "python", "/code/train.py")
    _, records = wait_jobs([job_id], TRAIN_TIMEOUT, period=0.5)
    saved = service.home / "runs" / job_id / "output.log"
    output = saved.read_text(errors="replace") if saved.exists() else "(no output saved)"
    log = runner.note(f"train-dlbox-{i}-output", f"# job {job_id}: {json.dumps(records.get(job_id))}\n{output}")
    record = records.get(job_id) or {"state": "missing", "reason": None}
    if record["state"] != "succeeded":
        tail = "\n".join("    " + line for line in output.strip().splitlines()[-15:])
        raise BenchError(f"training job {job_id} ended {record['state']} ({record['reason'] or 'no reason'}; "
                         f"log {log})" + (lost_hint() if record["state"] == "lost" else "") + f":\n{tail}")
    found = ACCURACY.search(output)
    return events.duration(f"dlbox-job-{job_id}"), found.group(1) if found else "?"


def train_raw(runner: Runner, events: ContainerEvents, i: int) -> tuple[float, str, float]:
    """(start-to-die seconds by events, test accuracy, StartedAt-to-FinishedAt seconds by inspect)."""
    name = raw_name(f"t{i}")
    with live_guard:
        live_raw.add(name)
    try:
        _, out = runner.run(f"train-raw-{i}", [DOCKER, "run", "--name", name, "--label", LABEL,
                                               "--cpus", f"{TRAIN_CPUS:g}", "-v", f"{DIGITS}:/code:ro",
                                               "-e", f"EPOCHS={TRAIN_EPOCHS}", JOB_IMAGE, "python", "/code/train.py"])
        state = docker_api().inspect_container(name)["State"]
        inspected = engine_time(state["FinishedAt"]) - engine_time(state["StartedAt"])
        found = ACCURACY.search(out)
        return events.duration(name), found.group(1) if found else "?", inspected
    finally:
        raw_rm(name)


def bench(runner: Runner, work: Path) -> list[Row]:
    check_job_image()
    if not (DIGITS / "train.py").is_file():
        raise BenchError(f"no {DIGITS / 'train.py'}")
    service.preflight()
    say(f"8. checking that {JOB_IMAGE} has scikit-learn and TensorFlow (untimed; warms the page cache too)")
    try:
        runner.run("train-check", [DOCKER, "run", "--rm", "--label", LABEL, JOB_IMAGE, "python", "-c",
                                   "import sklearn, tensorflow"])
    except BenchError as exc:
        raise BenchError(f"{JOB_IMAGE} cannot import scikit-learn and TensorFlow; rebuild it "
                         f"(dlbox build --preset {PRESET}): {str(exc).splitlines()[-1].strip()}") from None
    times: dict[str, list[float]] = {"A": [], "B": []}
    events = ContainerEvents()
    try:
        for i, which in enumerate(TRAIN_ORDER, 1):
            if which == "A":
                say(f"8. {i}/{len(TRAIN_ORDER)}: dlbox run --cpus {TRAIN_CPUS} --param epochs={TRAIN_EPOCHS} "
                    "-- python /code/train.py")
                seconds, accuracy = train_dlbox(runner, events, i)
                say(f"   {secs(seconds)} from container start to exit; test accuracy {accuracy}")
            else:
                say(f"8. {i}/{len(TRAIN_ORDER)}: docker run --cpus {TRAIN_CPUS} -e EPOCHS={TRAIN_EPOCHS} ... "
                    "python /code/train.py")
                seconds, accuracy, inspected = train_raw(runner, events, i)
                say(f"   {secs(seconds)} from container start to exit (State.StartedAt to FinishedAt: "
                    f"{secs(inspected)}); test accuracy {accuracy}")
            times[which].append(seconds)
    finally:
        events.close()
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    runs = f"median of {len(times['A'])}" if len(times["A"]) > 1 else "1 run"
    return [Row(f"8. digits training, {TRAIN_EPOCHS} epochs, in a job", secs(a), secs(b), f"{b / a:.3f}x",
                f"raw/dlbox >= {TRAIN_TARGET}", verdict(b / a >= TRAIN_TARGET),
                f"ratio: throughput dlbox/raw; {runs} each ({TRAIN_ORDER}); container start to exit (engine events); "
                f"--cpus {TRAIN_CPUS}, no memory limit; dlbox {' '.join(f'{t:.2f}' for t in times['A'])}, "
                f"raw {' '.join(f'{t:.2f}' for t in times['B'])}")]
