"""Benchmark 5: host memory per idle workspace, against raw Jupyter containers.

Host memory per idle workspace with 20 running at once (started 4 at a time, then 15 s
idle): the engine's memory usage minus inactive page cache, summed, per container, against
20 raw `docker run` Jupyter containers as in 4. The host's `free -m` used delta is a note.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (QUICK, BenchError, Row, Runner, check_ws_image, dlbox_rm, dlbox_up, ratio, raw_name, raw_rm,
                    raw_up, say, secs, ws_name)

MEM_COUNT = 5 if QUICK else 20   # workspaces running at once
MEM_PARALLEL = 4      # started this many at a time
MEM_IDLE = 15         # seconds idle before reading their memory
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 5
TITLE = "5. memory per idle workspace"


def ws_container(name: str) -> str:
    return f"dlbox-ws-{name}"


def used_mib() -> int:
    """`free -m`, the Mem: line's used column."""
    out = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Mem:"):
            return int(line.split()[2])
    raise BenchError("`free -m` printed no Mem: line")


def container_mib(containers: list[str]) -> list[float]:
    """Memory the engine reports per container, MiB: usage minus inactive page cache, as `docker stats`.

    cgroup v1: usage - total_inactive_file; v2: usage - inactive_file; else usage - cache.
    """
    import docker  # in the venv (dlbox needs it)

    api = docker.from_env().api

    def one(container: str) -> float:
        try:
            stats = api.stats(container, stream=False, one_shot=True)["memory_stats"]
        except docker.errors.APIError as exc:
            raise BenchError(f"engine stats for {container}: {exc}") from None
        if "usage" not in stats:
            raise BenchError(f"the engine reports no memory usage for {container} (stopped?)")
        detail = stats.get("stats") or {}
        for key in ("total_inactive_file", "inactive_file", "cache"):
            if key in detail and detail[key] < stats["usage"]:
                return (stats["usage"] - detail[key]) / 1024**2
        return stats["usage"] / 1024**2

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, containers))


def bench(runner: Runner, work: Path) -> list[Row]:
    check_ws_image()
    per: dict[str, float] = {}
    free_delta: dict[str, int] = {}
    for which in ("dlbox", "raw"):
        tags = [f"m{i}" for i in range(1, MEM_COUNT + 1)]
        names = [ws_name(t) if which == "dlbox" else raw_name(t) for t in tags]
        containers = [ws_container(n) for n in names] if which == "dlbox" else names
        before = used_mib()
        say(f"5. {which}: starting {MEM_COUNT} containers, {MEM_PARALLEL} at a time (free -m used {before} MiB)")
        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(MEM_PARALLEL) as pool:
                if which == "dlbox":
                    futures = [pool.submit(dlbox_up, runner, f"mem-dlbox-{t}", n) for t, n in zip(tags, names)]
                else:
                    futures = [pool.submit(raw_up, runner, f"mem-raw-{t}", n) for t, n in zip(tags, names)]
                for future in futures:
                    future.result()
            say(f"   all {MEM_COUNT} answer after {secs(time.perf_counter() - started)}; idle {MEM_IDLE} s")
            time.sleep(MEM_IDLE)
            mib = container_mib(containers)
            after = used_mib()
            per[which] = sum(mib) / len(mib)
            free_delta[which] = after - before
            say(f"   {sum(mib):.0f} MiB in all, {per[which]:.1f} MiB each (min {min(mib):.1f}, max {max(mib):.1f}); "
                f"free -m used {after} MiB ({after - before:+d})")
        finally:
            say(f"5. {which}: removing the {MEM_COUNT} containers")
            with ThreadPoolExecutor(MEM_PARALLEL) as pool:
                if which == "dlbox":
                    removals = [pool.submit(dlbox_rm, runner, f"mem-dlbox-{t}-rm", n, after_failure=True)
                                for t, n in zip(tags, names)]
                else:
                    removals = [pool.submit(raw_rm, n) for n in names]
            for future in removals:
                if future.exception() is not None:  # cleanup() tries again by label
                    say(f"   could not remove: {str(future.exception()).splitlines()[0]}")
    a, b = per["dlbox"], per["raw"]
    note = (f"{MEM_COUNT} at once, {MEM_IDLE} s idle; usage - inactive_file; free -m used "
            f"+{free_delta['dlbox'] / MEM_COUNT:.0f}/+{free_delta['raw'] / MEM_COUNT:.0f} MiB per container "
            f"(dlbox/raw; {free_delta['dlbox']:+d}/{free_delta['raw']:+d} in all)")
    return [Row(f"5. memory per idle workspace ({MEM_COUNT} running)", f"{a:.1f} MiB", f"{b:.1f} MiB",
                ratio(a, b), "-", "info", note)]
