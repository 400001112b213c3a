#!/usr/bin/env python3
"""Benchmark 9: the team server's list routes under load from a separate process (wrk).

The team server's list routes under load: 100 workspace containers and 1,000 recorded runs;
wrk from a separate process, 16 connections, against GET /api/workspaces and
GET /api/runs?limit=100 with a user's token; the baseline is a bare FastAPI app on the same
uvicorn returning the same body. Targets: >= 500 req/s and p99 < 50 ms for the workspace list.

A dlbox server with its own home holds 100 workspaces (real containers, created and never
started, labelled as dlbox makes them, so the reconcile loop keeps them) and 1,000 finished
runs with 5 metrics each (written to the store directly: they are history, not containers).
wrk (1 thread, 16 connections, 10 s, with a user's API token) loads GET /api/workspaces and
GET /api/runs?limit=100. The baseline is the floor of the same stack: a bare FastAPI app
under the same uvicorn returning the identical workspace-list body, no auth and no database.
Targets (issue 5): workspace list >= 500 req/s and p99 < 50 ms.

    .venv/bin/python benchmarks/b09_server_load.py      (or as benchmark 9 of benchmarks/run.py)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BenchError, Row, Runner, free_port, say
from dlbox import config
from dlbox.server import accounts
from dlbox.engine import api as engine
from dlbox.workspaces import manage as workspaces
from dlbox.containers import policy as containers
from dlbox.containers.policy import ContainerSpec, Limits
from dlbox.store.db import Job, Metric, Store

# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 9
TITLE = "9. team server lists under load"

WORKSPACES = 100
RUNS = 1000
DURATION = int(os.environ.get("BENCH_LOAD_SECONDS", "10"))
CONNECTIONS = 16
RPS_TARGET = 500.0
P99_TARGET = 50.0  # ms
IMAGE = os.environ.get("BENCH_JOB_IMAGE") or os.environ.get("BENCH_WS_IMAGE") or "dlbox/tensorflow-2.9:latest"


def wait_http(url: str, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def wrk(url: str, token: str | None) -> dict:
    """Requests/s and p99 latency (ms) from wrk's --latency report."""
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99": float(p99.group(1)) * scale, "non2xx": int(errors.group(1)) if errors else 0}


def populate(home: Path, label: str) -> str:
    """100 workspace containers, 1,000 runs; returns the user's token."""
    os.environ["DLBOX_HOME"] = str(home)
    store = Store()
    accounts.add_user(store, "bench")
    _, token = accounts.create_token(store, "bench")
    image = engine.image_attrs(IMAGE)
    image_id = image["Id"]
    user = containers.run_as(image["Config"].get("Labels"))  # the engine layer refuses root, as for a real up
    for i in range(WORKSPACES):
        name = f"bench-{label}-{i:03d}"
        labels = {"dlbox.kind": workspaces.KIND, "dlbox.workspace": name, "dlbox.image": IMAGE,
                  "dlbox.host": "127.0.0.1", "dlbox.user": "dl", "dlbox.mounts": "[]", "dlbox.home": config.home_id(),
                  "dlbox.owner": "bench", "dlbox.bench": label, f"dlbox.port.{8888}": str(20000 + i)}
        engine.create_container(ContainerSpec(name=workspaces.container_name(name), image=image_id,
                                              command=["sleep", "1"], user=user, labels=labels,
                                              limits=Limits(memory=2 * 1024**3, cpus=1.0, shm_size=64 * 1024**2)))
    now = time.time()
    with store.session() as s:
        for i in range(RUNS):
            job_id = f"{i:012x}"
            s.add(Job(id=job_id, user="bench", state="succeeded", command=["python", "train.py"],
                      params={"epochs": "10", "lr": "0.001"}, env={}, image_ref=IMAGE, image_id=image_id,
                      lock_hash="ab" * 32, spec_hash="cd" * 32, git_commit="0" * 40, git_dirty=False,
                      mounts=[], volumes={}, cpus=1.0, memory=None, exit_code=0, cancel_requested=False,
                      submitted_at=now - RUNS + i, started_at=now - RUNS + i, ended_at=now - RUNS + i + 0.5))
        s.flush()
        for i in range(RUNS):
            s.add_all(Metric(job_id=f"{i:012x}", step=step, name=name, value=step * 0.1)
                      for step, name in enumerate(("loss", "accuracy", "val_loss", "val_accuracy", "lr")))
    return token


