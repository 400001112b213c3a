"""Benchmark 7: short jobs through the queue.

200 short jobs through the queue: `dlbox run --cpus 0.5 -- true`, submitted back to back
by 4 threads into a service with capacity cpus=2, then waited for (the service's API polled
every 0.1 s); jobs/second from the first submit to the end of the last, against the same
number of raw `docker run --rm IMG true`, 4 at a time; dlbox's overhead per job is
(dlbox wall time - raw wall time) / N.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (DOCKER, JOB_IMAGE, LABEL, QUICK, BenchError, Row, Runner, check_job_image, check_jobs,
                    live_guard, live_raw, raw_name, say, secs, service, submit, wait_jobs)

QUEUE_JOBS = 40 if QUICK else 200
QUEUE_PARALLEL = 4    # submitting threads; raw containers run this many at a time
QUEUE_CPUS = 0.5      # --cpus of each job: 4 fit in the bench service's capacity
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 7
TITLE = f"7. {QUEUE_JOBS} short jobs through the queue"


def raw_true(tag: str) -> list[str]:
    return [DOCKER, "run", "--rm", "--name", raw_name(tag), "--label", LABEL, JOB_IMAGE, "true"]


def bench(runner: Runner, work: Path) -> list[Row]:
    check_job_image()
    service.preflight()
    n = QUEUE_JOBS
    cpus = f"{QUEUE_CPUS:g}"
    say("7. warm-up (untimed): one `true` job (starts the benchmark's dlbox service if needed), one docker run --rm")
    job = submit(runner, "queue-dlbox-warm", "--cpus", cpus, "--", "true")
    _, records = wait_jobs([job], 120)
    check_jobs(records, [job], "7. warm-up")
    with live_guard:
        live_raw.add(raw_name("qw"))
    runner.run("queue-raw-warm", raw_true("qw"))

    say(f"7. dlbox: {n} `true` jobs with --cpus {cpus}, submitted by {QUEUE_PARALLEL} threads, then waited for")
    start = time.perf_counter()
    with ThreadPoolExecutor(QUEUE_PARALLEL) as pool:
        futures = [pool.submit(submit, runner, f"queue-dlbox-{i}", "--cpus", cpus, "--", "true")
                   for i in range(1, n + 1)]
    submitted = time.perf_counter() - start
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        raise BenchError(f"{len(failed)} of {n} submissions failed; first: {failed[0]}")
    ids = [f.result() for f in futures]
    end, records = wait_jobs(ids, timeout=max(300.0, n * 5.0))
    wall = end - start
    check_jobs(records, ids, "7. dlbox")
    say(f"   {secs(wall)} ({n / wall:.2f} jobs/s; all submitted after {secs(submitted)})")

    say(f"7. raw: {n} docker run --rm ... true, {QUEUE_PARALLEL} at a time")
    names = [raw_name(f"q{i}") for i in range(1, n + 1)]
    with live_guard:
        live_raw.update(names)
    start = time.perf_counter()
    with ThreadPoolExecutor(QUEUE_PARALLEL) as pool:
        futures = [pool.submit(runner.run, f"queue-raw-{i}", raw_true(f"q{i}")) for i in range(1, n + 1)]
    raw_wall = time.perf_counter() - start
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        raise BenchError(f"{len(failed)} of {n} raw containers failed; first: {failed[0]}")
    with live_guard:
        live_raw.difference_update(names)
    say(f"   {secs(raw_wall)} ({n / raw_wall:.2f} jobs/s)")
    overhead = (wall - raw_wall) / n
    return [Row(f"7. {n} short jobs through the queue", f"{n / wall:.2f} jobs/s", f"{n / raw_wall:.2f} jobs/s",
                f"{raw_wall / wall:.2f}x", "-", "info",
                f"ratio: throughput dlbox/raw; dlbox overhead {overhead:.3f} s/job; wall dlbox {secs(wall)} "
                f"(all submitted after {secs(submitted)}, {QUEUE_PARALLEL} threads, --cpus {cpus} in cpus=2), "
                f"raw {secs(raw_wall)} ({QUEUE_PARALLEL} at a time)")]
