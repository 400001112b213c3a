"""The dashboard's SVG charts (dashboard/charts.py): shared axes, round ticks, escaping, bounds."""

import math
import re
from xml.etree import ElementTree

from hypothesis import given, settings
from hypothesis import strategies as st

from dlbox.server.dashboard import charts


def polylines(svg: str) -> list[list[tuple[float, float]]]:
    return [[tuple(map(float, p.split(","))) for p in found.split()]
            for found in re.findall(r'<polyline[^>]* points="([^"]+)"', svg)]


def test_ticks_are_round_and_cover_the_values():
    assert charts.ticks(0.13, 0.97) == (0.0, 1.0, [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0])
    low, high, marks = charts.ticks(3, 1234)
    assert (low, high) == (0, 1500) and marks == [0, 500, 1000, 1500]
    low, high, marks = charts.ticks(5.0, 5.0)  # flat: a band around the value
    assert low < 5.0 < high and len(marks) >= 2


def test_curves_of_several_runs_share_one_scale():
    svg = charts.chart([("a", [(0, 1.0), (10, 0.5)]), ("b", [(0, 0.5), (5, 0.0)])], metric="loss",
                       width=200, height=120)
    a, b = polylines(svg)
    assert a[1][1] == b[0][1]  # 0.5 is at the same height in both curves
    assert a[0][0] == b[0][0] and b[1][0] == (a[0][0] + a[1][0]) / 2  # step 5 halfway between 0 and 10
    assert a[0][1] < a[1][1]  # higher values higher up (smaller y)
    assert 'class="xlabel"' in svg and ">step</text>" in svg and 'class="ylabel"' in svg and ">loss</text>" in svg
    assert svg.count('class="legend"') == 2 and ">a</text>" in svg and ">b</text>" in svg
    y_ticks = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert y_ticks == ["0", "0.2", "0.4", "0.6", "0.8", "1"]


def test_one_curve_has_no_legend_and_a_single_point_is_a_dot():
    assert 'class="legend"' not in charts.chart([(None, [(0, 1.0), (1, 2.0)])], metric="m")
    dot = charts.chart([("a", [(3, 1.0)]), ("b", [(0, 0.0), (6, 2.0)])], metric="m")
    assert dot.count("<circle") == 1 and len(polylines(dot)) == 1
    assert charts.chart([("a", [])], metric="m") == "" and charts.chart([], metric="m") == ""


def test_every_label_is_escaped():
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    svg = charts.chart([(hostile, [(0, 1.0), (1, 2.0)]), ("b\u202e\x00", [(0, 0.0), (1, 1.0)])], metric=hostile,
                       xlabel=hostile)
    assert "<script" not in svg and "<img" not in svg and "&lt;script&gt;" in svg
    assert "\x00" not in svg and "\u202e" not in svg
    tree = ElementTree.fromstring(svg)  # well-formed: no label closed an element or an attribute
    tags = {element.tag for element in tree.iter()}
    assert tags <= {"svg", "g", "line", "text", "rect", "polyline", "title"}
    assert hostile in tree.get("aria-label") and tree.find("./g[@class='axis']/text[@class='ylabel']").text == hostile


def test_values_that_are_not_finite_are_left_out():
    got = charts.series_of([("loss", 0, 1.0), ("loss", 1, math.nan), ("loss", 2, math.inf), ("acc", None, 0.5),
                            ("acc", None, 0.7)])
    assert got == {"loss": [(0, 1.0)], "acc": [(0, 0.5), (1, 0.7)]}
    assert charts.chart([("a", [(0, -1.7e308), (1, 1.7e308)])], metric="m") == ""  # no float spans it
    huge = charts.chart([("a", [(0.0, 0.0)]), ("b", [(-1e300, 1.0), (4.2e306, 0.0)])], metric="m")
    assert huge and "inf" not in huge and "nan" not in huge  # found by the property below: scale, then multiply


def test_long_curves_are_thinned_keeping_their_extremes():
    points = [(i, math.sin(i / 50)) for i in range(20_000)] + [(20_000, 5.0)]
    kept = charts.thin(points)
    assert len(kept) <= charts.MAX_POINTS and (20_000, 5.0) in kept
    assert min(v for _, v in kept) == min(v for _, v in points)
    assert [x for x, _ in kept] == sorted(x for x, _ in kept)
    assert len(polylines(charts.chart([("a", points)], metric="m"))[0]) <= charts.MAX_POINTS


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(finite, finite), max_size=6), min_size=1, max_size=3))
def test_any_finite_values_make_a_chart_inside_its_box_or_none(curves):
    svg = charts.chart([(str(i), sorted(c)) for i, c in enumerate(curves)], metric="m", width=300, height=100)
    if not svg:
        return
    assert "nan" not in svg and "inf" not in svg
    for curve in polylines(svg):
        assert all(0 <= x <= 300 and 0 <= y <= 100 for x, y in curve)
