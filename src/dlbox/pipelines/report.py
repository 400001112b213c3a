"""A pipeline run's report: HTML and Markdown (Jinja2), with PNG plots (matplotlib, Agg) beside them.

Written to $DLBOX_HOME/pipelines/ID/report/: report.html, report.md, curves.png (the train run's metrics
that have steps), confusion.png (when the evaluate run wrote artifacts/predictions.json as
{"labels": [...], "predictions": [...]}). Nothing is uploaded anywhere. Everything the jobs wrote (metric
names, labels) is the job's to forge: HTML escapes it, Markdown gets it with its table syntax escaped, and
plot labels get no mathtext.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from dlbox import config
from dlbox.jobs import runner as jobs
from dlbox.store.db import Pipeline, Store

PREDICTIONS = "predictions.json"
MAX_PREDICTIONS_BYTES = 64 * 1024 * 1024
MAX_PREDICTIONS = 1_000_000
MAX_CLASSES = 50
MAX_CURVES = 12
FILES = ("report.html", "report.md", "curves.png", "confusion.png")


def folder(pipeline_id: str) -> Path:
    return config.home() / "pipelines" / pipeline_id / "report"


def _iso(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""


def _duration(start: float | None, end: float | None) -> str:
    if not start:
        return ""
    seconds = (end or time.time()) - start
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _num(value) -> str:
    if value is None:
        return "—"
    return f"{value:.6g}"


def _printable(text) -> str:
    return "".join(c if c.isprintable() else "?" for c in str(text))


def md(text) -> str:
    """Text for a Markdown table cell or line: no line breaks, table or code syntax of its own."""
    out = _printable(text)
    for char in "\\`*_[]<>|#":
        out = out.replace(char, "\\" + char)
    return out


def predictions(job_id: str) -> tuple[list, list] | str | None:
    """(labels, predictions) from the evaluate run's artifacts; a note when they are unusable; None if absent."""
    path = jobs.run_dir(job_id) / "artifacts" / PREDICTIONS
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{PREDICTIONS} could not be read: {exc.strerror}"
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_PREDICTIONS_BYTES + 1)
    if len(data) > MAX_PREDICTIONS_BYTES:
        return f"{PREDICTIONS} is over {MAX_PREDICTIONS_BYTES // 1024 // 1024} MiB: no confusion matrix"
    try:
        found = json.loads(data)
    except (ValueError, RecursionError):
        return f"{PREDICTIONS} is not JSON: no confusion matrix"
    labels = found.get("labels") if isinstance(found, dict) else None
    predicted = found.get("predictions") if isinstance(found, dict) else None
    if not isinstance(labels, list) or not isinstance(predicted, list) or len(labels) != len(predicted):
        return f"{PREDICTIONS} needs two lists of one length, labels and predictions: no confusion matrix"
    if len(labels) > MAX_PREDICTIONS:
        return f"{PREDICTIONS} holds over {MAX_PREDICTIONS} predictions: no confusion matrix"
    ok = all((isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and 0 < len(v) <= 64)
             for v in labels + predicted)
    if not ok:
        return f"{PREDICTIONS}: every label and prediction must be an integer or a short string"
    return labels, predicted


def confusion(labels: list, predicted: list) -> tuple[list, list[list[int]]] | str:
    classes = sorted(set(labels) | set(predicted), key=lambda v: (isinstance(v, str), v))
    if len(classes) > MAX_CLASSES:
        return f"{len(classes)} classes are over {MAX_CLASSES}: no confusion matrix"
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for truth, guess in zip(labels, predicted):
        matrix[index[truth]][index[guess]] += 1
    return classes, matrix


def _plain(text: str) -> str:
    """A label matplotlib shows as it is (no $mathtext$)."""
    return _printable(text).replace("$", r"\$")[:80]


def _save(fig, path: Path) -> None:
    partial = path.with_suffix(".png.new")
    fig.savefig(partial, format="png", dpi=100)
    os.replace(partial, path)