BASELINE_APP = '''
import sys
from fastapi import FastAPI
from fastapi.responses import Response
body = open(sys.argv[1], "rb").read()
app = FastAPI()
@app.get("/api/workspaces")
def workspaces():
    return Response(body, media_type="application/json")
'''


def run(say=lambda m: print(m, file=sys.stderr)) -> list[dict]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    label = os.urandom(3).hex()
    work = Path(tempfile.mkdtemp(prefix="dlbox-load-"))
    home = work / "home"
    env = {**os.environ, "DLBOX_HOME": str(home), "DLBOX_CAPACITY": "cpus=2"}
    procs = []
    before = os.environ.get("DLBOX_HOME")  # populate() works in the benchmark's home; later benchmarks must not
    try:
        say(f"9: creating {WORKSPACES} workspace containers and {RUNS} runs")
        token = populate(home, label)
        port, base_port = free_port(), free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "dlbox", "server", "--port", str(port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb")))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/health")
        import httpx

        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while len(httpx.get(f"{url}/api/workspaces", headers=headers).json()) < WORKSPACES:
            if time.monotonic() > deadline:
                raise RuntimeError("the server's list never reached 100 workspaces")
            time.sleep(0.5)
        body = httpx.get(f"{url}/api/workspaces", headers=headers).content
        (work / "body.json").write_bytes(body)
        (work / "baseline.py").write_text(BASELINE_APP)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.argv = ['baseline', {str(work / 'body.json')!r}]; "
                                   f"sys.path.insert(0, {str(work)!r}); import uvicorn, baseline; "
                                   f"uvicorn.run(baseline.app, port={base_port}, log_level='warning')"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{base_port}/api/workspaces")
        say(f"9: wrk, {DURATION} s each: workspace list, runs list, baseline")
        ws = wrk(f"{url}/api/workspaces", token)
        runs = wrk(f"{url}/api/runs?limit=100", token)
        floor = wrk(f"http://127.0.0.1:{base_port}/api/workspaces", None)
        size = len(body) / 1024
        ok = ws["rps"] >= RPS_TARGET and ws["p99"] < P99_TARGET and ws["non2xx"] == 0
        return [
            {"what": f"9. GET /api/workspaces ({WORKSPACES}, {size:.0f} KB), req/s",
             "dlbox": f"{ws['rps']:.0f}", "baseline": f"{floor['rps']:.0f}", "ratio": f"{ws['rps'] / floor['rps']:.2f}",
             "target": f">= {RPS_TARGET:.0f}", "result": "ok" if ok else "MISSED",
             "note": f"p99 {ws['p99']:.1f} ms (target < {P99_TARGET:.0f}); baseline p99 {floor['p99']:.1f} ms; "
                     f"non-2xx {ws['non2xx']}"},
            {"what": f"9. GET /api/runs?limit=100 (of {RUNS}), req/s", "dlbox": f"{runs['rps']:.0f}",
             "note": f"p99 {runs['p99']:.1f} ms; non-2xx {runs['non2xx']}"},
        ]
    finally:
        if before is None:
            os.environ.pop("DLBOX_HOME", None)
        else:
            os.environ["DLBOX_HOME"] = before
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["docker", "rm", "-f", *subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=dlbox.bench={label}"], capture_output=True, text=True
        ).stdout.split()], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def bench(runner: Runner, work: Path) -> list[Row]:
    """9 as one of run.py's benchmarks: run()'s rows, its failures as BenchError."""
    try:
        return [Row(**row) for row in run(say)]
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise BenchError(str(exc)) from None


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
