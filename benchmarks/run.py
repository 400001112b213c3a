#!/usr/bin/env python3
"""dlbox benchmarks: dlbox against plain Docker, measured side by side in one run.

    make bench                      # or: .venv/bin/python benchmarks/run.py
    BENCH_QUICK=1 make bench        # one cold build of each kind instead of A B B A

The benchmarks, one module each in this directory (its docstring says what it measures, against
what, and its target); this script runs them in the order of BENCHES below and prints one table:

    b01_cold_build.py    1. cold build of the preset, against a hand-written Dockerfile
    b02_rebuild.py       2. rebuild after only the user's code changed
    b03_cli.py           3. wall time of `dlbox --help` and `dlbox images`
    b04_up.py            4. `dlbox up` until Jupyter answers, against a raw Jupyter container
    b05_memory.py        5. host memory per idle workspace, 20 running at once
    b06_submit.py        6. job submit until its container runs
    b07_queue.py         7. 200 short jobs through the queue
    b08_train.py         8. the digits training in a job, against a plain `docker run`
    b09_server_load.py   9. the team server's list routes under load (wrk); also runs on its own
    b10_dashboard.py    10. the web dashboard's page weight and time to interactive
    b11_snapshot.py     11. what a code snapshot adds to a job's submit (first time, unchanged tree)
    b12_serving.py      12. the inference server: REST and gRPC against in-process signature calls
                        and against `mlflow models serve` of the same SavedModel
    b13_scan.py         13. `dlbox scan` of the preset, cold and warm advisory cache
    b14_pipeline.py     14. a whole pipeline of a small project, against the same steps by hand
    b15_registry.py     15. push and pull through a local registry, against docker push/pull
    common.py            what they share: settings, Runner, rows and the table, the benchmark's
                         own dlbox service, cleanup

6-8, 11 and 14 use a dlbox service of their own: DLBOX_HOME is a directory in the work directory (so the
user's jobs never mix in; DLBOX_CACHE_DIR stays the user's), DLBOX_CAPACITY=cpus=2, and it is
stopped at the end. dlbox commands for 6-8 run in the work directory (no git repository) with --no-code; 11 in projects
of its own there.
Caution: a dlbox service whose reconciler is not scoped to its own home (dlbox before
jobs.owner_label) removes every job container on its engine that its store does not know, so
two such services on one engine remove each other's jobs. With such a dlbox installed, 6-8
refuse to start while job containers of another service exist; other dlbox services running
on this host for the same DOCKER_HOST (found in /proc) are named in a note, and a job of the
benchmark's that ends `lost` is an error with that hint. (To measure beside an unscoped
service, stop it or point DOCKER_HOST at an engine of its own.)

Everything the benchmark creates carries the label dlbox.bench=<run id> and is removed at
the end; the specs get names of their own (bench-tf-<id>, bench-code-<id>) so the user's
dlbox/<preset> tags never move; workspaces are bench-<run id>-..., raw containers
dlbox-bench-<run id>-..., each removed after its sample (workspaces by `dlbox rm --purge-data`).
The bootstrapped base is shared (default DLBOX_HOME) and kept.
The exit status is non-zero only when something failed to run; missed targets are marked. A benchmark
that fails (a BenchError, or any other exception: then its traceback is logged) prints an ERROR row
after the rows it measured, and the benchmarks after it still run.

dlbox's commands run as on a stock Python, with bytecode caches: the benchmark drops
PYTHONDONTWRITEBYTECODE if the shell sets it and points PYTHONPYCACHEPREFIX at
<cache dir>/bench-pycache, which the untimed warm-ups fill. Without caches every start
recompiles the stdlib and dlbox (6 measured 1.77x instead of 1.10x that way).

Environment: BENCH_QUICK=1 (fewer repetitions; 2 samples in 4, 5 containers in 5),
BENCH_ONLY=4,5 (run only these benchmarks), BENCH_PRESET (default tensorflow-2.9),
BENCH_WS_IMAGE (image for 4 and 5, default dlbox/<preset>:latest; it must exist),
BENCH_JOB_IMAGE (image for 6-8, default BENCH_WS_IMAGE; 8 needs scikit-learn in it),
BENCH_KEEP=1 (keep the work directory with the specs, build logs and the job service's home).
BENCH_QUICK also means 3 samples in 6, 40 jobs in 7 and 1 training run of each kind in 8.
BENCH_CHROMIUM: the browser for 10 (default /usr/bin/chromium).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import b01_cold_build
import b02_rebuild
import b03_cli
import b04_up
import b05_memory
import b06_submit
import b07_queue
import b08_train
import b09_server_load
import b10_dashboard
import b11_snapshot
import b12_serving
import b13_scan
import b14_pipeline
import b15_registry
from common import (DLBOX, DOCKER, KEEP, QUICK, RUN_ID, SHORT, STARTED, BenchError, Row, Runner, cleanup,
                    print_table, say, service, user_cache_dir)

# The order they run in: the quick one first, it fails fast if dlbox is broken.
BENCHES = [b03_cli, b10_dashboard, b13_scan, b15_registry, b04_up, b05_memory, b06_submit, b11_snapshot, b07_queue,
           b08_train, b14_pipeline, b12_serving, b09_server_load, b01_cold_build, b02_rebuild]
NUMBERS = sorted(b.NUMBER for b in BENCHES)


def selected() -> set[int] | None:
    """BENCH_ONLY=4,5: the benchmark numbers to run (None: all)."""
    raw = os.environ.get("BENCH_ONLY", "").strip()
    if not raw:
        return None
    try:
        numbers = {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        numbers = set()
    if not numbers or not numbers <= set(NUMBERS):
        raise ValueError(f"BENCH_ONLY={raw!r}: a comma list of benchmark numbers {NUMBERS[0]}-{NUMBERS[-1]}")
    return numbers


def chosen(only: set[int] | None) -> list:
    """The benchmark modules to run, in BENCHES' order (all when `only` is None)."""
    return [bench for bench in BENCHES if only is None or bench.NUMBER in only]


