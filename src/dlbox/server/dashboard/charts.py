"""Metric charts as server-side SVG: one or more runs' curves of one metric on shared, labelled axes.

Pure: (label, points) in, markup out, no script. Every label is a job's to forge (metric names, run
names), so each is escaped here; values that are not finite are left out of the curves.
"""

from __future__ import annotations

import html
import math

# Okabe-Ito colours (told apart by colour-blind readers), each with a dash pattern of its own too.
STYLES = [("#0072b2", ""), ("#d55e00", "6 3"), ("#009e73", "2 2"), ("#cc79a7", "8 3 2 3"),
          ("#e69f00", "4 4"), ("#56b4e9", "1 3"), ("#000000", "10 2"), ("#999933", "3 1 1 1")]
MAX_POINTS = 300  # per curve: 150 columns of low and high; 8 curves x 2 charts stay in the 100 KB page budget
LABEL = 28  # characters of a legend label


def series_of(history) -> dict[str, list[tuple[float, float]]]:
    """metric name -> (step, value) in the order logged, from (name, step, value) triples; a value without a
    step gets its index."""
    found: dict[str, list[tuple[float, float]]] = {}
    counts: dict[str, int] = {}
    for name, step, value in history:
        index = counts[name] = counts.get(name, -1) + 1
        if math.isfinite(value):
            found.setdefault(name, []).append((step if step is not None else index, value))
    return found


def thin(points: list[tuple[float, float]], most: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most `most` points, keeping each bucket's lowest and highest value (the curve's shape)."""
    if len(points) <= most:
        return points
    buckets, kept = most // 2, []
    for i in range(buckets):
        part = points[i * len(points) // buckets:(i + 1) * len(points) // buckets]
        low, high = min(part, key=lambda p: p[1]), max(part, key=lambda p: p[1])
        kept.extend(sorted({low, high}, key=part.index))
    return kept


def ticks(lo: float, hi: float, most: int = 5) -> tuple[float, float, list[float]]:
    """A round step of 1, 2 or 5 times a power of ten: (axis low, axis high, tick values)."""
    if hi - lo <= abs(hi) * 1e-12 or (hi - lo) / most < 1e-300:  # flat (or below what a float can step)
        half = abs(lo) * 0.1 or 1.0
        lo, hi = lo - half, hi + half
    raw = (hi - lo) / most
    if not math.isfinite(raw):
        return lo, hi, []  # past the largest float: chart() draws nothing
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if (hi - lo) / (m * magnitude) <= most)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return first * step, last * step, [i * step for i in range(first, last + 1)]


def number(v: float) -> str:
    return f"{v:.4g}"


def text(value: object, most: int = LABEL) -> str:
    shown = "".join(c if c.isprintable() else "?" for c in str(value))
    return html.escape(shown if len(shown) <= most else shown[:most - 1] + "…", quote=True)


def chart(series: list[tuple[str | None, list[tuple[float, float]]]], *, metric: str, xlabel: str = "step",
          width: int = 640, height: int = 240) -> str:
    """One metric's curves (a label and its points each) on shared axes with ticks, the axes' labels
    and, for more than one curve, a legend. "" when nothing is finite enough to draw."""
    drawn = [(label, thin(points)) for label, points in series if points]
    if not drawn:
        return ""
    xs = [p[0] for _, pts in drawn for p in pts]
    ys = [p[1] for _, pts in drawn for p in pts]
    if not (math.isfinite(max(xs) - min(xs)) and math.isfinite(max(ys) - min(ys))):
        return ""  # a span past the largest float: no scale can show it
    x0, x1, xt = ticks(min(xs), max(xs))
    y0, y1, yt = ticks(min(ys), max(ys))
    if not all(math.isfinite(v) for v in (x0, x1, y0, y1, x1 - x0, y1 - y0)):
        return ""  # the rounded axis ran past the largest float
    left, right, top, bottom = 64, 12, 10, 42
    legend_rows = math.ceil(len(drawn) / 3) if len(drawn) > 1 else 0
    full = height + 18 * legend_rows + (6 if legend_rows else 0)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + plot_w * ((x - x0) / (x1 - x0))  # the ratio first: plot_w * a huge span overflows

    def py(y: float) -> float:
        return top + plot_h * (1 - (y - y0) / (y1 - y0))

    name = text(metric, 60)
    out = [f'<svg class="chart" viewBox="0 0 {width} {full}" width="{width}" height="{full}" role="img" '
           f'aria-label="{name} by {text(xlabel)}, {len(drawn)} curve{"s" if len(drawn) > 1 else ""}">',
           f'<g class="grid" stroke="#e6e8eb">']
    out += [f'<line x1="{left}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>' for t in yt]
    out.append('</g><g class="axis" font-size="11" fill="#57606a">')
    out += [f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{number(t)}</text>' for t in yt]
    out += [f'<text x="{px(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{number(t)}</text>' for t in xt]
    out.append(f'<text class="xlabel" x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" '
               f'text-anchor="middle">{text(xlabel)}</text>')
    out.append(f'<text class="ylabel" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{name}</text></g>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#8c959f"/>')
    for i, (label, points) in enumerate(drawn):
        colour, dash = STYLES[i % len(STYLES)]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        tip = f"<title>{text(label or metric)}: last {number(points[-1][1])}</title>"
        if len(points) == 1:
            out.append(f'<circle class="series" cx="{px(points[0][0]):.1f}" cy="{py(points[0][1]):.1f}" r="3.5" '
                       f'fill="{colour}">{tip}</circle>')
        else:
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
            out.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2"{dashed} '
                       f'points="{coords}">{tip}</polyline>')
    for i, (label, _) in enumerate(drawn if legend_rows else []):
        colour, dash = STYLES[i % len(STYLES)]
        x, y = left + (i % 3) * (plot_w / 3), height + 12 + 18 * (i // 3)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="legend"><line x1="{x:.1f}" x2="{x + 24:.1f}" y1="{y - 4}" y2="{y - 4}" '
                   f'stroke="{colour}" stroke-width="2"{dashed}/><text x="{x + 30:.1f}" y="{y}" font-size="11">'
                   f'{text(label)}</text></g>')
    out.append("</svg>")
    return "".join(out)
