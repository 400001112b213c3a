"""Pipelines, the pure parts: gate semantics (docs/pipelines.md), the stage state machine, the pipeline
section of dlbox.yaml, the push webhook's signature and body, JUnit XML, the report's escaping."""

from __future__ import annotations

import hashlib
import hmac
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbox.errors import UsageError
from dlbox.jobs.state import BadTransition, check_transition
from dlbox.pipelines import gates, junit, state, webhook
from dlbox.spec import model as specs
from dlbox.spec.model import Delta, Gate


def gate(**kw) -> Gate:
    if "min_delta" in kw and isinstance(kw["min_delta"], dict):
        kw["min_delta"] = Delta(**kw["min_delta"])
    return Gate(**kw)


def one(g: Gate, value, champion=None, *, have_champion=True) -> gates.MetricVerdict:
    return gates.check_metric("acc", g, value, champion, have_champion=have_champion)


# --- bounds ----------------------------------------------------------------------------------------


def test_min_and_max_bounds_pass_on_the_bound_itself():
    assert one(gate(min=0.9), 0.9).passed
    assert not one(gate(min=0.9), 0.8999).passed
    assert one(gate(max=0.1), 0.1).passed
    assert not one(gate(max=0.1), 0.1001).passed
    assert one(gate(min=0.2, max=0.3), 0.25).passed


def test_a_missing_metric_fails_with_metric_not_found():
    verdict = gates.evaluate({"acc": gate(min=0.5)}, {"loss": 0.1}, None)
    assert not verdict.passed
    assert verdict.metrics[0].reason == "metric not found"
    assert "acc: metric not found" in verdict.reason


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.9", True])
def test_a_metric_that_is_no_finite_number_fails(value):
    result = one(gate(min=0.0), value)
    assert not result.passed and "not a finite number" in result.reason


def test_min_above_max_is_refused_in_the_spec():
    with pytest.raises(ValueError):
        Gate(min=1, max=0)


# --- change against the champion -----------------------------------------------------------------


def test_first_run_skips_change_gates_and_says_so_but_keeps_bounds():
    gs = {"acc": gate(min=0.5, min_delta={"absolute": 0.01})}
    verdict = gates.evaluate(gs, {"acc": 0.6}, None)
    assert verdict.passed and verdict.champion is None
    assert "no champion yet (first run): change gates skipped" in verdict.notes
    assert any(c.passed is None and "first run" in c.message for c in verdict.metrics[0].checks)
    assert not gates.evaluate(gs, {"acc": 0.4}, None).passed  # the bound still applies


def test_absolute_delta_greater_is_better_with_its_boundary():
    g = gate(min_delta={"absolute": 0.01})
    assert one(g, 0.91, 0.90).passed  # exactly the delta
    assert one(g, 0.95, 0.90).passed
    assert not one(g, 0.905, 0.90).passed
    assert not one(g, 0.80, 0.90).passed


def test_absolute_delta_smaller_is_better():
    g = gate(min_delta={"absolute": 0.1}, greater_is_better=False)
    assert one(g, 0.4, 0.5).passed  # loss fell by 0.1
    assert not one(g, 0.45, 0.5).passed
    assert not one(g, 0.6, 0.5).passed


def test_float_arithmetic_does_not_fail_a_change_that_meets_its_threshold_on_paper():
    assert one(gate(min_delta={"absolute": 0.1}, greater_is_better=False), 0.4, 0.5).passed  # 0.09999999999999998
    assert not one(gate(min_delta={"absolute": 0.1}), 0.5999, 0.5).passed


def test_a_negative_delta_tolerates_that_much_regression():
    g = gate(min_delta={"absolute": -0.02})
    assert one(g, 0.89, 0.90).passed
    assert not one(g, 0.87, 0.90).passed


def test_relative_change_is_over_the_champions_absolute_value():
    assert gates.relative_change(0.99, 0.90) == pytest.approx(0.1)
    assert gates.relative_change(-0.9, -1.0) == pytest.approx(0.1)  # (-0.9 - -1) / |-1|
    g = gate(min_delta={"relative": 0.05})
    assert one(g, 0.945, 0.90).passed  # +5 %
    assert not one(g, 0.94, 0.90).passed
    assert one(g, -0.95, -1.0).passed  # a negative champion: +5 % of |champion|
    assert not one(gate(min_delta={"relative": 0.05}, greater_is_better=False), 1.0, 1.02).passed  # -1.96 %
    assert one(gate(min_delta={"relative": 0.05}, greater_is_better=False), 0.9, 1.0).passed  # -10 %


