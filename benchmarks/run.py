#!/usr/bin/env python3
"""dlbox benchmarks: dlbox against plain Docker, measured side by side in one run.

    make bench                      # or: .venv/bin/python benchmarks/run.py
    BENCH_QUICK=1 make bench        # one cold build of each kind instead of A B B A

1. Cold build of the tensorflow-2.9 preset: `dlbox build --no-cache --update-lock` against
   the equivalent hand-written Dockerfile built by the legacy builder
   (`DOCKER_BUILDKIT=0 docker build --no-cache`), on the same base image. Target: ratio <= 1.1.
2. Rebuild after only the user's code changed (`code: {src: src}` against `COPY src/ ...` at
   the end of the hand-written Dockerfile). Target: dlbox <= 5 s.
3. Wall time of `dlbox --help` and `dlbox images` (median of 10) against `python -c pass`
   and `docker images`. Target: < 0.5 s each.
4. Time from `dlbox up NAME --image dlbox/<preset>:latest` (Jupyter on, image present) until
   it returns, which it does once Jupyter answers, against a raw `docker run -d -p ...` of
   the image's Jupyter server polled the same way (GET /api/status with the token every
   0.25 s from the moment `docker run` is launched). Median of 5 each, interleaved, after one
   untimed warm-up of each. Target: ratio <= 1.15.
5. Host memory per idle workspace with 20 running at once (started 4 at a time, then 15 s
   idle): the engine's memory usage minus inactive page cache, summed, per container, against
   20 raw `docker run` Jupyter containers as in 4. The host's `free -m` used delta is a note.
6. Job submit until its container runs (image present): from launching
   `dlbox run --image IMG --json -- sleep 30` until the engine reports dlbox-job-<id> running
   (the id from the command's output as soon as it exits, then the Engine API polled every
   50 ms), against a raw `docker run -d IMG sleep 30` from launch until the engine reports it
   running, polled the same way (by name, from launch). Median of 7, interleaved, after one
   untimed warm-up of each (the warm-up also starts the benchmark's dlbox service). Each
   sample is cancelled or removed afterwards, untimed. Targets: dlbox < 1 s and ratio <= 1.2.
   A second row times the same submit as a POST /api/jobs on the service's socket (the work of
   the service and the engine without the CLI process), interleaved with the other two.
7. 200 short jobs through the queue: `dlbox run --cpus 0.5 -- true`, submitted back to back
   by 4 threads into a service with capacity cpus=2, then waited for (the service's API polled
   every 0.1 s); jobs/second from the first submit to the end of the last, against the same
   number of raw `docker run --rm IMG true`, 4 at a time; dlbox's overhead per job is
   (dlbox wall time - raw wall time) / N.
8. The digits training (examples/digits/train.py, 20 epochs, mounted read-only at /code) in a
   dlbox job against a plain `docker run` of the same image, both --cpus 2 and no memory limit:
   each training run is timed from its container's start to its exit as the engine saw it
   (start and die events; for raw also State.StartedAt/FinishedAt, shown as a check), and the
   throughput ratio is raw time / dlbox time. 5 of each, interleaved (ABBAABBAAB), median.
   Target: ratio >= 0.97.
9. The team server's list routes under load (benchmarks/server_load.py): 100 workspace
   containers and 1,000 recorded runs; wrk from a separate process, 16 connections, against
   GET /api/workspaces and GET /api/runs?limit=100 with a user's token; the baseline is a bare
   FastAPI app on the same uvicorn returning the same body. Targets: >= 500 req/s and
   p99 < 50 ms for the workspace list.
10. The web dashboard of `dlbox server` (a server of its own, in a home in the work directory,
   one user): the workspaces page's weight (HTML + CSS + JS bytes as served, uncompressed,
   from the responses of one load in headless Chromium) and its time to interactive: from
   navigation start to DOMContentLoaded (the page's script is deferred, so it has run by then)
   and to the load event, read from the Navigation Timing entry. Median of 5 loads, each in a
   fresh browser context (a first visit), after one untimed warm-up. Needs Playwright (the
   test extra) and Debian's chromium (/usr/bin/chromium; scripts/host-setup.sh packages).
   No baseline: informational, with a target of 100 KB and 1 s.

6-8 use a dlbox service of their own: DLBOX_HOME is a directory in the work directory (so the
user's jobs never mix in; DLBOX_CACHE_DIR stays the user's), DLBOX_CAPACITY=cpus=2, and it is
stopped at the end. dlbox commands for 6-8 run in the work directory (no git repository).
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
The exit status is non-zero only when something failed to run; missed targets are marked.

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
BENCH_CHROMIUM: the browser for 9 (default /usr/bin/chromium).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

QUICK = os.environ.get("BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")
KEEP = os.environ.get("BENCH_KEEP", "").strip().lower() not in ("", "0", "false", "no")
PRESET = os.environ.get("BENCH_PRESET", "tensorflow-2.9")
WS_IMAGE = os.environ.get("BENCH_WS_IMAGE", f"dlbox/{PRESET}:latest")
RUN_ID = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
LABEL = f"dlbox.bench={RUN_ID}"
SHORT = RUN_ID.rsplit("-", 1)[1]  # in spec names and tags

PYTHON = sys.executable
DLBOX = str(Path(PYTHON).parent / "dlbox") if (Path(PYTHON).parent / "dlbox").exists() else shutil.which("dlbox")
DOCKER = shutil.which("docker") or "docker"

COLD_TARGET = 1.1     # dlbox / baseline, cold build
CODE_TARGET = 5.0     # seconds, rebuild after a code change
CLI_TARGET = 0.5      # seconds, dlbox --help and dlbox images
CLI_RUNS = 10
UP_TARGET = 1.15      # dlbox / baseline, `dlbox up` until Jupyter answers
UP_RUNS = 2 if QUICK else 5
MEM_COUNT = 5 if QUICK else 20   # workspaces running at once
MEM_PARALLEL = 4      # started this many at a time
MEM_IDLE = 15         # seconds idle before reading their memory
POLL = 0.25           # seconds between GET /api/status, as dlbox up polls
READY_TIMEOUT = 180.0
JUPYTER_PORT = 8888
JOB_IMAGE = os.environ.get("BENCH_JOB_IMAGE", WS_IMAGE)
SUBMIT_TARGET = 1.0   # seconds, dlbox run until its container runs
SUBMIT_RATIO = 1.2    # dlbox / baseline, the same
SUBMIT_RUNS = 3 if QUICK else 7
JOB_POLL = 0.05       # seconds between container inspections in 6
QUEUE_JOBS = 40 if QUICK else 200
QUEUE_PARALLEL = 4    # submitting threads; raw containers run this many at a time
QUEUE_CPUS = 0.5      # --cpus of each job: 4 fit in the bench service's capacity
BENCH_CAPACITY = "cpus=2"
TRAIN_TARGET = 0.97   # raw / dlbox training time (dlbox's throughput relative to raw)
TRAIN_ORDER = "AB" if QUICK else "ABBAABBAAB"  # 5 each: one run is ~7 s, and noise of ±0.5 s decides 0.97
TRAIN_EPOCHS = 20
TRAIN_CPUS = 2
TRAIN_TIMEOUT = 1200.0
DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
CHROMIUM = os.environ.get("BENCH_CHROMIUM", "/usr/bin/chromium")
DASH_RUNS = 5
DASH_WEIGHT_TARGET = 100.0  # KB, HTML + CSS + JS of the workspaces page
DASH_TTI_TARGET = 1.0       # seconds, navigation start to DOMContentLoaded
FINAL_STATES = ("succeeded", "failed", "cancelled", "oom-killed", "lost")

STARTED = time.monotonic()
STARTED_UTC = datetime.now(timezone.utc)


class BenchError(Exception):
    pass


def say(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:6.0f}s] {message}", file=sys.stderr, flush=True)


# --- running commands -----------------------------------------------------------------------


class Runner:
    """Runs commands, times them, keeps their output in log files, remembers created layers."""

    def __init__(self, work: Path):
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.count = 0
        self.lock = threading.Lock()  # 4 and 5 run commands from threads
        self.created_layers: list[str] = []  # image IDs our builds made (not cache hits, not FROM)

    def run(self, name: str, cmd: list[str], *, env: dict | None = None, cwd: Path | None = None,
            build: bool = False) -> tuple[float, str]:
        with self.lock:
            self.count += 1
            log = self.logs / f"{self.count:02d}-{name}.log"
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        seconds = time.perf_counter() - start
        log.write_text(f"$ {' '.join(cmd)}\n# {seconds:.3f} s, exit {proc.returncode}\n{proc.stdout}")
        if build:
            self.created_layers += created_layers(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join("    " + line for line in proc.stdout.strip().splitlines()[-25:])
            raise BenchError(f"{name} failed (exit {proc.returncode}, log {log}):\n{tail}")
        return seconds, proc.stdout

    def note(self, name: str, text: str) -> Path:
        """A log file for something not run through run() (a timed Popen, a job's output)."""
        with self.lock:
            self.count += 1
            log = self.logs / f"{self.count:02d}-{name}.log"
        log.write_text(text)
        return log


def created_layers(output: str) -> list[str]:
    """IDs of the images a legacy-builder build committed itself (for cleanup after a failure).

    Skips the FROM step (the base) and cache hits (someone else's layers).
    """
    ids = []
    blocks = re.split(r"^\s*Step \d+/\d+ : ", output, flags=re.MULTILINE)
    for block in blocks[1:]:
        instruction = block.split(None, 1)[0].upper() if block.strip() else ""
        if instruction in ("FROM", "ARG") or "---> Using cache" in block:
            continue
        found = re.findall(r"^\s*---> ([0-9a-f]{12})\s*$", block, flags=re.MULTILINE)
        if found:
            ids.append(found[-1])
    return ids


def rebuilt_steps(output: str) -> str:
    """'rebuilt/total' steps of a legacy-builder build, not counting FROM and ARG."""
    blocks = re.split(r"^\s*Step \d+/\d+ : ", output, flags=re.MULTILINE)[1:]
    steps = [b for b in blocks if b.split(None, 1)[0].upper() not in ("FROM", "ARG")]
    rebuilt = [b for b in steps if "---> Using cache" not in b]
    return f"{len(rebuilt)}/{len(steps)}"


def dlbox_env() -> dict:
    env = dict(os.environ)
    existing = env.get("DLBOX_LABELS", "").strip().strip(",")
    env["DLBOX_LABELS"] = f"{existing},{LABEL}" if existing else LABEL
    return env


def docker_env() -> dict:
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


# --- specs and the hand-written Dockerfile ----------------------------------------------------


def write_spec(runner: Runner, directory: Path, name: str, extra: str = "") -> Path:
    directory.mkdir(parents=True)
    spec = directory / "dlbox.yaml"
    runner.run(f"init-{name}", [DLBOX, "init", "--preset", PRESET, "-o", str(spec)])
    text, n = re.subn(r"(?m)^name:.*$", f"name: {name}", spec.read_text(), count=1)
    if n != 1:
        raise BenchError(f"preset {PRESET}: no top-level 'name:' line to rename")
    spec.write_text(text + extra)
    return spec


def ca_bundle() -> Path | None:
    """The CA bundle dlbox trusts by default (config.default_ca_bundle), for the baseline too."""
    explicit = os.environ.get("DLBOX_CA_BUNDLE")
    if explicit == "none":
        return None
    for candidate in (explicit, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def baseline_context(spec_file: Path, directory: Path, *, code: bool) -> Path:
    """A context with the Dockerfile one would write by hand for the same environment."""
    import yaml  # in the venv (dlbox needs it)

    spec = yaml.safe_load(spec_file.read_text())
    if "debian" not in (spec.get("base") or {}):
        raise BenchError("the baseline Dockerfile supports only specs with a bootstrapped 'debian' base")
    user = {"name": "dl", "uid": 1000, **(spec.get("user") or {})}
    services = spec.get("services") or []
    apt = list(spec.get("apt") or [])
    if "ssh" in services and "openssh-server" not in apt:
        apt.append("openssh-server")
    directory.mkdir(parents=True)
    (directory / "requirements.txt").write_text("".join(f"{r}\n" for r in spec.get("pip") or []))
    (directory / "constraints.txt").write_text("".join(f"{c}\n" for c in spec.get("constraints") or []))
    ca = ca_bundle()
    name, uid = user["name"], user["uid"]
    lines = [
        "ARG BASE",
        "FROM ${BASE}",
        'SHELL ["/bin/bash", "-o", "pipefail", "-c"]',
        "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8 \\",
        "    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1",
    ]
    if ca is not None:
        shutil.copyfile(ca, directory / "ca-certificates.crt")
        lines += ["COPY ca-certificates.crt /usr/local/share/ca-bundle.crt",
                  "ENV PIP_CERT=/usr/local/share/ca-bundle.crt REQUESTS_CA_BUNDLE=/usr/local/share/ca-bundle.crt "
                  "SSL_CERT_FILE=/usr/local/share/ca-bundle.crt"]
    if apt:
        lines += [f"RUN apt-get update && apt-get install -y --no-install-recommends {' '.join(apt)} \\",
                  "    && rm -rf /var/lib/apt/lists/*"]
    lines += [
        f"RUN groupadd --gid {uid} {name} && useradd --create-home --uid {uid} --gid {uid} --shell /bin/bash {name}",
        f"RUN install -d -o {uid} -g {uid} /opt/venv /opt/app",
        f"USER {uid}:{uid}",
        "RUN python3 -m venv /opt/venv && /opt/venv/bin/python -m pip install pip==24.3.1",
        "ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH",
        "COPY requirements.txt constraints.txt /opt/app/",
        "RUN pip install -r /opt/app/requirements.txt -c /opt/app/constraints.txt",
        "USER root",
    ]
    if "ssh" in services:
        (directory / "sshd_config").write_text(f"PermitRootLogin no\nPasswordAuthentication no\nAllowUsers {name}\n")
        lines += ["COPY sshd_config /etc/ssh/sshd_config.d/00-local.conf",
                  "RUN rm -f /etc/ssh/ssh_host_*_key* && mkdir -p /run/sshd"]
    if spec.get("env"):
        lines.append("ENV " + " ".join(f"{k}={json.dumps(str(v))}" for k, v in sorted(spec["env"].items())))
    if code:
        (directory / "src").mkdir()
        lines.append(f"COPY --chown={uid}:{uid} src/ /opt/code/")
    lines += [f"USER {name}", f"WORKDIR /home/{name}", 'CMD ["/bin/bash"]']
    (directory / "Dockerfile").write_text("\n".join(lines) + "\n")
    return directory


def docker_build(runner: Runner, name: str, context: Path, base: str, tag: str, *, nocache: bool) -> tuple[float, str]:
    cmd = [DOCKER, "build", "--force-rm", "--label", LABEL, "--build-arg", f"BASE={base}",
           "-t", f"dlbox-bench/{tag}", str(context)]
    if nocache:
        cmd.insert(2, "--no-cache")
    return runner.run(name, cmd, env=docker_env(), build=True)


def dlbox_build(runner: Runner, name: str, spec: Path, *extra: str) -> tuple[float, str]:
    return runner.run(name, [DLBOX, "build", str(spec), *extra], env=dlbox_env(), build=True)


def shared_base(runner: Runner, spec: Path) -> str:
    """The base the spec builds FROM; bootstrapped (untimed, unlabelled, kept) if missing."""
    _, out = runner.run("dry-run", [DLBOX, "build", str(spec), "--dry-run"])
    match = re.search(r"(?m)^FROM (\S+)", out)
    if not match:
        raise BenchError("`dlbox build --dry-run` printed no FROM line")
    base = match.group(1)
    if subprocess.run([DOCKER, "image", "inspect", base], capture_output=True).returncode != 0:
        say(f"base {base} is missing; bootstrapping it once (not timed, kept afterwards)")
        code = ("import sys; from pathlib import Path; from dlbox import bases, spec; "
                "from dlbox.progress import Progress\n"
                "with Progress() as p: bases.ensure(spec.load(Path(sys.argv[1])).base, p)")
        runner.run("bootstrap-base", [PYTHON, "-c", code, str(spec)])
    return base


# --- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    dlbox: str = "-"
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    result: str = "-"
    note: str = ""


def secs(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


# --- the benchmarks ---------------------------------------------------------------------------


def bench_cold(runner: Runner, work: Path) -> list[Row]:
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


def bench_code(runner: Runner, work: Path) -> list[Row]:
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


def bench_cli(runner: Runner) -> list[Row]:
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


# --- workspaces against raw Jupyter containers (4, 5) -----------------------------------------

# What 4 and 5 started and have not removed yet; cleanup() removes whatever is left.
live_workspaces: set[str] = set()
live_raw: set[str] = set()
live_guard = threading.Lock()


def ws_name(tag: str) -> str:
    return f"bench-{RUN_ID}-{tag}"  # container dlbox-ws-<this>, volume dlbox-ws-<this>-data


def ws_container(name: str) -> str:
    return f"dlbox-ws-{name}"


def raw_name(tag: str) -> str:
    return f"dlbox-bench-{RUN_ID}-{tag}"


def check_ws_image() -> None:
    """The image exists and has Jupyter, so `dlbox up --image` turns Jupyter on (what 4 and 5 time)."""
    proc = subprocess.run([DOCKER, "image", "inspect", "--format", '{{index .Config.Labels "dlbox.services"}}',
                           WS_IMAGE], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"no image {WS_IMAGE}; build it first (dlbox build --preset {PRESET})")
    if "jupyter" not in proc.stdout.strip().split(","):
        raise BenchError(f"{WS_IMAGE} has no Jupyter (its services: {proc.stdout.strip() or 'none'})")


def dlbox_up(runner: Runner, log: str, name: str) -> float:
    """`dlbox up NAME --image ...`, timed: it returns once Jupyter answers."""
    with live_guard:
        live_workspaces.add(name)
    seconds, _ = runner.run(log, [DLBOX, "up", name, "--image", WS_IMAGE], env=dlbox_env())
    return seconds


def dlbox_rm(runner: Runner, log: str, name: str, *, after_failure: bool = False) -> None:
    """`dlbox rm NAME --purge-data`; after a failed `up` (which removes what it made) quietly."""
    try:
        runner.run(log, [DLBOX, "rm", name, "--purge-data"], env=dlbox_env())
    except BenchError:
        if not after_failure:
            raise
    with live_guard:
        live_workspaces.discard(name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jupyter_answers(port: int, token: str) -> bool:
    """As dlbox polls: GET /api/status with the token, 2 s timeout, 200 or not."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                     headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def raw_up(runner: Runner, log: str, name: str) -> float:
    """`docker run -d` of the image's Jupyter server, timed from launch until Jupyter answers."""
    with live_guard:
        live_raw.add(name)
    for attempt in range(3):
        port, token = free_port(), secrets.token_urlsafe(32)
        cmd = [DOCKER, "run", "-d", "--name", name, "--label", LABEL, "-p", f"127.0.0.1:{port}:{JUPYTER_PORT}",
               "--entrypoint", "jupyter", WS_IMAGE, "server", "--ip=0.0.0.0", f"--port={JUPYTER_PORT}",
               f"--IdentityProvider.token={token}", "--no-browser"]
        seconds = None
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        checked = start
        while True:
            if jupyter_answers(port, token):
                seconds = time.perf_counter() - start
                break
            if proc.poll() not in (None, 0):
                break
            now = time.perf_counter()
            if now - start > READY_TIMEOUT:
                proc.kill()
                break
            if proc.returncode == 0 and now - checked > 10:  # a crashed server would never answer
                checked = now
                if docker_out("inspect", "--format", "{{.State.Running}}", name).strip() != "true":
                    break
            time.sleep(POLL)
        out = proc.communicate()[0]
        with runner.lock:
            runner.count += 1
            path = runner.logs / f"{runner.count:02d}-{log}.log"
        shown = [c if not c.startswith("--IdentityProvider.token=") else "--IdentityProvider.token=***" for c in cmd]
        if seconds is not None and proc.returncode == 0:
            path.write_text(f"$ {' '.join(shown)}\n# {seconds:.3f} s until /api/status answered 200\n{out}")
            return seconds
        logs = subprocess.run([DOCKER, "logs", "--tail", "20", name], capture_output=True, text=True,
                              errors="replace")
        path.write_text(f"$ {' '.join(shown)}\n# exit {proc.returncode}, Jupyter did not answer\n{out}\n"
                        f"# docker logs --tail 20\n{logs.stdout}{logs.stderr}")
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)
        if "port is already allocated" in out or "address already in use" in out:
            continue  # the free port was taken meanwhile: once more, timed afresh
        raise BenchError(f"{log}: raw Jupyter container did not answer (log {path}):\n    {out.strip()[-300:]}")
    raise BenchError(f"{log}: no free port after 3 tries")


def raw_rm(name: str) -> None:
    subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)
    with live_guard:
        live_raw.discard(name)


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


def bench_up(runner: Runner) -> list[Row]:
    check_ws_image()
    times: dict[str, list[float]] = {"A": [], "B": []}

    def sample(which: str, tag: str) -> float:
        if which == "A":
            name = ws_name(tag)
            try:
                seconds = dlbox_up(runner, f"up-dlbox-{tag}", name)
            except BaseException:
                dlbox_rm(runner, f"up-dlbox-{tag}-rm", name, after_failure=True)
                raise
            dlbox_rm(runner, f"up-dlbox-{tag}-rm", name)
            return seconds
        name = raw_name(tag)
        try:
            return raw_up(runner, f"up-raw-{tag}", name)
        finally:
            raw_rm(name)

    say("4. warm-up (untimed): dlbox up, then docker run")
    warm_a, warm_b = sample("A", "upw"), sample("B", "upw")
    say(f"   {secs(warm_a)}, {secs(warm_b)}")
    for i in range(1, UP_RUNS + 1):
        for which in ("AB" if i % 2 else "BA"):  # interleaved, ABBA...
            say(f"4. {i}/{UP_RUNS}: " + ("dlbox up --image" if which == "A" else "docker run -d + poll /api/status"))
            seconds = sample(which, f"up{i}")
            times[which].append(seconds)
            say(f"   {secs(seconds)}")
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    return [Row("4. dlbox up until Jupyter answers", secs(a), secs(b), ratio(a, b), f"ratio <= {UP_TARGET}",
                verdict(a / b <= UP_TARGET), f"median of {UP_RUNS}, interleaved, after 1 warm-up each; "
                f"dlbox {' '.join(f'{t:.2f}' for t in times['A'])}, raw {' '.join(f'{t:.2f}' for t in times['B'])}")]


def bench_memory(runner: Runner) -> list[Row]:
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


# --- jobs against raw containers (6, 7, 8) ------------------------------------------------------

JOB_ID = re.compile(r'"id": "([0-9a-f]+)"')  # the first "id" of `dlbox run --json`: the job's

_api = None
_api_guard = threading.Lock()


def docker_api():
    """The Engine API (the docker SDK's low-level client), one for the whole run."""
    global _api
    import docker  # in the venv (dlbox needs it)

    with _api_guard:
        if _api is None:
            _api = docker.from_env(timeout=60).api
        return _api


def user_cache_dir() -> str:
    """The cache dir the user's dlbox uses (config.cache_dir), kept when DLBOX_HOME moves."""
    explicit = os.environ.get("DLBOX_CACHE_DIR")
    if explicit:
        return explicit
    home = os.environ.get("DLBOX_HOME") or str(
        Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "dlbox")
    return str(Path(home) / "cache")


def is_service_argv(argv: list[bytes]) -> bool:
    """`python -m dlbox service` or `.../dlbox service`."""
    args = [a for a in argv if a]
    return len(args) >= 2 and args[-1] == b"service" and any(a == b"dlbox" or a.endswith(b"/dlbox") for a in args[:-1])


def process_env(pid: str) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return {k.decode(errors="replace"): v.decode(errors="replace")
            for k, _, v in (item.partition(b"=") for item in raw.split(b"\0") if b"=" in item)}


def other_services(own_home: Path | None) -> list[str]:
    """Local dlbox services of another DLBOX_HOME on the same engine (by /proc; best effort)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or proc.name == str(os.getpid()):
            continue
        try:
            if not is_service_argv((proc / "cmdline").read_bytes().split(b"\0")):
                continue
        except OSError:
            continue
        env = process_env(proc.name)
        if env is None:
            found.append(f"pid {proc.name}")
            continue
        home = env.get("DLBOX_HOME", "")
        if own_home is not None and home == str(own_home):
            continue
        if env.get("DOCKER_HOST", "") != os.environ.get("DOCKER_HOST", ""):
            continue  # talks to another engine
        found.append(f"pid {proc.name} (DLBOX_HOME {home or 'default'})")
    return found


class JobService:
    """The benchmark's own dlbox service (6-8): its own DLBOX_HOME in the work directory,
    capacity cpus=2, the user's DLBOX_CACHE_DIR; the CLI starts it, cleanup() stops it."""

    def __init__(self) -> None:
        self.work: Path | None = None
        self.home: Path | None = None
        self.checked = False
        self._client = None

    def setup(self, work: Path) -> None:
        self.work = work
        self.home = work / "job-home"
        if len(str(self.home / "service" / "dlbox.sock")) > 100:  # a Unix socket path has at most 107 bytes
            self.home = Path(tempfile.mkdtemp(prefix=f"dlbox-bench-{SHORT}-", dir="/tmp"))

    def env(self) -> dict:
        assert self.home is not None
        env = dlbox_env()
        env.pop("DLBOX_DATABASE_URL", None)  # else the service would keep its jobs in the user's database
        env.update(DLBOX_HOME=str(self.home), DLBOX_CACHE_DIR=user_cache_dir(), DLBOX_CAPACITY=BENCH_CAPACITY)
        return env

    def preflight(self) -> None:
        """Refuse to start a second service where it would remove someone's jobs; warn where ours may go.

        A dlbox service whose reconciler is not scoped to its own home (before jobs.owner_label)
        removes every job container on the engine that its store does not know, so services of two
        DLBOX_HOMEs on one engine remove each other's job containers.
        """
        if self.checked:
            return
        api = docker_api()
        key, _, value = LABEL.partition("=")
        foreign = [c for c in api.containers(all=True, filters={"label": ["dlbox.managed=true", "dlbox.kind=job"]})
                   if (c.get("Labels") or {}).get(key) != value]
        if foreign and not reconciler_scoped():
            names = ", ".join(n.lstrip("/") for c in foreign[:5] for n in (c.get("Names") or ["?"])[:1])
            raise BenchError(f"{len(foreign)} job container(s) of another dlbox service exist ({names}); the "
                             "benchmark's own service would remove them (this dlbox's service removes every job "
                             "container its store does not know): run 6-8 when they have ended")
        others = other_services(self.home)
        if others:
            say(f"   note: other dlbox services run on this engine ({'; '.join(others)}); one whose reconciler is "
                "not scoped to its own home removes this benchmark's job containers (they would end 'lost')")
        self.checked = True

    def get(self, path: str, **params):
        """GET from the service's API over its Unix socket (how the benchmark waits for jobs)."""
        import httpx  # in the venv (dlbox needs it)

        if self._client is None:
            self._client = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.home / "service" / "dlbox.sock")),
                                        base_url="http://dlbox", timeout=30)
        try:
            response = self._client.get(path, params=params)
        except httpx.TransportError as exc:
            raise BenchError(f"the benchmark's dlbox service does not answer ({exc}); "
                             f"its log: {self.home / 'service' / 'service.log'}") from None
        if response.status_code != 200:
            raise BenchError(f"the benchmark's dlbox service answered {response.status_code} to GET {path}: "
                             f"{response.text[:200]}")
        return response.json()

    def post(self, path: str, body: dict) -> dict:
        """POST to the service's API over its Unix socket (6: a submit without a CLI start)."""
        self.get("/api/health")  # makes the client
        response = self._client.post(path, json=body)
        if response.status_code >= 300:
            raise BenchError(f"the benchmark's dlbox service answered {response.status_code} to POST {path}: "
                             f"{response.text[:200]}")
        return response.json()

    def _is_ours(self, pid: int) -> bool:
        env = process_env(str(pid))
        return bool(env) and env.get("DLBOX_HOME") == str(self.home)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        pid_file = self.home / "service" / "pid" if self.home else None
        if pid_file is None or not pid_file.exists():
            return
        pid = int(pid_file.read_text().strip() or 0)
        if not pid or not self._is_ours(pid):
            return
        say(f"cleanup: stopping the benchmark's dlbox service (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self._is_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._is_ours(pid):
            os.kill(pid, signal.SIGKILL)

    def remove_home(self) -> None:
        """Only a home outside the work directory (long TMPDIR); the work directory goes as a whole."""
        if self.home and self.work and self.work not in self.home.parents:
            shutil.rmtree(self.home, ignore_errors=True)


service = JobService()


def reconciler_scoped() -> bool:
    """Whether the installed dlbox's service leaves job containers of other homes alone."""
    try:
        from dlbox.jobs import runner as jobs  # the dlbox next to this Python (the venv's)
    except ImportError:
        return False
    return hasattr(jobs, "owner_label")


def check_job_image() -> None:
    if subprocess.run([DOCKER, "image", "inspect", JOB_IMAGE], capture_output=True).returncode != 0:
        raise BenchError(f"no image {JOB_IMAGE}; build it first (dlbox build --preset {PRESET})")


def lost_hint() -> str:
    others = other_services(service.home)
    return ("; 'lost' means its container disappeared: another dlbox service on this engine removes every job "
            "container its store does not know" + (f" (running here: {'; '.join(others)})" if others else ""))


def submit(runner: Runner, log: str, *args: str) -> str:
    """`dlbox run --image JOB_IMAGE --json ARGS...` into the benchmark's service: the job id."""
    _, out = runner.run(log, [DLBOX, "run", "--image", JOB_IMAGE, "--json", *args], env=service.env(),
                        cwd=service.work)
    match = JOB_ID.search(out)
    if not match:
        raise BenchError(f"{log}: `dlbox run --json` printed no job id:\n    {out.strip()[-300:]}")
    return match.group(1)


def wait_jobs(ids: list[str], timeout: float, period: float = 0.1) -> tuple[float, dict[str, dict]]:
    """Poll the service until none of `ids` is queued, starting or running: (perf_counter then, records)."""
    wanted = set(ids)
    pending = set(ids)
    deadline = time.perf_counter() + timeout
    while True:
        pending &= {j["id"] for j in service.get("/api/jobs")}
        if not pending:
            end = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise BenchError(f"{len(pending)} of {len(ids)} jobs have not ended after {timeout:.0f} s "
                             f"(e.g. {sorted(pending)[0]})")
        time.sleep(period)
    records = {j["id"]: j for j in service.get("/api/jobs", all="true") if j["id"] in wanted}
    return end, records


def check_jobs(records: dict[str, dict], ids: list[str], what: str, ok: tuple[str, ...] = ("succeeded",)) -> None:
    bad = [records.get(i) or {"id": i, "state": "missing", "reason": None} for i in ids]
    bad = [r for r in bad if r["state"] not in ok]
    if bad:
        first = bad[0]
        states = ", ".join(f"{n} {s}" for s, n in sorted(
            {s: sum(1 for r in bad if r["state"] == s) for s in {r["state"] for r in bad}}.items()))
        raise BenchError(f"{what}: {len(bad)} of {len(ids)} jobs ended otherwise than {'/'.join(ok)} ({states}); "
                         f"first {first['id']}: {first['state']} ({first.get('reason') or 'no reason'})"
                         + (lost_hint() if any(r["state"] == "lost" for r in bad) else ""))


def until_running(name: str, start: float, *, proc: subprocess.Popen | None = None, job_id: str | None = None,
                  timeout: float = 60.0) -> float:
    """Seconds from `start` until the engine reports container `name` running (polled every JOB_POLL)."""
    import docker  # in the venv (dlbox needs it)

    api = docker_api()
    asked = start
    while True:
        try:
            state = api.inspect_container(name)["State"]
            if state.get("Running"):
                return time.perf_counter() - start
            if state.get("Status") in ("exited", "dead"):
                raise BenchError(f"{name} ended (exit {state.get('ExitCode')}) before it was seen running")
        except docker.errors.NotFound:
            pass
        now = time.perf_counter()
        if proc is not None and proc.poll() not in (None, 0):
            raise BenchError(f"`docker run -d` of {name} failed: {proc.communicate()[0].strip()[-300:]}")
        if job_id is not None and now - start > 2 and now - asked > 1:  # gone, or never started?
            asked = now
            job = service.get(f"/api/jobs/{job_id}")
            if job["state"] in FINAL_STATES:
                raise BenchError(f"job {job_id} ended {job['state']} ({job['reason'] or 'no reason'}) before its "
                                 f"container was seen running" + (lost_hint() if job["state"] == "lost" else ""))
        if now - start > timeout:
            raise BenchError(f"{name} was not running after {timeout:.0f} s")
        time.sleep(JOB_POLL)


def submit_until_running(runner: Runner, tag: str) -> float:
    """`dlbox run ... -- sleep 30`, timed from launch until its container runs; cancelled afterwards."""
    start = time.perf_counter()
    job_id = submit(runner, f"submit-dlbox-{tag}", "--", "sleep", "30")
    try:
        seconds = until_running(f"dlbox-job-{job_id}", start, job_id=job_id)
    except BenchError:
        subprocess.run([DLBOX, "cancel", job_id], env=service.env(), cwd=service.work, capture_output=True)
        raise
    runner.run(f"submit-dlbox-{tag}-cancel", [DLBOX, "cancel", job_id, "--json"], env=service.env(),
               cwd=service.work)
    _, records = wait_jobs([job_id], 60)
    check_jobs(records, [job_id], f"6. {tag}", ok=("cancelled", "succeeded"))
    return seconds


def api_until_running(runner: Runner, tag: str) -> float:
    """POST /api/jobs (sleep 30) on the service's socket, timed until its container runs; cancelled afterwards.
    The same service work as `dlbox run`, without the CLI's process start."""
    start = time.perf_counter()
    job_id = service.post("/api/jobs", {"image": JOB_IMAGE, "command": ["sleep", "30"]})["id"]
    try:
        seconds = until_running(f"dlbox-job-{job_id}", start, job_id=job_id)
    finally:
        subprocess.run([DLBOX, "cancel", job_id], env=service.env(), cwd=service.work, capture_output=True)
    _, records = wait_jobs([job_id], 60)
    check_jobs(records, [job_id], f"6. {tag}", ok=("cancelled", "succeeded"))
    return seconds


def raw_until_running(runner: Runner, tag: str) -> float:
    """`docker run -d IMG sleep 30`, timed from launch until the engine reports it running; removed afterwards."""
    name = raw_name(tag)
    with live_guard:
        live_raw.add(name)
    cmd = [DOCKER, "run", "-d", "--name", name, "--label", LABEL, JOB_IMAGE, "sleep", "30"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    try:
        seconds = until_running(name, start, proc=proc)
        out = proc.communicate(timeout=60)[0]
        runner.note(f"submit-raw-{tag}", f"$ {' '.join(cmd)}\n# {seconds:.3f} s until running, exit "
                                         f"{proc.returncode}\n{out}")
        if proc.returncode != 0:
            raise BenchError(f"`docker run -d` of {name} failed (exit {proc.returncode}): {out.strip()[-300:]}")
        return seconds
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raw_rm(name)


def bench_submit(runner: Runner) -> list[Row]:
    check_job_image()
    service.preflight()
    times: dict[str, list[float]] = {"A": [], "B": [], "C": []}

    def sample(which: str, tag: str) -> float:
        kind = {"A": submit_until_running, "B": raw_until_running, "C": api_until_running}[which]
        return kind(runner, tag)

    say("6. warm-up (untimed): dlbox run (starts the benchmark's dlbox service), then docker run -d")
    warm_a, warm_b = sample("A", "subw"), sample("B", "subw")
    say(f"   {secs(warm_a)}, {secs(warm_b)}")
    for i in range(1, SUBMIT_RUNS + 1):
        for which in ("ABC" if i % 2 else "CBA"):  # interleaved, ABCCBA...
            say(f"6. {i}/{SUBMIT_RUNS}: " + {"A": "dlbox run -- sleep 30", "B": "docker run -d ... sleep 30",
                                             "C": "POST /api/jobs (sleep 30)"}[which] + " until running")
            seconds = sample(which, f"sub{i}")
            times[which].append(seconds)
            say(f"   {secs(seconds)}")
    a, b, c = (statistics.median(times[k]) for k in "ABC")
    ok = a < SUBMIT_TARGET and a / b <= SUBMIT_RATIO
    return [Row("6. job submit until its container runs", secs(a), secs(b), ratio(a, b),
                f"dlbox < {SUBMIT_TARGET:g} s, ratio <= {SUBMIT_RATIO}", verdict(ok),
                f"median of {SUBMIT_RUNS}, interleaved, after 1 warm-up each; engine polled every "
                f"{JOB_POLL * 1000:.0f} ms; dlbox {' '.join(f'{t:.2f}' for t in times['A'])}, "
                f"raw {' '.join(f'{t:.2f}' for t in times['B'])}"),
            Row("6. the same through the API (no CLI start)", secs(c), secs(b), ratio(c, b), "info", "info",
                f"POST /api/jobs on the service's socket; {' '.join(f'{t:.2f}' for t in times['C'])}")]


def raw_true(tag: str) -> list[str]:
    return [DOCKER, "run", "--rm", "--name", raw_name(tag), "--label", LABEL, JOB_IMAGE, "true"]


def bench_queue(runner: Runner) -> list[Row]:
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


def engine_time(text: str) -> float:
    """An engine timestamp (RFC 3339 with nanoseconds, e.g. 2024-05-01T10:00:00.123456789Z) as epoch seconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match:
        raise BenchError(f"cannot read the engine's timestamp {text!r}")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole = datetime.fromisoformat(match.group(1) + zone).timestamp()
    return whole + float("0." + (match.group(2) or "0"))


class ContainerEvents:
    """The engine's start and die events of this run's containers (by name), read in a thread."""

    def __init__(self) -> None:
        import docker  # in the venv (dlbox needs it)

        self.client = docker.from_env(timeout=60).api  # a connection of its own: events stream on it
        self.times: dict[str, dict[str, float]] = {}
        self.error: str | None = None
        self.cond = threading.Condition()
        self.stream = self.client.events(decode=True, filters={"type": "container", "label": LABEL,
                                                               "event": ["start", "die"]})
        self.thread = threading.Thread(target=self._read, daemon=True, name="events")
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name")
                action = event.get("Action") or event.get("status")
                if name and action in ("start", "die") and event.get("timeNano"):
                    with self.cond:
                        self.times.setdefault(name, {})[action] = event["timeNano"] / 1e9
                        self.cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - closed by close(), or the engine went away
            with self.cond:
                self.error = f"{type(exc).__name__}: {exc}"
                self.cond.notify_all()

    def duration(self, name: str, timeout: float = 15.0) -> float:
        """Seconds from the container's start event to its die event."""
        with self.cond:
            self.cond.wait_for(lambda: {"start", "die"} <= set(self.times.get(name, {})) or self.error, timeout)
            seen = self.times.get(name, {})
            if not {"start", "die"} <= set(seen):
                raise BenchError(f"the engine sent no start and die events for {name}"
                                 + (f" (event stream: {self.error})" if self.error else ""))
            return seen["die"] - seen["start"]

    def close(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001
            pass
        self.client.close()


ACCURACY = re.compile(r"test accuracy ([0-9.]+)")


def train_dlbox(runner: Runner, events: ContainerEvents, i: int) -> tuple[float, str]:
    job_id = submit(runner, f"train-dlbox-{i}", "--cpus", f"{TRAIN_CPUS:g}", "--mount", f"{DIGITS}:/code:ro",
                    "--param", f"epochs={TRAIN_EPOCHS}", "--", "python", "/code/train.py")
    _, records = wait_jobs([job_id], TRAIN_TIMEOUT, period=0.5)
    saved = service.home / "runs" / job_id / "output.log"
    output = saved.read_text(errors="replace") if saved.exists() else "(no output saved)"
    log = runner.note(f"train-dlbox-{i}-output", f"# job {job_id}: {json.dumps(records.get(job_id))}\n{output}")
    record = records.get(job_id) or {"state": "missing", "reason": None}
    if record["state"] != "succeeded":
        tail = "\n".join("    " + line for line in output.strip().splitlines()[-15:])
        raise BenchError(f"training job {job_id} ended {record['state']} ({record['reason'] or 'no reason'}; "
                         f"log {log})" + (lost_hint() if record["state"] == "lost" else "") + f":\n{tail}")
    found = ACCURACY.search(output)
    return events.duration(f"dlbox-job-{job_id}"), found.group(1) if found else "?"


def train_raw(runner: Runner, events: ContainerEvents, i: int) -> tuple[float, str, float]:
    """(start-to-die seconds by events, test accuracy, StartedAt-to-FinishedAt seconds by inspect)."""
    name = raw_name(f"t{i}")
    with live_guard:
        live_raw.add(name)
    try:
        _, out = runner.run(f"train-raw-{i}", [DOCKER, "run", "--name", name, "--label", LABEL,
                                               "--cpus", f"{TRAIN_CPUS:g}", "-v", f"{DIGITS}:/code:ro",
                                               "-e", f"EPOCHS={TRAIN_EPOCHS}", JOB_IMAGE, "python", "/code/train.py"])
        state = docker_api().inspect_container(name)["State"]
        inspected = engine_time(state["FinishedAt"]) - engine_time(state["StartedAt"])
        found = ACCURACY.search(out)
        return events.duration(name), found.group(1) if found else "?", inspected
    finally:
        raw_rm(name)


def bench_train(runner: Runner) -> list[Row]:
    check_job_image()
    if not (DIGITS / "train.py").is_file():
        raise BenchError(f"no {DIGITS / 'train.py'}")
    service.preflight()
    say(f"8. checking that {JOB_IMAGE} has scikit-learn and TensorFlow (untimed; warms the page cache too)")
    try:
        runner.run("train-check", [DOCKER, "run", "--rm", "--label", LABEL, JOB_IMAGE, "python", "-c",
                                   "import sklearn, tensorflow"])
    except BenchError as exc:
        raise BenchError(f"{JOB_IMAGE} cannot import scikit-learn and TensorFlow; rebuild it "
                         f"(dlbox build --preset {PRESET}): {str(exc).splitlines()[-1].strip()}") from None
    times: dict[str, list[float]] = {"A": [], "B": []}
    events = ContainerEvents()
    try:
        for i, which in enumerate(TRAIN_ORDER, 1):
            if which == "A":
                say(f"8. {i}/{len(TRAIN_ORDER)}: dlbox run --cpus {TRAIN_CPUS} --param epochs={TRAIN_EPOCHS} "
                    "-- python /code/train.py")
                seconds, accuracy = train_dlbox(runner, events, i)
                say(f"   {secs(seconds)} from container start to exit; test accuracy {accuracy}")
            else:
                say(f"8. {i}/{len(TRAIN_ORDER)}: docker run --cpus {TRAIN_CPUS} -e EPOCHS={TRAIN_EPOCHS} ... "
                    "python /code/train.py")
                seconds, accuracy, inspected = train_raw(runner, events, i)
                say(f"   {secs(seconds)} from container start to exit (State.StartedAt to FinishedAt: "
                    f"{secs(inspected)}); test accuracy {accuracy}")
            times[which].append(seconds)
    finally:
        events.close()
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    runs = f"median of {len(times['A'])}" if len(times["A"]) > 1 else "1 run"
    return [Row(f"8. digits training, {TRAIN_EPOCHS} epochs, in a job", secs(a), secs(b), f"{b / a:.3f}x",
                f"raw/dlbox >= {TRAIN_TARGET}", verdict(b / a >= TRAIN_TARGET),
                f"ratio: throughput dlbox/raw; {runs} each ({TRAIN_ORDER}); container start to exit (engine events); "
                f"--cpus {TRAIN_CPUS}, no memory limit; dlbox {' '.join(f'{t:.2f}' for t in times['A'])}, "
                f"raw {' '.join(f'{t:.2f}' for t in times['B'])}")]


# --- the web dashboard (9) ----------------------------------------------------------------------


def dashboard_session(port: int, token: str) -> str:
    """Sign in as the login form does; the cookie it sets holds a session id, not the token."""
    import http.client
    from urllib.parse import urlencode

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/login", body=urlencode({"token": token}),
                 headers={"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    cookie = response.getheader("set-cookie") or ""
    conn.close()
    if response.status != 303 or not cookie.startswith("dlbox_token="):
        raise BenchError(f"signing in to the dashboard answered {response.status}")
    return cookie.split(";", 1)[0].split("=", 1)[1]


def bench_dashboard(runner: Runner, work: Path) -> list[Row]:
    try:
        from playwright.sync_api import sync_playwright  # the test extra: pip install -e '.[test]'
    except ImportError:
        raise BenchError("10 needs Playwright: pip install -e '.[test]'") from None
    if not Path(CHROMIUM).is_file():
        raise BenchError(f"10 needs Chromium at {CHROMIUM} (scripts/host-setup.sh packages installs Debian's)")
    env = {**dlbox_env(), "DLBOX_HOME": str(work / "dashboard-home")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = runner.logs / "dashboard-server.log"
    say(f"10. dlbox server on port {port} (log {log})")
    with log.open("wb") as out:
        proc = subprocess.Popen([DLBOX, "server", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"dlbox server did not answer (log {log})") from None
                time.sleep(0.2)
        _, out = runner.run("dashboard-user", [DLBOX, "users", "add", "bench", "--json"], env=env)
        cookie = {"name": "dlbox_token", "value": dashboard_session(port, json.loads(out)["token"]), "url": url}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                def load(weigh: bool = False) -> tuple[dict, dict[str, int]]:
                    context = browser.new_context()
                    context.add_cookies([cookie])
                    page = context.new_page()
                    sizes: dict[str, int] = {}
                    if weigh:
                        page.on("response", lambda r: sizes.__setitem__(r.request.resource_type, sizes.get(
                            r.request.resource_type, 0) + len(r.body())) if r.url.startswith(url) else None)
                    response = page.goto(f"{url}/workspaces", wait_until="load")
                    if response is None or response.status != 200 or not page.url.endswith("/workspaces"):
                        raise BenchError(f"GET /workspaces: {response.status if response else 'no response'} "
                                         f"at {page.url}")
                    timing = page.evaluate("JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))")
                    context.close()
                    return timing, sizes

                _, sizes = load(weigh=True)  # warm-up, untimed: weighs the page
                dcl, loaded, first_byte = [], [], []
                for i in range(DASH_RUNS):
                    timing, _ = load()
                    dcl.append(timing["domContentLoadedEventEnd"] / 1000)
                    loaded.append(timing["loadEventEnd"] / 1000)
                    first_byte.append(timing["responseStart"] / 1000)
                    say(f"10. {i + 1}/{DASH_RUNS}: DOMContentLoaded {dcl[-1] * 1000:.0f} ms, "
                        f"load {loaded[-1] * 1000:.0f} ms")
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    kb = {kind: sizes.get(kind, 0) / 1024 for kind in ("document", "stylesheet", "script")}
    weight = sum(kb.values())
    other = sum(v for k, v in sizes.items() if k not in kb)
    tti, at_load = statistics.median(dcl), statistics.median(loaded)
    return [
        Row("10. dashboard page weight (workspaces)", f"{weight:.1f} KB", "-", "-",
            f"<= {DASH_WEIGHT_TARGET:.0f} KB", verdict(weight <= DASH_WEIGHT_TARGET),
            f"HTML {kb['document']:.1f} KB, CSS {kb['stylesheet']:.1f} KB, JS {kb['script']:.1f} KB, uncompressed; "
            f"other requests {other} bytes; no workspaces listed"),
        Row("10. dashboard time to interactive", secs(tti), "-", "-", f"< {DASH_TTI_TARGET:.0f} s",
            verdict(tti < DASH_TTI_TARGET), f"navigation start to DOMContentLoaded (deferred script run), median of "
            f"{DASH_RUNS}, fresh context each; to load {secs(at_load)}; first byte "
            f"{secs(statistics.median(first_byte))} (the server lists images from the engine); "
            f"{' '.join(f'{t * 1000:.0f}' for t in dcl)} ms"),
    ]


# --- cleanup ----------------------------------------------------------------------------------


def docker_out(*args: str) -> str:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def cleanup(runner: Runner | None) -> None:
    """Remove what this run created: by its label, then our own leftover layers of failed builds."""
    try:
        service.stop()  # before the label sweep: its job containers go with the rest
    except Exception as exc:  # noqa: BLE001 - report, and remove the rest anyway
        say(f"cleanup: could not stop the benchmark's dlbox service: {exc}")
    for name in sorted(live_workspaces):  # left by a failure in 4 or 5: with its volume and secrets
        say(f"cleanup: dlbox rm {name} --purge-data")
        subprocess.run([DLBOX, "rm", name, "--purge-data"], env=dlbox_env(), capture_output=True)
    say(f"cleanup: removing containers, networks, volumes and images labelled {LABEL}")
    containers = docker_out("ps", "-aq", "--filter", f"label={LABEL}").split()
    if containers:
        subprocess.run([DOCKER, "rm", "-f", "-v", *containers], capture_output=True)
    networks = docker_out("network", "ls", "-q", "--filter", f"label={LABEL}").split()  # after the containers
    if networks:
        subprocess.run([DOCKER, "network", "rm", *networks], capture_output=True)
    volumes = docker_out("volume", "ls", "-q", "--filter", f"label={LABEL}").split()
    if volumes:
        subprocess.run([DOCKER, "volume", "rm", "-f", *volumes], capture_output=True)
    removed = 0
    for _ in range(6):  # children before parents
        images = list(dict.fromkeys(docker_out("images", "-aq", "--no-trunc", "--filter", f"label={LABEL}").split()))
        if not images:
            break
        for image in images:
            if subprocess.run([DOCKER, "rmi", "-f", image], capture_output=True).returncode == 0:
                removed += 1
    left = docker_out("images", "-aq", "--filter", f"label={LABEL}").split()
    # Layers that a failed build committed: only untagged images made since this run started.
    swept = 0
    for layer in reversed(runner.created_layers if runner else []):
        info = docker_out("image", "inspect", "--format", "{{json .RepoTags}} {{.Created}}", layer).split()
        if len(info) != 2 or json.loads(info[0]):
            continue
        try:
            created = datetime.fromisoformat(info[1][:19]).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        if created >= STARTED_UTC.replace(microsecond=0) and \
                subprocess.run([DOCKER, "rmi", layer], capture_output=True).returncode == 0:
            swept += 1
    say(f"cleanup: {removed} labelled images removed, {swept} leftover layers removed"
        + (f"; {len(left)} labelled images could not be removed: {' '.join(left)}" if left else ""))


# --- main -------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header = Row("benchmark", "dlbox", "baseline", "ratio", "target", "result", "notes")
    cols = ["what", "dlbox", "baseline", "ratio", "target", "result", "note"]
    table = [header, *rows]
    widths = {c: max(len(getattr(r, c)) for r in table) for c in cols}
    right = {"dlbox", "baseline", "ratio"}

    def fmt(r: Row) -> str:
        return "  ".join(getattr(r, c).rjust(widths[c]) if c in right else getattr(r, c).ljust(widths[c])
                         for c in cols).rstrip()

    print()
    print(f"dlbox benchmarks, run {RUN_ID}{' (BENCH_QUICK)' if QUICK else ''}, preset {PRESET}")
    print("baselines: hand-written Dockerfile with DOCKER_BUILDKIT=0 docker build; python -c pass; docker images; "
          f"docker run -d of {WS_IMAGE}'s Jupyter server; docker run of {JOB_IMAGE} (6-8)")
    print(fmt(header))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print(fmt(r))
    print()


def bench_server_load() -> list[Row]:
    """9: see benchmarks/server_load.py (wrk against the server's list routes)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import server_load

    try:
        return [Row(**row) for row in server_load.run(say)]
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise BenchError(str(exc)) from None


def selected() -> set[int] | None:
    """BENCH_ONLY=4,5: the benchmark numbers to run (None: all)."""
    raw = os.environ.get("BENCH_ONLY", "").strip()
    if not raw:
        return None
    try:
        numbers = {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        numbers = set()
    if not numbers or not numbers <= set(range(1, 11)):
        raise ValueError(f"BENCH_ONLY={raw!r}: a comma list of benchmark numbers 1-10")
    return numbers


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
        benches = [(3, "3. CLI wall time", lambda: bench_cli(runner)),
                   (10, "10. dashboard page weight and time to interactive", lambda: bench_dashboard(runner, work)),
                   (4, "4. dlbox up until Jupyter answers", lambda: bench_up(runner)),
                   (5, "5. memory per idle workspace", lambda: bench_memory(runner)),
                   (6, "6. job submit until its container runs", lambda: bench_submit(runner)),
                   (7, f"7. {QUEUE_JOBS} short jobs through the queue", lambda: bench_queue(runner)),
                   (8, f"8. digits training, {TRAIN_EPOCHS} epochs, in a job", lambda: bench_train(runner)),
                   (9, "9. team server lists under load", bench_server_load),
                   (1, f"1. cold build, {PRESET}", lambda: bench_cold(runner, work)),
                   (2, "2. rebuild after a code change", lambda: bench_code(runner, work))]
        benches = [b for b in benches if only is None or b[0] in only]
        for number, what, bench in benches:  # the quick one first: it fails fast if dlbox is broken
            try:
                rows[number] = bench()
            except BenchError as exc:
                errors += 1
                say(f"ERROR in {what}: {exc}")
                rows[number] = [Row(what, result="ERROR", note=str(exc).splitlines()[0][:100])]
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
