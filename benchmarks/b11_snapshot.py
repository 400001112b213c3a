"""Benchmark 11: what a code snapshot adds to a job's submit.

Job submit until its container runs (as in 6: from launching `dlbox run --image IMG --json
-- sleep 30` until the engine reports dlbox-job-<id> running) in a project of 1,000 files,
20 MB in all (20 KiB of random bytes each, in 10 folders, outside git), against the same
`dlbox run` with `--no-code`. Two cases: the first time (each sample a fresh project the
service has never seen: every file hashed, copied into the store, content cache cold) and
an unchanged tree (the project of a previous sample again: listing and stats only, nothing
stored). Medians of 7 (3 with BENCH_QUICK), interleaved, after one untimed warm-up of each.
Targets: the snapshot adds at most 0.3 s the first time and 0.05 s when unchanged.
The same three again against a `dlbox server` over loopback (its own dlbox home, a user with
a token; the CLI uploads the tar only when the server lacks the hash), with the same targets.
Each server sample is cancelled and waited for before the next, as the local ones are: without the
wait, the previous sample's stop and collection overlapped the next submit (0.5-1.0 s samples).
Measured 2026-12-04 on the quiet 2-core machine, two runs: local first +0.419 s (MISS) and +0.238 s,
unchanged +0.004 and +0.027 s; server first +0.263 s, unchanged +0.024 s (after the wait). The local
first time is the store's 1,000 file creations on ext4 (0.09-0.38 s in-process, varying with the
disk's writeback of earlier samples); hashing 20 MB is ~0.05 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from b06_submit import until_running
from common import (DLBOX, JOB_ID, JOB_IMAGE, QUICK, BenchError, Row, Runner, check_job_image, check_jobs,
                    free_port, say, secs, service, submit, verdict, wait_jobs)

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


def sampled(runner: Runner, where: str, projects, timed_one) -> dict[str, list[float]]:
    """Warm-up, then RUNS rounds of --no-code / first time / unchanged, interleaved."""
    known = next(projects)
    timed_one(f"{where}-warm-code", known, True)
    timed_one(f"{where}-warm-none", known, False)
    times: dict[str, list[float]] = {"none": [], "first": [], "same": []}
    for i in range(1, RUNS + 1):
        order = ("none", "first", "same") if i % 2 else ("same", "first", "none")
        fresh = next(projects)
        for kind in order:
            seconds = timed_one(f"{where}-{kind}{i}", fresh if kind == "first" else known, kind != "none")
            times[kind].append(seconds)
            say(f"11. {where} {i}/{RUNS}: {kind}: {secs(seconds)}")
    return times


def rows(where: str, times: dict[str, list[float]]) -> list[Row]:
    none, first, same = (statistics.median(times[k]) for k in ("none", "first", "same"))
    added_first, added_same = first - none, same - none
    note = (f"median of {RUNS}; --no-code {' '.join(f'{t:.2f}' for t in times['none'])}, first "
            f"{' '.join(f'{t:.2f}' for t in times['first'])}, unchanged {' '.join(f'{t:.2f}' for t in times['same'])}")
    return [Row(f"11. snapshot, first time{where}", secs(first), secs(none), f"{added_first:+.3f} s",
                f"adds <= {FIRST_TARGET:g} s", verdict(added_first <= FIRST_TARGET), note),
            Row(f"11. snapshot, unchanged tree{where}", secs(same), secs(none), f"{added_same:+.3f} s",
                f"adds <= {UNCHANGED_TARGET:g} s", verdict(added_same <= UNCHANGED_TARGET),
                "baseline: the same dlbox run with --no-code; ratio column: seconds added")]


def on_server(runner: Runner, work: Path, projects) -> list[Row]:
    """The same against `dlbox server` on loopback, in a dlbox home of its own."""
    home, cli_home = work / "b11-server-home", work / "b11-cli-home"
    env = {**service.env(), "DLBOX_HOME": str(home)}
    port = free_port()
    log = (work / "logs" / "b11-server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "dlbox", "server", "--port", str(port)], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"dlbox server did not answer (log: {work / 'logs' / 'b11-server.log'})") from None
                time.sleep(0.2)
        _, out = runner.run("snapshot-server-user", [DLBOX, "users", "add", "bench", "--json"], env=env)
        user_env = {**service.env(), "DLBOX_URL": url, "DLBOX_TOKEN": json.loads(out)["token"],
                    "DLBOX_HOME": str(cli_home)}  # a remote CLI: its home holds only its content-hash cache

        def timed_one(tag: str, project: Path, code: bool) -> float:
            start = time.perf_counter()
            _, out = runner.run(f"snapshot-{tag}", [DLBOX, "run", "--image", JOB_IMAGE, "--json",
                                                   *([] if code else ["--no-code"]), "--", "sleep", "30"],
                                env=user_env, cwd=project)
            match = JOB_ID.search(out)
            if not match:
                raise BenchError(f"{tag}: `dlbox run --json` printed no job id: {out.strip()[-300:]}")
            try:
                return until_running(f"dlbox-job-{match.group(1)}", start)
            finally:  # untimed, and ended before the next sample, as the local samples are (wait_jobs)
                subprocess.run([DLBOX, "cancel", match.group(1)], env=user_env, capture_output=True)
                subprocess.run([DLBOX, "wait", match.group(1), "--timeout", "60"], env=user_env, capture_output=True)

        return rows(" (server)", sampled(runner, "server", projects, timed_one))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench(runner: Runner, work: Path) -> list[Row]:
    check_job_image()
    service.preflight()
    base = work / "b11"
    projects = iter(make_project(base / f"p{i}") for i in range(2 * RUNS + 4))
    say(f"11. one project of {FILES} files, {FILES * FILE_BYTES // 1024**2} MB per sample; warm-ups untimed")
    local = rows("", sampled(runner, "local", projects, lambda tag, project, code: timed(runner, tag, project,
                                                                                         code=code)))
    return local + on_server(runner, work, projects)
