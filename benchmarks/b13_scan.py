"""Benchmark 13: `dlbox scan` of the TF preset with a cold and a warm advisory cache.

`dlbox scan IMAGE --advisories SOURCE --json` of BENCH_WS_IMAGE (default dlbox/<preset>:latest;
128 Python packages, 155 Debian packages for tensorflow-2.9), wall time. Cold: a new, empty
DLBOX_CACHE_DIR, so the OSV records are read and indexed, and the bullseye-security Packages index
and one .deb per fixing source (for its changelog's CVE ids) are downloaded from the mirror; warm: the same cache again (median). SOURCE is BENCH_ADVISORIES,
else the snapshot in tests/data/advisories/osv. The scan results go to a DLBOX_HOME of the
benchmark's own. No Docker baseline: `docker image inspect` of the image is shown for scale.
Target: warm <= 5 s. Measured 2026-12-02 on a shared 2-core machine (load ~6): cold 4.6 s, warm 1.4 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

from common import DLBOX, DOCKER, QUICK, WS_IMAGE, BenchError, Row, Runner, ratio, say, secs, verdict

WARM_TARGET = 5.0
RUNS = 2 if QUICK else 5
SNAPSHOT = Path(__file__).resolve().parent.parent / "tests" / "data" / "advisories" / "osv"
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 13
TITLE = "13. scan of the TF preset"


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: findings at or above --fail-on (none is given here)
        raise BenchError(f"{' '.join(cmd[1:3])} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return seconds


def bench(runner: Runner, work: Path) -> list[Row]:
    source = os.environ.get("BENCH_ADVISORIES") or str(SNAPSHOT)
    home = work / "scan-home"
    cmd = [DLBOX, "scan", WS_IMAGE, "--advisories", source, "--json"]
    if subprocess.run([DOCKER, "image", "inspect", WS_IMAGE], capture_output=True).returncode != 0:
        raise BenchError(f"no image {WS_IMAGE}; build it (dlbox build --preset ...) or set BENCH_WS_IMAGE")
    say(f"13. scan of {WS_IMAGE}: {RUNS} cold (new cache each), {RUNS} warm, advisories {source}")
    cold, warm = [], []
    for n in range(RUNS):
        env = {**os.environ, "DLBOX_HOME": str(home), "DLBOX_CACHE_DIR": str(work / f"scan-cache-{n}")}
        cold.append(timed(cmd, env))
        warm.append(timed(cmd, env))
    inspect = statistics.median(timed([DOCKER, "image", "inspect", WS_IMAGE], dict(os.environ)) for _ in range(RUNS))
    c, w = statistics.median(cold), statistics.median(warm)
    return [
        Row(f"{TITLE}, cold cache (vs docker image inspect)", secs(c), secs(inspect), ratio(c, inspect), "-", "-",
            f"median of {RUNS}; OSV index built, Debian index and changelogs fetched"),
        Row(f"{TITLE}, warm cache (vs docker image inspect)", secs(w), secs(inspect), ratio(w, inspect),
            f"warm <= {WARM_TARGET:.0f} s", verdict(w <= WARM_TARGET), f"median of {RUNS}"),
    ]
