"""Benchmark 11: what a code snapshot adds to a job's submit.

Job submit until its container runs (as in 6: from launching `dlbox run --image IMG --json
-- sleep 30` until the engine reports dlbox-job-<id> running) in a project of 1,000 files,
20 MB in all (20 KiB of random bytes each, in 10 folders, outside git), against the same
`dlbox run` with `--no-code`. Two cases: the first time (each sample a fresh project the
service has never seen: every file hashed, copied into the store, content cache cold) and
an unchanged tree (the project of a previous sample again: listing and stats only, nothing
stored). Medians of 7 (3 with BENCH_QUICK), interleaved, after one untimed warm-up of each.
Targets: the snapshot adds at most 0.3 s the first time and 0.05 s when unchanged.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

from b06_submit import until_running
from common import (DLBOX, QUICK, BenchError, Row, Runner, check_job_image, check_jobs, say, secs, service, submit,
                    verdict, wait_jobs)

NUMBER = 11
TITLE = "11. submit with a code snapshot (1,000 files, 20 MB)"
FILES = 1000
FILE_BYTES = 20 * 1024
RUNS = 3 if QUICK else 7
FIRST_TARGET = 0.3    # seconds added the first time
UNCHANGED_TARGET = 0.05  # seconds added for an unchanged tree


def make_project(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(FILES):
        folder = root / f"pkg{i % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"m{i}.py").write_bytes(os.urandom(FILE_BYTES))
    (root / "train.py").write_text("print('train')\n")
    return root


def timed(runner: Runner, tag: str, project: Path, *, code: bool) -> float:
    start = time.perf_counter()
    job_id = submit(runner, f"snapshot-{tag}", "--", "sleep", "30", cwd=project, code=code)
    try:
        seconds = until_running(f"dlbox-job-{job_id}", start, job_id=job_id)
    finally:
        subprocess.run([DLBOX, "cancel", job_id], env=service.env(), cwd=service.work, capture_output=True)
    _, records = wait_jobs([job_id], 60)
    check_jobs(records, [job_id], f"11. {tag}", ok=("cancelled", "succeeded"))
    return seconds


def bench(runner: Runner, work: Path) -> list[Row]:
    check_job_image()
    service.preflight()
    base = work / "b11"
    projects = iter(make_project(base / f"p{i}") for i in range(RUNS + 2))
    say(f"11. warm-up (untimed): one project of {FILES} files, {FILES * FILE_BYTES // 1024**2} MB, with and without code")
    known = next(projects)
    timed(runner, "warm-code", known, code=True)
    timed(runner, "warm-none", known, code=False)
    times: dict[str, list[float]] = {"none": [], "first": [], "same": []}
    for i in range(1, RUNS + 1):
        order = ("none", "first", "same") if i % 2 else ("same", "first", "none")
        fresh = next(projects)
        for kind in order:
            project = fresh if kind == "first" else known
            seconds = timed(runner, f"{kind}{i}", project, code=kind != "none")
            times[kind].append(seconds)
            say(f"11. {i}/{RUNS}: {kind}: {secs(seconds)}")
    if not all(times.values()):
        raise BenchError("no samples")
    none, first, same = (statistics.median(times[k]) for k in ("none", "first", "same"))
    added_first, added_same = first - none, same - none
    note = (f"median of {RUNS}; --no-code {' '.join(f'{t:.2f}' for t in times['none'])}, first "
            f"{' '.join(f'{t:.2f}' for t in times['first'])}, unchanged {' '.join(f'{t:.2f}' for t in times['same'])}")
    return [Row("11. snapshot, first time", secs(first), secs(none), f"{added_first:+.3f} s",
                f"adds <= {FIRST_TARGET:g} s", verdict(added_first <= FIRST_TARGET), note),
            Row("11. snapshot, unchanged tree", secs(same), secs(none), f"{added_same:+.3f} s",
                f"adds <= {UNCHANGED_TARGET:g} s", verdict(added_same <= UNCHANGED_TARGET),
                "baseline: the same dlbox run with --no-code; ratio column: seconds added")]
