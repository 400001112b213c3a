"""Benchmark 4: `dlbox up` until Jupyter answers, against a raw Jupyter container.

Time from `dlbox up NAME --image dlbox/<preset>:latest` (Jupyter on, image present) until
it returns, which it does once Jupyter answers, against a raw `docker run -d -p ...` of
the image's Jupyter server polled the same way (GET /api/status with the token every
0.25 s from the moment `docker run` is launched). Median of 5 each, interleaved, after one
untimed warm-up of each. Target: ratio <= 1.15.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from common import (QUICK, Row, Runner, check_ws_image, dlbox_rm, dlbox_up, ratio, raw_name, raw_rm, raw_up,
                    say, secs, verdict, ws_name)

UP_TARGET = 1.15      # dlbox / baseline, `dlbox up` until Jupyter answers
UP_RUNS = 2 if QUICK else 5
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 4
TITLE = "4. dlbox up until Jupyter answers"


def bench(runner: Runner, work: Path) -> list[Row]:
    check_ws_image()
    times: dict[str, list[float]] = {"A": [], "B": []}

    def sample(which: str, tag: str) -> float:
        if which == "A":
            name = ws_name(tag)
            try:
                seconds = dlbox_up(runner, f"up-dlbox-{tag}", name)
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
    return [Row("4. dlbox up until Jupyter answers", secs(a), secs(b), ratio(a, b), f"ratio <= {UP_TARGET}",
                verdict(a / b <= UP_TARGET), f"median of {UP_RUNS}, interleaved, after 1 warm-up each; "
                f"dlbox {' '.join(f'{t:.2f}' for t in times['A'])}, raw {' '.join(f'{t:.2f}' for t in times['B'])}")]
