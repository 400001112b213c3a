"""Idle stop's decision (workspaces/idleness.py) and its parsing of the probe, without an engine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbox.errors import UsageError
from dlbox.sizes import format_duration, parse_duration
from dlbox.workspaces import idle, idleness
from dlbox.workspaces.idleness import Sample


def quiet(at: float, cpu: float = 0.0, **kw) -> Sample:
    return Sample(at=at, cgroup_cpu=cpu, own_cpu={1: 0.0}, **kw)


def run(samples: list[Sample]) -> float | None:
    since, prev = None, None
    for cur in samples:
        since, prev = idleness.advance(since, prev, cur), cur
    return since


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("off", 0),
                                           (" 2H ", 7200), (45, 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "2", "1.5h", "-1m", "0s", "2h30m", "", "99999999s", True])
def test_bad_durations_say_what_is_wanted(text):
    with pytest.raises(ValueError, match="duration|negative"):
        parse_duration(text)


def test_duration_flag_is_a_one_line_usage_error():
    from dlbox.cli.workspaces import duration_flag

    with pytest.raises(UsageError) as caught:
        duration_flag("soon", "--idle-stop")
    assert str(caught.value).startswith("--idle-stop: 'soon' is not a duration") and "\n" not in str(caught.value)
    assert duration_flag(None, "--idle-stop") is None and duration_flag("90s", "--idle-stop") == 90


def test_formatting():
    assert [format_duration(s) for s in (90, 1800, 7200, 45)] == ["90s", "30m", "2h", "45s"]
    assert idleness.stopped_text({"reason": "idle", "idle_for_s": 7200}) == "stopped: idle for 2h"
    assert idleness.stopped_text(None) is None


def test_quiet_samples_become_idle_after_the_duration():
    since = run([quiet(t) for t in range(0, 31, 5)])
    assert since == 0 and idleness.is_idle(since, 30, 30) and not idleness.is_idle(since, 29, 30)
    assert not idleness.is_idle(since, 10**9, 0)  # 0: off


@pytest.mark.parametrize("busy", [
    {"kernels_busy": 1}, {"ssh_sessions": 1}, {"jupyter_unreachable": True},
])
def test_each_kind_of_activity_restarts_the_clock(busy):
    samples = [quiet(t) for t in range(0, 20, 5)] + [quiet(20, **busy)] + [quiet(t) for t in range(25, 45, 5)]
    since = run(samples)
    assert since == 20 and not idleness.is_idle(since, 40, 30) and idleness.is_idle(since, 50, 30)


def test_jupyter_activity_moves_the_clock_to_its_own_time():
    since = run([quiet(0), quiet(5), quiet(10, jupyter_activity=8.0), quiet(15, jupyter_activity=8.0)])
    assert since == 8.0


def test_cpu_of_other_processes_counts_but_dlbox_services_do_not():
    own_busy = [Sample(at=t, cgroup_cpu=t * 0.9, own_cpu={1: 0.0, 7: t * 0.9}) for t in range(0, 30, 5)]
    assert run(own_busy) == 0  # jupyter or sshd working hard is not the user's work
    training = [Sample(at=t, cgroup_cpu=t * 0.9, own_cpu={1: 0.0}) for t in range(0, 30, 5)]
    assert run(training) == 25  # a nohup'd train.py: active at every sample
    light = [Sample(at=t, cgroup_cpu=t * 0.01, own_cpu={1: 0.0}) for t in range(0, 30, 5)]
    assert run(light) == 0  # 1% of a CPU (the probe, a health check) is quiet


def test_a_gap_or_a_restart_starts_the_clock_again():
    assert run([quiet(0), quiet(5), quiet(5 + idleness.MAX_GAP + 1)]) == 5 + idleness.MAX_GAP + 1
    assert run([quiet(0), quiet(5, cpu=9.0), quiet(10, cpu=9.0), quiet(15, cpu=0.1)]) == 15


# A sample: at each step time moves 1-20 s, and the workspace is quiet or active in one way.
KINDS = st.sampled_from(["quiet", "quiet", "quiet", "kernel", "ssh", "cpu", "api"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), KINDS), min_size=1, max_size=60), st.integers(10, 120))
def test_never_idle_before_the_duration_after_the_last_activity(steps, duration):
    """Whatever happens, a workspace is called idle only when nothing was active in the last
    `duration` seconds, and it is called idle once a quiet stretch (after a first sample) lasts that long."""
    at, cpu, since, prev, last_active = 0.0, 0.0, None, None, 0.0
    for gap, kind in steps:
        at += gap
        cpu += gap * (0.5 if kind == "cpu" else 0.0)
        cur = Sample(at=at, cgroup_cpu=cpu, own_cpu={1: 0.0}, kernels_busy=int(kind == "kernel"),
                     ssh_sessions=int(kind == "ssh"), jupyter_activity=at - 1 if kind == "api" else None)
        if prev is None or kind in ("kernel", "ssh", "cpu"):
            last_active = at
        elif kind == "api":
            last_active = max(last_active, at - 1)
        since, prev = idleness.advance(since, prev, cur), cur
        assert since <= at
        assert idleness.is_idle(since, at, duration) == (at - last_active >= duration)


PROBE_OUTPUT = """\
@cg2
@cg1
12345678900
@tcp
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1
   1: 0200A8C0:08AE 0100A8C0:D3C2 01 00000000:00000000 00:00000000 00000000  1000        0 2 1
   2: 0200A8C0:22B8 0100A8C0:D3C4 01 00000000:00000000 00:00000000 00000000  1000        0 3 1