def test_both_absolute_and_relative_must_hold():
    g = gate(min_delta={"absolute": 0.01, "relative": 0.5})
    result = one(g, 0.95, 0.90)
    assert not result.passed
    assert [c.kind for c in result.checks if c.passed is False] == ["relative"]


def test_a_zero_champion_falls_back_to_the_absolute_check():
    only_relative = gate(min_delta={"relative": 0.1})
    assert one(only_relative, 0.1, 0.0).passed  # the relative threshold on the absolute change
    assert not one(only_relative, 0.05, 0.0).passed
    assert "champion is 0" in one(only_relative, 0.05, 0.0).reason
    both = gate(min_delta={"absolute": 0.01, "relative": 100.0})
    result = one(both, 0.02, 0.0)
    assert result.passed  # the relative check is skipped, the absolute one decides
    assert any(c.kind == "relative" and c.passed is None for c in result.checks)
    assert result.relative_change is None


def test_a_champion_without_the_metric_skips_its_change_gate():
    result = gates.evaluate({"acc": gate(min_delta={"absolute": 0.0})}, {"acc": 0.5}, {"loss": 1.0},
                            champion_ref="m:1")
    assert result.passed and result.champion == "m:1"
    assert "champion has no value" in result.metrics[0].checks[0].message


def test_the_verdict_explains_every_metric_and_round_trips_as_json():
    gs = {"acc": gate(min=0.9), "loss": gate(max=0.5, greater_is_better=False)}
    verdict = gates.evaluate(gs, {"acc": 0.8, "loss": 0.4}, {"acc": 0.95}, champion_ref="d:2")
    data = json.loads(json.dumps(verdict.to_json()))
    assert data["passed"] is False and data["champion"] == "d:2"
    assert [m["name"] for m in data["metrics"]] == ["acc", "loss"]
    assert data["metrics"][0]["reason"].startswith("0.8 < min 0.9")
    assert data["metrics"][1]["reason"] == "passed"


def test_no_gates_pass_every_candidate_and_say_so():
    verdict = gates.evaluate({}, {"acc": 0.1}, {"acc": 0.9})
    assert verdict.passed and verdict.notes == ["no gates declared: every candidate passes"]


finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(value=finite, champion=finite, delta=st.floats(min_value=-10, max_value=10, allow_nan=False),
       better=st.booleans())
def test_property_absolute_gate_is_the_improvement_against_the_delta(value, champion, delta, better):
    g = gate(min_delta={"absolute": delta}, greater_is_better=better)
    improvement = (value - champion) if better else (champion - value)
    assert one(g, value, champion).passed == (improvement >= delta - gates.TOLERANCE * max(1, abs(delta)))


@settings(max_examples=300, deadline=None)
@given(value=finite, champion=finite.filter(lambda c: c != 0), delta=st.floats(min_value=-5, max_value=5,
                                                                                  allow_nan=False), better=st.booleans())
def test_property_relative_gate_matches_its_formula(value, champion, delta, better):
    g = gate(min_delta={"relative": delta}, greater_is_better=better)
    relative = (value - champion) / abs(champion)
    assert one(g, value, champion).passed == gates.meets(relative if better else -relative, delta)


@settings(max_examples=200, deadline=None)
@given(value=finite, champion=finite, better=st.booleans())
def test_property_flipping_direction_swaps_candidate_and_champion(value, champion, better):
    a = one(gate(min_delta={"absolute": 0.0}, greater_is_better=better), value, champion).passed
    b = one(gate(min_delta={"absolute": 0.0}, greater_is_better=not better), champion, value).passed
    assert a == b


@settings(max_examples=200, deadline=None)
@given(value=finite, low=finite, high=finite)
def test_property_bounds_pass_exactly_inside(value, low, high):
    low, high = min(low, high), max(low, high)
    assert one(gate(min=low, max=high), value).passed == (low <= value <= high)


@settings(max_examples=200, deadline=None)
@given(metrics=st.dictionaries(st.sampled_from(["a", "b", "c"]), finite), gated=st.sets(st.sampled_from(["a", "b", "c"])))
def test_property_a_verdict_passes_only_if_every_metric_does_and_missing_ones_fail(metrics, gated):
    verdict = gates.evaluate({n: gate(min=-1e10) for n in gated}, metrics, None)
    assert verdict.passed == all(n in metrics for n in gated)
    for m in verdict.metrics:
        assert m.passed == (m.name in metrics)


