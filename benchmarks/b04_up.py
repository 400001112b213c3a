"""Benchmark 4: `dlbox up` until Jupyter answers, against a raw Jupyter container.

Time from `dlbox up NAME --image dlbox/<preset>:latest` (Jupyter on, image present) until
it returns, which it does once Jupyter answers, against a raw `docker run -d -p ...` of
the image's Jupyter server polled the same way (GET /api/status with the token every
0.05 s from the moment `docker run` is launched). Median of 5 each, interleaved, after one
untimed warm-up of each. Target: ratio <= 1.05.

Where dlbox's time goes (medians, from `up --json`'s timings): the CLI's start (Python, click and
the Docker SDK imported: total less gather and apply), gather+plan, volumes, engine create (with the service files) and start, then waiting for the first
answer, of which the Jupyter import is measured alone in the image (`import
jupyter_server.serverapp` in a fresh container).
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

from common import (DOCKER, QUICK, WS_IMAGE, Row, Runner, check_ws_image, dlbox_rm, dlbox_up, ratio, raw_name, raw_rm, raw_up,
                    say, secs, verdict, ws_name)

UP_TARGET = 1.05      # dlbox / baseline, `dlbox up` until Jupyter answers (issue 16)
UP_RUNS = 2 if QUICK else 5
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 4
TITLE = "4. dlbox up until Jupyter answers"


def bench(runner: Runner, work: Path) -> list[Row]:
    check_ws_image()
    times: dict[str, list[float]] = {"A": [], "B": []}
    phases: list[dict] = []

    def sample(which: str, tag: str) -> float:
        if which == "A":
            name = ws_name(tag)
            try:
                seconds = dlbox_up(runner, f"up-dlbox-{tag}", name, phases if tag != "upw" else None)
            except BaseException:
                dlbox_rm(runner, f"up-dlbox-{tag}-rm", name, after_failure=True)
                raise
            dlbox_rm(runner, f"up-dlbox-{tag}-rm", name)
            return seconds
        name = raw_name(tag)
        try:
            return raw_up(runner, f"up-raw-{tag}", name)
        finally:
            raw_rm(name)

    say("4. warm-up (untimed): dlbox up, then docker run")
    warm_a, warm_b = sample("A", "upw"), sample("B", "upw")
    say(f"   {secs(warm_a)}, {secs(warm_b)}")
    for i in range(1, UP_RUNS + 1):
        for which in ("AB" if i % 2 else "BA"):  # interleaved, ABBA...
            say(f"4. {i}/{UP_RUNS}: " + ("dlbox up --image" if which == "A" else "docker run -d + poll /api/status"))
            seconds = sample(which, f"up{i}")
            times[which].append(seconds)
            say(f"   {secs(seconds)}")
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    where = breakdown(phases)
    say(f"4. where dlbox up's time goes: {where}")
    return [Row("4. dlbox up until Jupyter answers", secs(a), secs(b), ratio(a, b), f"ratio <= {UP_TARGET}",
                verdict(a / b <= UP_TARGET), f"median of {UP_RUNS}, interleaved, after 1 warm-up each; "
                f"dlbox {' '.join(f'{t:.2f}' for t in times['A'])}, raw {' '.join(f'{t:.2f}' for t in times['B'])}; "
                f"{where}")]


def jupyter_import_s() -> float | None:
    """`import jupyter_server.serverapp` in a fresh container of the image (median of 3), seconds."""
    code = "import time; t = time.perf_counter(); import jupyter_server.serverapp; print(time.perf_counter() - t)"
    found = []
    for _ in range(3):
        proc = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python", WS_IMAGE,
                               "-c", code], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            found.append(float(proc.stdout.split()[-1]))
    return statistics.median(found) if found else None


def breakdown(phases: list[dict]) -> str:
    """"cli start 0.25 s, gather+plan 0.02 s, volumes 0.02 s, create 0.09 s, start 0.35 s, ready 1.02 s (Jupyter import 0.71 s, first
    answer after it 0.31 s)": medians of the timed runs."""
    if not phases:
        return "no timings (an older dlbox?)"
    med = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
    imported = jupyter_import_s()
    ready = med.get("ready_s", 0.0)
    tail = (f" (Jupyter import {imported:.2f} s alone, first answer after it {max(0.0, ready - imported):.2f} s)"
            if imported is not None else "")
    cli = med["total_s"] - med.get("apply_s", 0.0) - med.get("gather_s", 0.0)
    return (f"cli start {cli:.2f} s, gather+plan {med.get('gather_s', 0.0):.2f} s, volumes {med.get('volumes_s', 0.0):.2f} s, "
            f"create {med.get('create_s', 0.0):.2f} s, start {med.get('start_s', 0.0):.2f} s, ready {ready:.2f} s"
            + tail)
