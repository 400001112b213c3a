"""Benchmark 3: the wall time of dlbox's commands.

Wall time of `dlbox --help` and `dlbox images` (median of 10) against `python -c pass`
and `docker images`. Target: < 0.5 s each.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from common import DLBOX, DOCKER, PYTHON, BenchError, Row, Runner, ratio, say, secs, verdict

CLI_TARGET = 0.5      # seconds, dlbox --help and dlbox images
CLI_RUNS = 10
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 3
TITLE = "3. CLI wall time"


def bench(runner: Runner, work: Path) -> list[Row]:
    commands = {
        "dlbox --help": [DLBOX, "--help"],
        "python -c pass": [PYTHON, "-c", "pass"],
        "dlbox images": [DLBOX, "images"],
        "docker images": [DOCKER, "images"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for name, cmd in commands.items():  # warm the page cache once, untimed
        runner.run("cli-warm-" + name.replace(" ", "_"), cmd)
    say(f"3. CLI wall time, {CLI_RUNS} runs of each, interleaved")
    for _ in range(CLI_RUNS):
        for name, cmd in commands.items():
            start = time.perf_counter()
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
            times[name].append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise BenchError(f"{name} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    med = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for ours, theirs in (("dlbox --help", "python -c pass"), ("dlbox images", "docker images")):
        rows.append(Row(f"3. {ours} (vs {theirs})", secs(med[ours]), secs(med[theirs]), ratio(med[ours], med[theirs]),
                        f"dlbox < {CLI_TARGET} s", verdict(med[ours] < CLI_TARGET), f"median of {CLI_RUNS}"))
    return rows