# --- the state machine --------------------------------------------------------------------------


def test_stage_order_and_a_failure_skips_all_but_the_report():
    stages = {n: "succeeded" for n in ("build", "test")} | {n: "pending" for n in state.STAGES[2:]}
    assert state.next_stage(stages) == "train"
    stages["train"] = "failed"
    assert state.after_failure(stages) == ["evaluate", "gate", "register", "deploy"]
    for n in state.after_failure(stages):
        stages[n] = "skipped"
    assert state.next_stage(stages) == "report"
    stages["report"] = "succeeded"
    assert state.next_stage(stages) is None
    assert state.final(stages, None) is state.PipelineState.FAILED


def test_final_states_and_exit_codes():
    done = {n: "succeeded" for n in state.STAGES}
    assert state.final(done, True) is state.PipelineState.PROMOTED
    assert state.final(done, False) is state.PipelineState.REJECTED
    assert state.final(done, True, cancelled=True) is state.PipelineState.CANCELLED
    assert {state.EXIT[s] for s in state.EXIT} == {0, 1, 3}
    assert state.EXIT[state.PipelineState.REJECTED] == 3


@pytest.mark.parametrize("old,new", [("pending", "succeeded"), ("succeeded", "running"), ("failed", "pending"),
                                     ("skipped", "running")])
def test_illegal_stage_moves_are_refused(old, new):
    with pytest.raises(BadTransition, match=f"^a stage cannot go from {old} to {new}$"):
        check_transition(state.STAGE_ALLOWED, old, new)


def test_finished_pipelines_do_not_move():
    for end in ("promoted", "rejected", "failed", "cancelled"):
        for new in state.PipelineState:
            with pytest.raises(BadTransition, match=f"^a pipeline cannot go from {end} to {new.value}$"):
                check_transition(state.PIPELINE_ALLOWED, end, new.value)
    check_transition(state.PIPELINE_ALLOWED, "queued", "running")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([s.value for s in state.StageState]), min_size=len(state.STAGES),
                max_size=len(state.STAGES)))
def test_property_next_stage_is_never_after_an_unfinished_one(states):
    stages = dict(zip(state.STAGES, states))
    chosen = state.next_stage(stages)
    if chosen is None:
        assert all(state.StageState(s).is_finished() for s in states)
    else:
        before = state.STAGES[:state.STAGES.index(chosen)]
        assert all(state.StageState(stages[n]).is_finished() for n in before)


# --- the pipeline section of dlbox.yaml ------------------------------------------------------------

BASE = "name: demo\nbase:\n  debian: bullseye\n"


def test_a_short_pipeline_section_gets_its_defaults():
    spec = specs.parse(BASE + "pipeline:\n  train: {command: python train.py --epochs 3}\n"
                              "  evaluate: {command: [python, evaluate.py]}\n")
    p = spec.pipeline
    assert p.train.command == ["python", "train.py", "--epochs", "3"]
    assert p.evaluate.command == ["python", "evaluate.py"]
    assert p.test is None and p.gate == {} and p.register_.path == "model" and p.register_.format == "savedmodel"
    assert p.deploy.enabled is True
    assert spec.environment_hash() == specs.parse(BASE).environment_hash()  # the pipeline is not the image


def test_every_pipeline_error_is_listed_with_its_line_and_a_did_you_mean():
    text = BASE + ("pipeline:\n"
                   "  train:\n"
                   "    command: python train.py\n"
                   "  evaluate:\n"
                   "    comand: python evaluate.py\n"
                   "  gate:\n"
                   "    accuracy: {min: 0.9, mni: 3}\n"
                   "    'bad name!': {min: 1}\n"
                   "  regster: {}\n")
    with pytest.raises(UsageError) as info:
        specs.parse(text)
    lines = str(info.value).splitlines()
    assert lines[0] == "dlbox.yaml: 5 errors"
    assert "dlbox.yaml:7: pipeline.evaluate.command: required key is missing" in lines
    assert any(line.startswith("dlbox.yaml:8: pipeline.evaluate.comand: unknown key; did you mean `command`?")
               for line in lines)
    assert any(line.startswith("dlbox.yaml:10: pipeline.gate.accuracy.mni: unknown key; did you mean `min`?")
               for line in lines)
    assert any(line.startswith("dlbox.yaml:11: pipeline.gate['bad name!']:") for line in lines)
    assert any(line.startswith("dlbox.yaml:12: pipeline.regster: unknown key; did you mean `register`?")
               for line in lines)


