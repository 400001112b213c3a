"""Benchmark 2: the rebuild after only the user's code changed.

Rebuild after only the user's code changed (`code: {src: src}` against `COPY src/ ...` at
the end of the hand-written Dockerfile). Target: dlbox <= 5 s.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from common import (QUICK, RUN_ID, SHORT, Row, Runner, baseline_context, dlbox_build, docker_build, ratio,
                    say, secs, shared_base, verdict, write_spec)

CODE_TARGET = 5.0     # seconds, rebuild after a code change
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 2
TITLE = "2. rebuild after a code change"


def rebuilt_steps(output: str) -> str:
    """'rebuilt/total' steps of a legacy-builder build, not counting FROM and ARG."""
    blocks = re.split(r"^\s*Step \d+/\d+ : ", output, flags=re.MULTILINE)[1:]
    steps = [b for b in blocks if b.split(None, 1)[0].upper() not in ("FROM", "ARG")]
    rebuilt = [b for b in steps if "---> Using cache" not in b]
    return f"{len(rebuilt)}/{len(steps)}"


def bench(runner: Runner, work: Path) -> list[Row]:
    spec = write_spec(runner, work / "code" / "spec", f"bench-code-{SHORT}", "code:\n  src: src\n")
    src = spec.parent / "src"
    src.mkdir()
    base = shared_base(runner, spec)
    context = baseline_context(spec, work / "code" / "baseline", code=True)

    def change(directory: Path, n: int) -> None:
        (directory / "train.py").write_text(f'"""Training script."""\nBUILD = "{RUN_ID}-{n}"\nprint(BUILD)\n')

    for directory in (src, context / "src"):
        change(directory, 0)
        (directory / "README.md").write_text("example project\n")

    say("2. warm-up: dlbox build (first build, resolves and writes the lock)")
    first, _ = dlbox_build(runner, "code-dlbox-warm1", spec)
    say(f"   {secs(first)}; again with nothing changed (now from the lock)")
    again, out_again = dlbox_build(runner, "code-dlbox-warm2", spec)
    say(f"   {secs(again)}; baseline warm-up: docker build")
    base_first, _ = docker_build(runner, "code-docker-warm1", context, base, f"code:{SHORT}-w", nocache=False)
    say(f"   {secs(base_first)}; again with nothing changed")
    base_again, base_out_again = docker_build(runner, "code-docker-warm2", context, base, f"code:{SHORT}-w",
                                              nocache=False)
    say(f"   {secs(base_again)}")

    repeats = 1 if QUICK else 3
    a_times, b_times, a_steps, b_steps = [], [], "", ""
    for n in range(1, repeats + 1):
        change(src, n)
        say(f"2. code change {n}/{repeats}: dlbox build")
        seconds, out = dlbox_build(runner, f"code-dlbox-{n}", spec)
        a_times.append(seconds)
        a_steps = rebuilt_steps(out)
        change(context / "src", n)
        say(f"   {secs(seconds)}; docker build")
        seconds, out = docker_build(runner, f"code-docker-{n}", context, base, f"code:{SHORT}-{n}", nocache=False)
        b_times.append(seconds)
        b_steps = rebuilt_steps(out)
        say(f"   {secs(seconds)}")
    a, b = statistics.median(a_times), statistics.median(b_times)
    how = "median of 3" if repeats > 1 else "1 run"
    return [
        Row("2. rebuild after a code change", secs(a), secs(b), ratio(a, b), f"dlbox <= {CODE_TARGET:.0f} s",
            verdict(a <= CODE_TARGET), f"{how}; steps rebuilt dlbox {a_steps}, docker {b_steps}"),
        Row("   (info) 2nd build, nothing changed", secs(again), secs(base_again), ratio(again, base_again),
            "-", "info", f"steps rebuilt dlbox {rebuilt_steps(out_again)}, docker {rebuilt_steps(base_out_again)}"),
    ]
