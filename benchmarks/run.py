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

Everything the benchmark creates carries the label dlbox.bench=<run id> and is removed at
the end; the specs get names of their own (bench-tf-<id>, bench-code-<id>) so the user's
dlbox/<preset> tags never move. The bootstrapped base is shared (default DLBOX_HOME) and kept.
The exit status is non-zero only when something failed to run; missed targets are marked.

Environment: BENCH_QUICK=1 (fewer repetitions), BENCH_PRESET (default tensorflow-2.9),
BENCH_KEEP=1 (keep the work directory with the specs and build logs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

QUICK = os.environ.get("BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")
KEEP = os.environ.get("BENCH_KEEP", "").strip().lower() not in ("", "0", "false", "no")
PRESET = os.environ.get("BENCH_PRESET", "tensorflow-2.9")
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
        self.created_layers: list[str] = []  # image IDs our builds made (not cache hits, not FROM)

    def run(self, name: str, cmd: list[str], *, env: dict | None = None, cwd: Path | None = None,
            build: bool = False) -> tuple[float, str]:
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
    docker_build(runner, "code-docker-warm1", context, base, f"code:{SHORT}-w", nocache=False)
    base_again, base_out_again = docker_build(runner, "code-docker-warm2", context, base, f"code:{SHORT}-w",
                                              nocache=False)

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


# --- cleanup ----------------------------------------------------------------------------------


def docker_out(*args: str) -> str:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def cleanup(runner: Runner | None) -> None:
    """Remove what this run created: by its label, then our own leftover layers of failed builds."""
    say(f"cleanup: removing containers and images labelled {LABEL}")
    containers = docker_out("ps", "-aq", "--filter", f"label={LABEL}").split()
    if containers:
        subprocess.run([DOCKER, "rm", "-f", "-v", *containers], capture_output=True)
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
    print("baselines: hand-written Dockerfile with DOCKER_BUILDKIT=0 docker build; python -c pass; docker images")
    print(fmt(header))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print(fmt(r))
    print()


def main() -> int:
    if not DLBOX:
        print("error: no dlbox next to this Python or on PATH; run `make venv`", file=sys.stderr)
        return 2
    if subprocess.run([DOCKER, "info"], capture_output=True).returncode != 0:
        print("error: no Docker Engine answers (`docker info` failed); run `make engine`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix=f"dlbox-bench-{SHORT}-"))
    say(f"run {RUN_ID}{' (quick)' if QUICK else ''}; work directory and logs in {work}")
    rows: dict[int, list[Row]] = {}
    errors = 0
    runner = None
    try:
        runner = Runner(work)
        benches = [(3, "3. CLI wall time", lambda: bench_cli(runner)),
                   (1, f"1. cold build, {PRESET}", lambda: bench_cold(runner, work)),
                   (2, "2. rebuild after a code change", lambda: bench_code(runner, work))]
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
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
