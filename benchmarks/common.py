"""What the benchmarks (bNN_*.py) and their runner (run.py) share.

The settings read from the environment, the run's id and label, running and timing commands
(Runner), result rows and the table, the helpers more than one benchmark uses (the hand-written
Dockerfile of 1 and 2, workspaces and raw Jupyter containers of 4 and 5, the benchmark's own dlbox
service of 6-8) and the cleanup at the end of a run. See run.py's docstring for the whole.

The benchmarks import it as a plain module (`import common`, `from common import ...`): benchmarks/
is the directory of the script that runs (run.py, or b09_server_load.py on its own), so Python
puts it first on sys.path.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

try:  # the dlbox next to this Python (the venv's); reconciler_scoped() asks it
    from dlbox.jobs import runner as dlbox_jobs
except ImportError:
    dlbox_jobs = None

# Run with the runner's Python by shared_base() when the spec's base is missing.
BOOTSTRAP_BASE = ("import sys; from pathlib import Path; from dlbox.build import bases; "
                  "from dlbox.spec import model as spec; from dlbox.progress import Progress\n"
                  "with Progress() as p: bases.ensure(spec.load(Path(sys.argv[1])).base, p)")

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

# 4 and 5: raw Jupyter containers, polled as dlbox up polls
POLL = 0.05           # seconds between GET /api/status, as dlbox up polls (manage.POLL)
READY_TIMEOUT = 180.0
JUPYTER_PORT = 8888
# 6-8: the jobs and the benchmark's own dlbox service
JOB_IMAGE = os.environ.get("BENCH_JOB_IMAGE", WS_IMAGE)
BENCH_CAPACITY = "cpus=2"

STARTED = time.monotonic()
STARTED_UTC = datetime.now(timezone.utc)


class BenchError(Exception):
    """A benchmark could not run to its end. `rows`: what it measured before that (run.py prints them
    above the error row; the run still counts the error)."""

    def __init__(self, message: str = "", rows: list | tuple = ()):
        super().__init__(message)
        self.rows = list(rows)


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
        runner.run("bootstrap-base", [PYTHON, "-c", BOOTSTRAP_BASE, str(spec)])
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


# --- workspaces against raw Jupyter containers (4, 5) -----------------------------------------

# What 4 and 5 started and have not removed yet; cleanup() removes whatever is left.
live_workspaces: set[str] = set()
live_raw: set[str] = set()
live_guard = threading.Lock()


def ws_name(tag: str) -> str:
    return f"bench-{RUN_ID}-{tag}"  # container dlbox-ws-<this>, volume dlbox-ws-<this>-data


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


def dlbox_up(runner: Runner, log: str, name: str, phases: list | None = None) -> float:
    """`dlbox up NAME --image ...`, timed: it returns once Jupyter answers. With `phases`, its own
    timings (volumes, create, start, ready, apply: seconds) are appended to that list."""
    with live_guard:
        live_workspaces.add(name)
    seconds, out = runner.run(log, [DLBOX, "up", name, "--image", WS_IMAGE, "--json"], env=dlbox_env())
    found = re.search(r'"timings": (\{[^}]*\})', out)
    if phases is not None and found:
        phases.append(json.loads(found.group(1)) | {"total_s": seconds})
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


def jupyter_server_args(token: str) -> list[str]:
    """What follows `--entrypoint jupyter IMAGE`: the preset's Jupyter Server, as dlbox starts it."""
    return ["server", "--ip=0.0.0.0", f"--port={JUPYTER_PORT}", f"--IdentityProvider.token={token}", "--no-browser"]


def raw_up(runner: Runner, log: str, name: str, image: str = WS_IMAGE, args=jupyter_server_args) -> float:
    """`docker run -d` of an image's Jupyter (`--entrypoint jupyter IMAGE args(token)`), timed from
    launch until Jupyter answers."""
    with live_guard:
        live_raw.add(name)
    for attempt in range(3):
        port, token = free_port(), secrets.token_urlsafe(32)
        cmd = [DOCKER, "run", "-d", "--name", name, "--label", LABEL, "-p", f"127.0.0.1:{port}:{JUPYTER_PORT}",
               "--entrypoint", "jupyter", image, *args(token)]
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
        shown = [c if ".token=" not in c else c.split("=", 1)[0] + "=***" for c in cmd]
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
    return dlbox_jobs is not None and hasattr(dlbox_jobs, "owner_label")


def check_job_image() -> None:
    if subprocess.run([DOCKER, "image", "inspect", JOB_IMAGE], capture_output=True).returncode != 0:
        raise BenchError(f"no image {JOB_IMAGE}; build it first (dlbox build --preset {PRESET})")


def lost_hint() -> str:
    others = other_services(service.home)
    return ("; 'lost' means its container disappeared: another dlbox service on this engine removes every job "
            "container its store does not know" + (f" (running here: {'; '.join(others)})" if others else ""))


def submit(runner: Runner, log: str, *args: str, cwd: Path | None = None, code: bool = False) -> str:
    """`dlbox run --image JOB_IMAGE --json ARGS...` into the benchmark's service: the job id.

    Without `code`, with --no-code: the work directory is no project (6-8 time the job, 11 the snapshot)."""
    flags = [] if code else ["--no-code"]
    _, out = runner.run(log, [DLBOX, "run", "--image", JOB_IMAGE, "--json", *flags, *args], env=service.env(),
                        cwd=cwd or service.work)
    match = JOB_ID.search(out)
    if not match:
        raise BenchError(f"{log}: `dlbox run --json` printed no job id:\n    {out.strip()[-300:]}")
    return match.group(1)


JOBS_PAGE = 1000  # the most rows GET /api/jobs answers at once (server.deps.PAGE_MAX); its default is 100


def list_jobs(**params) -> list[dict]:
    """GET /api/jobs in one page of JOBS_PAGE rows. A full page may hide more, and paging by offset
    through a list whose jobs end meanwhile skips rows, so more jobs than one page is an error."""
    jobs = service.get("/api/jobs", limit=JOBS_PAGE, **params)
    if len(jobs) >= JOBS_PAGE:
        raise BenchError(f"the benchmark's service lists {JOBS_PAGE} jobs or more, more than one page of "
                         "GET /api/jobs: it cannot tell which have ended")
    return jobs


def wait_jobs(ids: list[str], timeout: float, period: float = 0.1) -> tuple[float, dict[str, dict]]:
    """Poll the service until none of `ids` is queued, starting or running: (perf_counter then, records)."""
    wanted = set(ids)
    pending = set(ids)
    deadline = time.perf_counter() + timeout
    while True:
        pending &= {j["id"] for j in list_jobs()}
        if not pending:
            end = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise BenchError(f"{len(pending)} of {len(ids)} jobs have not ended after {timeout:.0f} s "
                             f"(e.g. {sorted(pending)[0]})")
        time.sleep(period)
    records = {j["id"]: j for j in list_jobs(all="true") if j["id"] in wanted}
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
