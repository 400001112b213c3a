"""Gates: does a candidate's metrics pass the pipeline's declared bounds and changes against the champion?

Pure: metrics in, a verdict out. The semantics (also in docs/pipelines.md):

- `min` / `max`: the candidate's value must be >= min and <= max (the bound itself passes).
- `min_delta` against the champion, with `greater_is_better` (default true) saying which way is better.
  improvement = candidate - champion (greater is better) or champion - candidate (smaller is better).
  - `absolute: D`: improvement >= D.
  - `relative: R`: improvement / |champion| >= R, i.e. relative change = (candidate - champion) / |champion|,
    its sign turned when smaller is better.
  - both given: both must hold.
  - a champion value of 0 has no relative change: the relative check falls back to the absolute one
    (`absolute` when given; otherwise R is applied to the absolute improvement), and says so.
  - a negative D or R tolerates that much regression.
- a change is compared with a tolerance of 1e-9 x max(1, |threshold|), so that float arithmetic cannot
  fail a change that meets its threshold exactly on paper (0.91 - 0.90 meets absolute 0.01).
- a metric the candidate did not write fails: "metric not found" (a non-finite value fails too).
- no champion (the first run), or a champion without this metric: the change checks are skipped and
  the verdict says so; the bounds still apply.
The candidate passes when every check of every gated metric passes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Check:
    kind: str  # min, max, absolute, relative, found
    passed: bool | None  # None: skipped
    message: str


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    value: float | None
    champion: float | None
    absolute_change: float | None
    relative_change: float | None
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [c.message for c in self.checks if c.passed is False]
        return "; ".join(failed) if failed else "passed"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    metrics: list[MetricVerdict]
    champion: str | None  # e.g. "digits:3", None on the first run
    notes: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [f"{m.name}: {m.reason}" for m in self.metrics if not m.passed]
        return "; ".join(failed) if failed else "every gate passed"

    def to_json(self) -> dict:
        data = asdict(self)
        data["reason"] = self.reason
        for entry, metric in zip(data["metrics"], self.metrics):
            entry["reason"] = metric.reason
        return data


TOLERANCE = 1e-9


def meets(improvement: float, threshold: float) -> bool:
    """improvement >= threshold, within TOLERANCE x max(1, |threshold|)."""
    return improvement >= threshold - TOLERANCE * max(1.0, abs(threshold))


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _num(value: float) -> str:
    return f"{value:.6g}"


def relative_change(candidate: float, champion: float) -> float | None:
    """(candidate - champion) / |champion|; None for a champion of 0."""
    return None if champion == 0 else (candidate - champion) / abs(champion)


def check_metric(name: str, gate, value, champion_value, *, have_champion: bool) -> MetricVerdict:
    """One metric against its gate (a spec.model.Gate or anything with min, max, min_delta, greater_is_better)."""
    checks: list[Check] = []
    candidate = _finite(value)
    if candidate is None:
        why = "metric not found" if value is None else f"metric is not a finite number ({str(value)[:40]})"
        return MetricVerdict(name, None, _finite(champion_value), None, None, False,
                             [Check("found", False, why)])
    if gate.min is not None:
        ok = candidate >= gate.min
        checks.append(Check("min", ok, f"{_num(candidate)} {'>=' if ok else '<'} min {_num(gate.min)}"))
    if gate.max is not None:
        ok = candidate <= gate.max
        checks.append(Check("max", ok, f"{_num(candidate)} {'<=' if ok else '>'} max {_num(gate.max)}"))
    champion = _finite(champion_value)
    absolute = relative = None
    if champion is not None:
        absolute = candidate - champion
        relative = relative_change(candidate, champion)
    delta = gate.min_delta
    if delta is not None:
        if not have_champion:
            checks.append(Check("change", None, "no champion yet (first run): change gates skipped"))
        elif champion is None:
            checks.append(Check("change", None, "the champion has no value for this metric: change gates skipped"))
        else:
            better = 1.0 if gate.greater_is_better else -1.0
            improvement = better * absolute
            way = "" if gate.greater_is_better else " (smaller is better)"
            if delta.absolute is not None:
                ok = meets(improvement, delta.absolute)
                checks.append(Check("absolute", ok, f"change {absolute:+.6g} vs champion {_num(champion)}{way}: "
                                                    f"{'meets' if ok else 'below'} min_delta.absolute "
                                                    f"{_num(delta.absolute)}"))
            if delta.relative is not None:
                if relative is None:
                    if delta.absolute is not None:
                        checks.append(Check("relative", None, "champion is 0: no relative change; the absolute "
                                                              "check decides"))
                    else:
                        ok = meets(improvement, delta.relative)
                        checks.append(Check("relative", ok, f"champion is 0: min_delta.relative "
                                                            f"{_num(delta.relative)} applied to the absolute change "
                                                            f"{absolute:+.6g}{way}"))
                else:
                    ok = meets(better * relative, delta.relative)
                    checks.append(Check("relative", ok, f"relative change {relative:+.4%} vs champion "
                                                        f"{_num(champion)}{way}: {'meets' if ok else 'below'} "
                                                        f"min_delta.relative {delta.relative:+.4%}"))
    passed = all(c.passed is not False for c in checks)
    return MetricVerdict(name, candidate, champion, absolute, relative, passed, checks)


def evaluate(gates: dict, candidate: dict, champion: dict | None, *, champion_ref: str | None = None) -> Verdict:
    """Every gated metric of `candidate` (name -> value) against `gates` (name -> Gate) and the champion's
    metrics (None: there is no champion)."""
    results = [check_metric(name, gate, candidate.get(name), (champion or {}).get(name),
                            have_champion=champion is not None)
               for name, gate in gates.items()]
    notes = []
    if champion is None and any(g.min_delta is not None for g in gates.values()):
        notes.append("no champion yet (first run): change gates skipped")
    if not gates:
        notes.append("no gates declared: every candidate passes")
    return Verdict(all(r.passed for r in results), results, champion_ref if champion is not None else None, notes)


def table(candidate: dict, champion: dict | None, verdict: Verdict | None) -> list[dict]:
    """Rows for the report: every candidate metric (gated ones first) with the champion's value, changes
    and the gate's verdict ("" when not gated)."""
    gated = {m.name: m for m in (verdict.metrics if verdict else [])}
    names = list(gated) + sorted(n for n in candidate if n not in gated)
    rows = []
    for name in names:
        value = _finite(candidate.get(name))
        champ = _finite((champion or {}).get(name))
        absolute = value - champ if value is not None and champ is not None else None
        relative = relative_change(value, champ) if absolute is not None else None
        m = gated.get(name)
        rows.append({"name": name, "value": value, "champion": champ, "absolute": absolute, "relative": relative,
                     "verdict": "" if m is None else ("pass" if m.passed else "fail"),
                     "reason": "" if m is None else m.reason})
    return rows
