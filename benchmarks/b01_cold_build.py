"""Benchmark 1: a cold build, dlbox against a hand-written Dockerfile.

Cold build of the tensorflow-2.9 preset: `dlbox build --no-cache --update-lock` against
the equivalent hand-written Dockerfile built by the legacy builder
(`DOCKER_BUILDKIT=0 docker build --no-cache`), on the same base image. Target: ratio <= 1.1.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from common import (PRESET, QUICK, SHORT, Row, Runner, baseline_context, dlbox_build, docker_build, ratio,
                    say, secs, shared_base, verdict, write_spec)

COLD_TARGET = 1.1     # dlbox / baseline, cold build
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 1
TITLE = f"1. cold build, {PRESET}"


def bench(runner: Runner, work: Path) -> list[Row]:
    spec = write_spec(runner, work / "cold" / "spec", f"bench-tf-{SHORT}")
    base = shared_base(runner, spec)
    context = baseline_context(spec, work / "cold" / "baseline", code=False)
    order = "AB" if QUICK else "ABBA"
    times: dict[str, list[float]] = {"A": [], "B": []}
    for i, which in enumerate(order, 1):
        if which == "A":
            say(f"1. cold build {i}/{len(order)}: dlbox build --no-cache --update-lock")
            seconds, _ = dlbox_build(runner, f"cold-dlbox-{i}", spec, "--no-cache", "--update-lock")
        else:
            say(f"1. cold build {i}/{len(order)}: DOCKER_BUILDKIT=0 docker build --no-cache")
            seconds, _ = docker_build(runner, f"cold-docker-{i}", context, base, f"cold:{SHORT}-{i}", nocache=True)
        say(f"   {secs(seconds)}")
        times[which].append(seconds)
    a, b = statistics.mean(times["A"]), statistics.mean(times["B"])
    runs = f"mean of {len(times['A'])} ({order})"
    return [Row(f"1. cold build, {PRESET}", secs(a), secs(b), ratio(a, b), f"ratio <= {COLD_TARGET}",
                verdict(a / b <= COLD_TARGET), runs)]