@self 90
@stat
1 (bash) S 0 1 1 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 1 0 1 1 1
7 (jupyter-server) S 1 1 1 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 1 0 1 1 1
8 (sshd) S 1 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 1 1 1
40 (python) R 1 1 1 0 -1 4194560 1 0 0 0 900 100 0 0 20 0 1 0 1 1 1
41 (my (odd) name) S 1 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 1 1 1
91 (cat) R 90 1 1 0 -1 4194560 1 0 0 0 0 1 0 0 20 0 1 0 1 1 1
"""


def test_probe_parsing_cgroup_v1_ssh_and_own_processes():
    found = idle.parse_probe(PROBE_OUTPUT, at=5.0)
    assert found.cgroup_cpu == pytest.approx(12.3456789)
    assert found.ssh_sessions == 1  # the listener and the other port's connection are not sessions
    assert found.own_cpu == {1: 0.08, 7: 2.0, 8: 0.02, 91: 0.01}  # not python (pid 40) nor "my (odd) name"


def test_probe_parsing_cgroup_v2():
    found = idle.parse_probe("@cg2\nusage_usec 2500000\nuser_usec 1\n@cg1\n@tcp\n@self 3\n@stat\n", at=1.0)
    assert found.cgroup_cpu == 2.5 and found.ssh_sessions == 0


def test_duration_of_labels_and_the_server_default():
    assert idle.duration_of({"dlbox.idle-stop": "90"}, 3600) == 90
    assert idle.duration_of({"dlbox.idle-stop": "0"}, 3600) == 0  # off, whatever the server says
    assert idle.duration_of({}, 3600) == 3600 and idle.duration_of({}, None) == 0


def test_spec_idle_stop_errors_name_file_and_line_with_the_others():
    from dlbox.spec import model

    with pytest.raises(UsageError) as caught:
        model.parse("name: d\nbase:\n  debian: bullseye\nworkspace:\n  idle_stop: soon\n  resources:\n"
                    "    memory: lots\n")
    lines = str(caught.value).splitlines()
    assert lines[1].startswith("dlbox.yaml:5: workspace.idle_stop: 'soon' is not a duration")
    assert lines[2].startswith("dlbox.yaml:7: workspace.resources.memory")
    parsed = model.parse("name: d\nbase:\n  debian: bullseye\nworkspace:\n  idle_stop: 30m\n")
    assert parsed.workspace.idle_stop == 1800
    assert model.parse("name: d\nbase:\n  debian: bullseye\njob:\n  resources: {}\n").workspace.idle_stop is None


def test_the_server_wide_default_reaches_the_loops_watcher(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dlbox.cli.main import cli
    from dlbox.server import app as service
    from dlbox.store.db import Store

    seen = {}
    monkeypatch.setattr(service, "serve", lambda **kw: seen.update(kw))  # the flag's value, not a server run
    assert CliRunner().invoke(cli, ["server", "--idle-stop", "30m"]).exit_code == 0
    assert seen["idle_stop"] == 1800
    loop = service.Loop(Store(f"sqlite:///{tmp_path}/t.db"), idle_stop=seen["idle_stop"])
    assert loop.idle.default == 1800 and idle.duration_of({}, loop.idle.default) == 1800
