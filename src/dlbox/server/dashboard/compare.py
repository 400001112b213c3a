"""The run comparison page's content: two to eight runs' metric curves overlaid, their last values, and
what `dlbox runs diff` prints of each run against the first (the same runs_diff, through the caller's view).
"""

from __future__ import annotations

import re

from dlbox.errors import UsageError
from dlbox.runs.diff import runs_diff
from dlbox.server.dashboard import charts

MAX_RUNS = 8
RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")
SECTIONS = ("image", "packages", "params", "command", "code", "metrics")  # in the order the CLI prints them


def parse_ids(values: list[str]) -> list[str]:
    """The run ids of ?ids=A,B (or ?ids=A&ids=B, as the runs page's checkboxes send them), in order, once each."""
    parts = [part.strip() for value in values for part in value.split(",") if part.strip()]
    for part in parts:
        if not RUN_ID.fullmatch(part):
            raise UsageError(f"ids: {part[:40]!r} is not a run id (letters, digits, - and _, up to 32)")
    ids = list(dict.fromkeys(parts))
    if len(ids) > MAX_RUNS:
        raise UsageError(f"ids: at most {MAX_RUNS} runs at once (got {len(ids)})")
    if len(ids) < 2:
        raise UsageError("ids: give two or more runs to compare, e.g. /runs/compare?ids=A,B")
    return ids


def label(record: dict) -> str:
    return f"{record['id']} {record['name']}" if record.get("name") else record["id"]


def compare(where, ids: list[str]) -> dict:
    """Everything the page shows; `where` gives run records and snapshots (job_actions.RunsOf(history=False):
    the curves read the store's rows once, not as the record's list of dicts first)."""
    records = [where.run(run_id) for run_id in ids]  # NotFound (404) before anything else is read
    series = [charts.series_of((m.name, m.step, m.value) for m in where.history(run_id)) for run_id in ids]
    names = sorted({name for s in series for name in s} | {name for r in records for name in r["metrics"]})
    table = [{"name": name, "values": [r["metrics"].get(name) for r in records],
              "counts": [len(s.get(name, [])) for s in series]} for name in names]
    curves = []
    for name in names:
        if max(len(s.get(name, [])) for s in series) < 2:
            continue  # one value a run at most: the table's number says it all
        svg = charts.chart([(label(r), s.get(name, [])) for r, s in zip(records, series)], metric=name)
        if svg:
            curves.append({"name": name, "svg": svg})
    diffs = [runs_diff(where, ids[0], other) for other in ids[1:]]
    return {"runs": records, "labels": [label(r) for r in records], "styles": charts.STYLES, "table": table,
            "curves": curves, "diffs": diffs, "sections": SECTIONS}
