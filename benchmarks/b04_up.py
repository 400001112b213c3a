"""Benchmark 4: `dlbox up` until Jupyter answers, against raw Jupyter containers.

Time from `dlbox up NAME --image dlbox/<preset>:latest` (Jupyter on, image present) until it
returns, which it does once Jupyter answers, against two raw `docker run -d -p ...`, each polled
the same way (GET /api/status with the token every 0.05 s from the moment `docker run` is launched):

  (a) the same preset image's Jupyter Server. Target: ratio <= 1.05.
  (b) the article's command: a plain hand-written TF 2.9.3 + Notebook 6 image on the same base
      (tf-notebook.Dockerfile, the equivalent of tensorflow/tensorflow:2.9.0-jupyter; built once
      and kept as dlbox-bench/tf-notebook:<content hash>, the build untimed). Target: ratio <= 1.0,
      dlbox as fast as the article's own command while giving hardening, limits, SSH and data.

Median of 5 of each, interleaved (ABC CBA ...), after one untimed warm-up of each; the absolute
medians are in the rows. Where dlbox's time goes (medians, from `up --json`'s timings): the CLI's
start (Python and dlbox imported: total less gather and apply), gather+plan, volumes, engine create
(with the service files) and start, then waiting for the first answer, of which the Jupyter import
is measured alone in the image (`import jupyter_server.serverapp` in a fresh container).
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import subprocess
from pathlib import Path

from common import (DOCKER, JUPYTER_PORT, QUICK, SHORT, WS_IMAGE, BenchError, Row, Runner, ca_bundle, check_ws_image,
                    dlbox_rm, dlbox_up, docker_env, docker_out, ratio, raw_name, raw_rm, raw_up, say, secs,
                    shared_base, verdict, write_spec, ws_name)

UP_TARGET = 1.05      # dlbox / the same image run raw (issue 16)
ARTICLE_TARGET = 1.0  # dlbox / the article's plain TF + Notebook 6 image (issue 16)
UP_RUNS = 2 if QUICK else 5
ARTICLE_DOCKERFILE = Path(__file__).resolve().parent / "tf-notebook.Dockerfile"
ARTICLE_REPO = "dlbox-bench/tf-notebook"
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 4
TITLE = "4. dlbox up until Jupyter answers"


def notebook_args(token: str) -> list[str]:
    """The article image's own command (`jupyter notebook ... --allow-root`), with a token of ours."""
    return ["notebook", "--notebook-dir=/tf", "--ip=0.0.0.0", f"--port={JUPYTER_PORT}", "--no-browser",
            "--allow-root", f"--NotebookApp.token={token}"]


def article_image(runner: Runner, work: Path) -> str:
    """The hand-written TF 2.9.3 + Notebook 6 image, built (untimed) unless its content tag exists.

    Its tag hashes the Dockerfile, the constraints (the preset's tested versions) and the base's ID,
    so a change to any of them builds anew; it carries no run label, so cleanup keeps it."""
    import yaml  # in the venv (dlbox needs it)

    spec = write_spec(runner, work / "b04-article", f"bench-article-{SHORT}")
    base = shared_base(runner, spec)
    constraints = "".join(f"{c}\n" for c in yaml.safe_load(spec.read_text()).get("constraints") or [])
    base_id = docker_out("image", "inspect", "--format", "{{.Id}}", base).strip()
    dockerfile = ARTICLE_DOCKERFILE.read_bytes()
    tag = f"{ARTICLE_REPO}:" + hashlib.sha256(dockerfile + b"\0" + constraints.encode() + b"\0"
                                               + base_id.encode()).hexdigest()[:12]
    if docker_out("image", "inspect", "--format", "{{.Id}}", tag).strip():
        return tag
    ca = ca_bundle()
    if ca is None:
        raise BenchError("no CA bundle for pip in the article image (set DLBOX_CA_BUNDLE)")
    context = work / "b04-article" / "context"
    context.mkdir()
    (context / "Dockerfile").write_bytes(dockerfile)
    (context / "constraints.txt").write_text(constraints)
    shutil.copyfile(ca, context / "ca-certificates.crt")
    say(f"4. building the article's image {tag} once (untimed, kept)")
    runner.run("build-article-image", [DOCKER, "build", "--force-rm", "--build-arg", f"BASE={base}", "-t", tag,
                                       str(context)], env=docker_env(), build=True)
    return tag