def plot_curves(series: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, points in list(series.items())[:MAX_CURVES]:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None,
                label=_plain(name))
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title("training curves (train run)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(classes: list, matrix: list[list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    size = max(4, min(12, 0.5 * len(classes) + 2))
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    names = [_plain(str(c))[:16] for c in classes]
    ax.set_xticks(range(len(classes)), names, rotation=90 if len(classes) > 10 else 0)
    ax.set_yticks(range(len(classes)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true label")
    ax.set_title("confusion matrix (evaluate run)")
    if len(classes) <= 20:
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                        color="white" if peak and count > peak / 2 else "black")
    fig.tight_layout()
    _save(fig, path)


def _rows(candidate: dict, champion: dict | None, verdict: dict | None) -> list[dict]:
    gated = {m["name"]: m for m in (verdict or {}).get("metrics", [])}
    names = list(gated) + sorted(n for n in candidate if n not in gated)
    rows = []
    for name in names:
        value = candidate.get(name)
        champ = (champion or {}).get(name)
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (value, champ) if v is not None)
        absolute = value - champ if finite and value is not None and champ is not None else None
        relative = absolute / abs(champ) if absolute is not None and champ else None
        m = gated.get(name)
        rows.append({"name": name, "value": _num(value), "champion": _num(champ),
                     "absolute": "—" if absolute is None else f"{absolute:+.6g}",
                     "relative": "—" if relative is None else f"{relative:+.2%}",
                     "verdict": "" if m is None else ("pass" if m["passed"] else "FAIL"),
                     "reason": "" if m is None else m.get("reason", "")})
    return rows


def context(store: Store, pipeline: Pipeline) -> tuple[dict, dict]:
    """What the templates show, and the plots to draw ({file: (function, args)})."""
    stages = store.stages(pipeline.id)
    runs = {s.name: (s.job_ids or [None])[0] for s in stages}
    evaluation = store.last_metrics([runs["evaluate"]])[runs["evaluate"]] if runs.get("evaluate") else {}
    champion_metrics, champion_ref = None, None
    if pipeline.champion_version is not None and pipeline.model_name:
        model = store.get_model(pipeline.user, pipeline.model_name)
        row = store.get_model_version(model.id, pipeline.champion_version) if model else None
        if row is not None:
            champion_metrics, champion_ref = dict(row.metrics or {}), f"{pipeline.model_name}:{row.version}"
    verdict = pipeline.verdict
    plots, notes = {}, []
    if runs.get("train"):
        series: dict[str, list] = {}
        for m in store.metrics(runs["train"]):
            if m.step is not None and math.isfinite(m.value):
                series.setdefault(m.name, []).append((m.step, m.value))
        spec_curves = _curves_wanted(pipeline)
        if spec_curves:
            series = {n: series[n] for n in spec_curves if n in series}
        if series:
            plots["curves.png"] = (plot_curves, (series,))
        else:
            notes.append("the train run logged no metrics with steps: no training curves")
    if runs.get("evaluate"):
        found = predictions(runs["evaluate"])
        if isinstance(found, str):
            notes.append(found)
        elif found is not None:
            made = confusion(*found)
            if isinstance(made, str):
                notes.append(made)
            else:
                plots["confusion.png"] = (plot_confusion, made)
    test = next((s for s in stages if s.name == "test"), None)
    junit = (test.result or {}).get("junit") if test else None
    version = None
    if pipeline.model_version is not None:
        version = {"ref": f"{pipeline.model_name}:{pipeline.model_version}",
                   "verdict": "blessed" if (verdict or {}).get("passed") else "rejected"}
    ctx = {
        "p": pipeline, "submitted": _iso(pipeline.submitted_at), "image_id": pipeline.image_id or "",
        "lock_hash": pipeline.lock_hash or "",
        "stages": [{"name": s.name, "state": s.state, "reason": s.reason or "", "runs": list(s.job_ids or []),
                    "duration": _duration(s.started_at, s.ended_at) if s.state != "pending" else ""}
                   for s in stages],
        "junit": junit, "rows": _rows(evaluation, champion_metrics, verdict), "verdict": verdict,
        "champion": champion_ref, "first_run": verdict is not None and verdict.get("champion") is None,
        "version": version, "runs": {k: v for k, v in runs.items() if v}, "notes": notes,
        "plots": sorted(plots), "generated": _iso(time.time()),
    }
    return ctx, plots


def _curves_wanted(pipeline: Pipeline) -> list[str]:
    from dlbox.pipelines.source import spec_of

    try:
        return list(spec_of(pipeline).pipeline.report.curves)
    except Exception:  # noqa: BLE001 - the spec was checked when the pipeline began; a report still comes
        return []


def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html"]), undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["md"] = md
    env.filters["short"] = lambda v, n=12: (v or "")[:n]
    return env


def write(store: Store, pipeline: Pipeline, *, outcome: tuple[str, str] | None = None) -> list[str]:
    """Write the report files (again: each is replaced whole); the names written. `outcome`: the state and
    reason the pipeline is about to end with (the report is its last stage)."""
    out = folder(pipeline.id)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    ctx, plots = context(store, pipeline)
    ctx["state"], ctx["reason"] = outcome or (pipeline.state, pipeline.reason or "")
    if outcome is not None:  # this is the report stage: it succeeds once these files are written
        for stage in ctx["stages"]:
            if stage["name"] == "report":
                stage["state"] = "succeeded"
    written = []
    for name, (draw, args) in plots.items():
        try:
            draw(*args, out / name)
            written.append(name)
        except Exception as exc:  # noqa: BLE001 - a plot that fails is a note, not a missing report
            ctx["notes"].append(f"{name} could not be drawn: {type(exc).__name__}")
            ctx["plots"].remove(name)
    env = _env()
    for name in ("report.html", "report.md"):
        text = env.get_template(name + ".j2").render(**ctx)
        partial = out / (name + ".new")
        partial.write_text(text)
        os.replace(partial, out / name)
        written.append(name)
    return written