def stock_bytecode() -> str:
    """Time dlbox's commands as a stock Python runs them: with bytecode caches.

    Python writes .pyc caches by default, and pip and Debian's python3 compile at install. A shell
    with PYTHONDONTWRITEBYTECODE=1 (this build machine's) and a Python whose stdlib ships no plain
    .pyc recompiles every module at every start: +0.1-0.3 s on each dlbox command, which timed
    Python start-up, not dlbox. The caches go to one folder of the benchmark's (untimed warm-ups
    fill it), so nothing is written next to the host's Python.
    """
    prefix = Path(user_cache_dir()) / "bench-pycache"
    dropped = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    return (f"Python bytecode caches in {prefix}" + (" (PYTHONDONTWRITEBYTECODE dropped: a stock Python writes them)"
                                                     if dropped else ""))


def failed(bench, exc: Exception) -> list[Row]:
    """The rows of a benchmark that raised: what it measured before (BenchError.rows), then an ERROR row.
    A BenchError's message is the benchmark's own words; anything else is named by its type (a bug)."""
    own = isinstance(exc, BenchError)
    message = str(exc) if own else f"{type(exc).__name__}: {exc}"
    say(f"ERROR in {bench.TITLE}: {message}" if own else
        f"ERROR in {bench.TITLE}:\n{''.join(traceback.format_exception(exc)).rstrip()}")
    first = (message.splitlines() or [""])[0][:100]
    return [*(exc.rows if own else []), Row(bench.TITLE, result="ERROR", note=first)]


def main() -> int:
    try:
        only = selected()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not DLBOX:
        print("error: no dlbox next to this Python or on PATH; run `make venv`", file=sys.stderr)
        return 2
    if subprocess.run([DOCKER, "info"], capture_output=True).returncode != 0:
        print("error: no Docker Engine answers (`docker info` failed); run `make engine`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix=f"dlbox-bench-{SHORT}-"))
    say(stock_bytecode())
    say(f"run {RUN_ID}{' (quick)' if QUICK else ''}"
        f"{'; only ' + ','.join(map(str, sorted(only))) if only else ''}; work directory and logs in {work}")
    rows: dict[int, list[Row]] = {}
    errors = 0
    runner = None
    try:
        runner = Runner(work)
        service.setup(work)
        benches = chosen(only)
        for bench in benches:  # the quick one first: it fails fast if dlbox is broken
            try:
                rows[bench.NUMBER] = bench.bench(runner, work)
            except Exception as exc:  # any failure is this benchmark's ERROR row; the others still run and print
                errors += 1
                rows[bench.NUMBER] = failed(bench, exc)
    finally:
        try:
            cleanup(runner)
        except Exception as exc:  # report, but do not hide the results
            errors += 1
            say(f"ERROR during cleanup: {exc}")
        if KEEP or errors:
            say(f"kept {work} (logs in {work / 'logs'})")
        else:
            shutil.rmtree(work, ignore_errors=True)
            service.remove_home()
    print_table([row for number in sorted(rows) for row in rows[number]])
    print(f"total {time.monotonic() - STARTED:.0f} s; {errors} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
