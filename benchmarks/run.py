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

Everything the benchmark creates carries the label dlbox.bench=<run id> and is removed at
the end; the specs get names of their own (bench-tf-<id>, bench-code-<id>) so the user's
dlbox/<preset> tags never move; workspaces are bench-<run id>-..., raw containers
dlbox-bench-<run id>-..., each removed after its sample (workspaces by `dlbox rm --purge-data`).
The bootstrapped base is shared (default DLBOX_HOME) and kept.
The exit status is non-zero only when something failed to run; missed targets are marked.

Environment: BENCH_QUICK=1 (fewer repetitions; 2 samples in 4, 5 containers in 5),
BENCH_ONLY=4,5 (run only these benchmarks), BENCH_PRESET (default tensorflow-2.9),
BENCH_WS_IMAGE (image for 4 and 5, default dlbox/<preset>:latest; it must exist),
BENCH_KEEP=1 (keep the work directory with the specs and build logs).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
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
    if "jupyter" not in proc.stdout.split(","):
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


# --- cleanup ----------------------------------------------------------------------------------


def docker_out(*args: str) -> str:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def cleanup(runner: Runner | None) -> None:
    """Remove what this run created: by its label, then our own leftover layers of failed builds."""
    for name in sorted(live_workspaces):  # left by a failure in 4 or 5: with its volume and secrets
        say(f"cleanup: dlbox rm {name} --purge-data")
        subprocess.run([DLBOX, "rm", name, "--purge-data"], env=dlbox_env(), capture_output=True)
    say(f"cleanup: removing containers, volumes and images labelled {LABEL}")
    containers = docker_out("ps", "-aq", "--filter", f"label={LABEL}").split()
    if containers:
        subprocess.run([DOCKER, "rm", "-f", "-v", *containers], capture_output=True)
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
          f"docker run -d of {WS_IMAGE}'s Jupyter server")
    print(fmt(header))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print(fmt(r))
    print()


def selected() -> set[int] | None:
    """BENCH_ONLY=4,5: the benchmark numbers to run (None: all)."""
    raw = os.environ.get("BENCH_ONLY", "").strip()
    if not raw:
        return None
    try:
        numbers = {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        numbers = set()
    if not numbers or not numbers <= {1, 2, 3, 4, 5}:
        raise ValueError(f"BENCH_ONLY={raw!r}: a comma list of benchmark numbers 1-5")
    return numbers


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
    say(f"run {RUN_ID}{' (quick)' if QUICK else ''}"
        f"{'; only ' + ','.join(map(str, sorted(only))) if only else ''}; work directory and logs in {work}")
    rows: dict[int, list[Row]] = {}
    errors = 0
    runner = None
    try:
        runner = Runner(work)
        benches = [(3, "3. CLI wall time", lambda: bench_cli(runner)),
                   (4, "4. dlbox up until Jupyter answers", lambda: bench_up(runner)),
                   (5, "5. memory per idle workspace", lambda: bench_memory(runner)),
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
    print_table([row for number in sorted(rows) for row in rows[number]])
    print(f"total {time.monotonic() - STARTED:.0f} s; {errors} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