@pytest.mark.parametrize("bad", [
    "train: {command: []}", "train: {command: 'python \"unterminated'}", "train: {command: [\"a\\nb\"]}",
    "train: {command: x, timeout: 0}", "train: {command: x, cpus: .nan}",
    "gate: {acc: {min_delta: {}}}", "gate: {acc: {min: .inf}}", "register: {format: onnx}",
    "register: {model: 'UPPER'}",
])
def test_hostile_or_wrong_pipeline_values_are_refused_in_one_error_each(bad):
    text = BASE + "pipeline:\n  train: {command: python t.py}\n  evaluate: {command: python e.py}\n  " + bad + "\n"
    with pytest.raises(UsageError) as info:
        specs.parse(text.replace("  train: {command: python t.py}\n  train:", "  train:"))
    assert "pipeline." in str(info.value)


# --- the push webhook ---------------------------------------------------------------------------


def test_the_signature_is_githubs_hmac_sha256_and_anything_else_fails():
    body, secret = b'{"after": "x"}', b"s3cret"
    good = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert webhook.sign(secret, body) == good
    assert webhook.verify(secret, body, good)
    assert not webhook.verify(secret, body + b" ", good)
    assert not webhook.verify(b"other", body, good)
    for bad in (None, "", "sha256=", good.upper(), good[:-1], "sha1=" + good[7:], "x" * 10_000, good + "\n\x00"):
        assert not webhook.verify(secret, body, bad)


@settings(max_examples=100, deadline=None)
@given(secret=st.binary(min_size=1, max_size=64), body=st.binary(max_size=2048), other=st.binary(max_size=2048))
def test_property_only_the_bodys_own_signature_verifies(secret, body, other):
    assert webhook.verify(secret, body, webhook.sign(secret, body))
    if other != body:
        assert not webhook.verify(secret, other, webhook.sign(secret, body))


def test_push_bodies_are_read_as_hostile():
    sha = "a" * 40
    ok = json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "team/digits"}}).encode()
    assert webhook.repository_of(ok) == "team/digits"
    assert webhook.push_of(ok) == {"after": sha, "ref": "refs/heads/main"}
    for body in (b"", b"[]", b"{", b"null", b'{"repository": "x"}', b'{"repository": {"full_name": "../../etc"}}',
                 json.dumps({"repository": {"full_name": "a/b\nc"}}).encode(), b"[" * 100_000):
        assert webhook.repository_of(body) is None
    for after in ("0" * 40, "A" * 40, "abc", 5, None, "--upload-pack=x"):
        assert webhook.push_of(json.dumps({"after": after, "ref": "refs/heads/x"}).encode()) is None
    assert webhook.push_of(json.dumps({"after": sha, "ref": "refs/heads/$(rm)"}).encode())["ref"] is None


# --- JUnit XML and the report's text ------------------------------------------------------------


def test_junit_counts_and_failures():
    xml = (b'<testsuites><testsuite name="s"><testcase classname="t" name="a"/>'
           b'<testcase classname="t" name="b"><failure message="x"/></testcase>'
           b'<testcase name="c"><skipped/></testcase><testcase name="d"><error/></testcase></testsuite></testsuites>')
    result = junit.parse(xml)
    assert (result["tests"], result["failures"], result["errors"], result["skipped"]) == (4, 1, 1, 1)
    assert result["failed"] == ["t::b", "d"]
    assert junit.summary(result) == "4 tests: 1 passed, 1 failed, 1 errors, 1 skipped"


@pytest.mark.parametrize("xml", [
    b"not xml", b"<html/>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><testsuite>&b;</testsuite>',
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><testsuite>&e;</testsuite>',
])
def test_hostile_junit_is_refused_in_one_line(xml):
    with pytest.raises(ValueError) as info:
        junit.parse(xml)
    assert "\n" not in str(info.value)


def test_markdown_cells_cannot_break_the_table():
    from dlbox.pipelines.report import md

    text = md("a|b\n`c`<script>[x](y)")
    assert "\n" not in text and "|" not in text.replace("\\|", "")
    assert "<" not in text.replace("\\<", "")


def test_confusion_matrix_counts():
    from dlbox.pipelines.report import confusion

    classes, matrix = confusion([0, 1, 1, 2], [0, 1, 2, 2])
    assert classes == [0, 1, 2] and matrix == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert isinstance(confusion(list(range(60)), list(range(60))), str)  # too many classes: a note


def test_finite_helper_never_accepts_nan():
    assert gates._finite(math.nan) is None and gates._finite(1) == 1.0