def bench(runner: Runner, work: Path) -> list[Row]:
    check_ws_image()
    article = article_image(runner, work)
    times: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    phases: list[dict] = []
    what = {"A": "dlbox up --image", "B": "docker run -d of the same image + poll /api/status",
            "C": f"docker run -d of {article} (the article's command) + poll /api/status"}

    def sample(which: str, tag: str) -> float:
        if which == "A":
            name = ws_name(tag)
            try:
                seconds = dlbox_up(runner, f"up-dlbox-{tag}", name, phases if tag != "upw" else None)
            except BaseException:
                dlbox_rm(runner, f"up-dlbox-{tag}-rm", name, after_failure=True)
                raise
            dlbox_rm(runner, f"up-dlbox-{tag}-rm", name)
            return seconds
        name = raw_name(f"{tag}{which.lower()}")
        try:
            if which == "B":
                return raw_up(runner, f"up-raw-{tag}", name)
            return raw_up(runner, f"up-article-{tag}", name, image=article, args=notebook_args)
        finally:
            raw_rm(name)

    say("4. warm-up (untimed): dlbox up, docker run of the same image, docker run of the article's image")
    say("   " + ", ".join(secs(sample(which, "upw")) for which in "ABC"))
    for i in range(1, UP_RUNS + 1):
        for which in ("ABC" if i % 2 else "CBA"):  # interleaved: drift in the machine's load hits all three
            say(f"4. {i}/{UP_RUNS}: {what[which]}")
            seconds = sample(which, f"up{i}")
            times[which].append(seconds)
            say(f"   {secs(seconds)}")
    a, b, c = (statistics.median(times[k]) for k in "ABC")
    where = breakdown(phases)
    say(f"4. where dlbox up's time goes: {where}")
    runs = f"median of {UP_RUNS}, interleaved, after 1 warm-up each; dlbox {' '.join(f'{t:.2f}' for t in times['A'])}"
    return [Row("4. dlbox up until Jupyter answers", secs(a), secs(b), ratio(a, b), f"ratio <= {UP_TARGET}",
                verdict(a / b <= UP_TARGET), f"{runs}, raw same image {' '.join(f'{t:.2f}' for t in times['B'])}; "
                f"{where}"),
            Row("4. dlbox up vs the article's TF 2.9.3 + Notebook 6 image", secs(a), secs(c), ratio(a, c),
                f"ratio <= {ARTICLE_TARGET}", verdict(a / c <= ARTICLE_TARGET),
                f"{runs}, raw {article} {' '.join(f'{t:.2f}' for t in times['C'])}; its Notebook 6 import "
                f"{fmt(import_s(article, 'notebook.notebookapp'))} alone")]


def fmt(seconds: float | None) -> str:
    return f"{seconds:.2f} s" if seconds is not None else "unmeasured"


def import_s(image: str, module: str) -> float | None:
    """`import MODULE` in a fresh container of the image (median of 3), seconds."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    found = []
    for _ in range(3):
        proc = subprocess.run([DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python", image,
                               "-c", code], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            found.append(float(proc.stdout.split()[-1]))
    return statistics.median(found) if found else None


def jupyter_import_s() -> float | None:
    """`import jupyter_server.serverapp` in a fresh container of the preset image (median of 3), seconds."""
    return import_s(WS_IMAGE, "jupyter_server.serverapp")


def breakdown(phases: list[dict]) -> str:
    """"cli start 0.25 s, gather+plan 0.02 s, volumes 0.02 s, create 0.09 s, start 0.35 s, ready 1.02 s (Jupyter import 0.71 s, first
    answer after it 0.31 s)": medians of the timed runs."""
    if not phases:
        return "no timings (an older dlbox?)"
    med = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
    imported = jupyter_import_s()
    ready = med.get("ready_s", 0.0)
    tail = (f" (Jupyter import {imported:.2f} s alone, first answer after it {max(0.0, ready - imported):.2f} s)"
            if imported is not None else "")
    cli = med["total_s"] - med.get("apply_s", 0.0) - med.get("gather_s", 0.0)
    return (f"cli start {cli:.2f} s, gather+plan {med.get('gather_s', 0.0):.2f} s, volumes {med.get('volumes_s', 0.0):.2f} s, "
            f"create {med.get('create_s', 0.0):.2f} s, start {med.get('start_s', 0.0):.2f} s, ready {ready:.2f} s"
            + tail)
