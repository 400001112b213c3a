import time

import pytest

from dlbox.jobs import runner as jobs
from dlbox.runs import diff as rundiff
from dlbox.jobs.state import ALLOWED, BadTransition, JobState, check_transition, final_state, Outages
from dlbox.store.db import Job, Store


def make_job(job_id, user="alice", cpus=1.0, submitted=0.0, memory=None, gpu_ids=None, state="queued",
             gpu_request=None):
    return Job(id=job_id, user=user, state=state, command=["true"], params={}, env={}, image_ref="i",
               image_id="sha256:x", git_dirty=False, mounts=[], volumes={}, cpus=cpus, memory=memory,
               gpu_ids=gpu_ids, gpu_request=gpu_request, cancel_requested=False, submitted_at=submitted)


CAP = jobs.Capacity(cpus=2, memory=None, gpus=[])


def test_the_finished_states_are_the_five_ends_of_a_job():
    assert {s.value for s in JobState if s.is_finished()} == {"succeeded", "failed", "cancelled", "oom-killed", "lost"}


@pytest.mark.parametrize("state", list(JobState))
def test_every_state_is_covered_by_the_machine(state):
    assert state in ALLOWED
    if state.is_finished():
        assert ALLOWED[state] == set()
        with pytest.raises(BadTransition):
            check_transition(ALLOWED, state, JobState.RUNNING)


def test_the_happy_path_and_no_shortcuts():
    check_transition(ALLOWED, JobState.QUEUED, JobState.STARTING)
    check_transition(ALLOWED, JobState.STARTING, JobState.RUNNING)
    check_transition(ALLOWED, JobState.RUNNING, JobState.SUCCEEDED)
    with pytest.raises(BadTransition):
        check_transition(ALLOWED, JobState.QUEUED, JobState.SUCCEEDED)
    with pytest.raises(BadTransition):
        check_transition(ALLOWED, JobState.RUNNING, JobState.QUEUED)
    with pytest.raises(BadTransition, match="^a job cannot go from running to queued$"):
        check_transition(ALLOWED, "running", "queued")  # values name the same states


def test_final_state_says_why():
    assert final_state(exit_code=0, oom_killed=False, cancel_requested=False) == (JobState.SUCCEEDED, "exit code 0")
    assert final_state(exit_code=2, oom_killed=False, cancel_requested=False)[0] == JobState.FAILED
    state, reason = final_state(exit_code=137, oom_killed=True, cancel_requested=False)
    assert state == JobState.OOM_KILLED and "out of memory" in reason
    assert final_state(exit_code=143, oom_killed=False, cancel_requested=True)[0] == JobState.CANCELLED


def test_a_job_the_engine_stopped_while_restarting_is_lost_not_failed():
    state, reason = final_state(exit_code=143, oom_killed=False, cancel_requested=False, engine_restart=True)
    assert state == JobState.LOST and "restart of the container engine" in reason and "143" in reason
    # a cancel or an OOM kill is what it is, whatever the engine did meanwhile
    assert final_state(exit_code=137, oom_killed=False, cancel_requested=True, engine_restart=True)[0] == \
        JobState.CANCELLED
    assert final_state(exit_code=137, oom_killed=True, cancel_requested=False, engine_restart=True)[0] == \
        JobState.OOM_KILLED


def test_an_engine_stop_is_a_stop_signal_inside_an_outage():
    outages = Outages()
    outages.spans = [(100.0, 110.0), (200.0, None)]
    assert outages.stopped_by_engine(143, 105.0, now=300.0)
    assert outages.stopped_by_engine(137, 250.0, now=300.0)  # the engine is not back yet: until now
    assert not outages.stopped_by_engine(143, 150.0, now=300.0)  # between outages: the job's own doing
    assert not outages.stopped_by_engine(1, 105.0, now=300.0)  # its own failure, during the outage
    assert not outages.stopped_by_engine(0, 105.0, now=300.0)
    assert not outages.stopped_by_engine(143, None, now=300.0)
    assert not Outages().stopped_by_engine(143, 105.0, now=300.0)


def test_outages_keep_one_open_at_a_time():
    outages = Outages()
    outages.back(5.0)  # the first connection closes nothing
    outages.gone(10.0)
    outages.gone(12.0)  # the same outage: reconnect attempts failing
    outages.back(20.0)
    outages.gone(30.0)
    assert outages.spans == [(10.0, 20.0), (30.0, None)]
    for i in range(20):
        outages.back(40.0 + 2 * i)
        outages.gone(41.0 + 2 * i)
    assert len(outages.spans) == Outages.KEEP and outages.spans[-1] == (79.0, None)  # bounded, newest kept


def test_finished_at_reads_the_engines_nanosecond_times():
    from dlbox.engine.api import finished_at

    assert finished_at({"State": {"FinishedAt": "2026-12-02T06:10:11.250000000Z"}}) == 1796191811.25
    assert finished_at({"State": {"FinishedAt": "2026-12-02T06:10:11Z"}}) == 1796191811.0
    assert finished_at({"State": {"FinishedAt": "0001-01-01T00:00:00Z"}}) is None  # never ended
    assert finished_at({"State": {"FinishedAt": "garbage"}}) is None
    assert finished_at({"State": {}}) is None

def test_queue_is_oldest_first_within_capacity():
    queued = [make_job("c", submitted=3), make_job("a", submitted=1), make_job("b", submitted=2)]
    assert [j.id for j in jobs.pick(queued, [], CAP)] == ["a", "b"]


def test_fair_share_puts_the_user_with_fewer_running_jobs_first():
    running = [make_job("r1", user="alice", state="running")]
    queued = [make_job("a2", user="alice", submitted=1), make_job("b1", user="bob", submitted=2)]
    assert [j.id for j in jobs.pick(queued, running, CAP)] == ["b1"]


def test_a_big_job_does_not_block_smaller_ones_behind_it():
    queued = [make_job("big", cpus=2, submitted=1), make_job("small", cpus=1, submitted=2)]
    running = [make_job("r", cpus=1, state="running")]
    assert [j.id for j in jobs.pick(queued, running, CAP)] == ["small"]


def test_memory_and_gpus_count_too():
    cap = jobs.Capacity(cpus=8, memory=4 * 1024**3, gpus=["0", "1"])
    running = [make_job("r", memory=3 * 1024**3, gpu_ids=["0"], state="running")]
    queued = [make_job("m", memory=2 * 1024**3, submitted=1), make_job("g", gpu_ids=["0"], submitted=2),
              make_job("ok", gpu_ids=["1"], submitted=3)]
    assert [j.id for j in jobs.pick(queued, running, cap)] == ["ok"]


def test_gpus_are_chosen_when_a_job_starts_from_those_free_then():
    cap = jobs.Capacity(cpus=8, memory=None, gpus=["0", "1", "2"])
    running = [make_job("r", gpu_ids=["0"], gpu_request=1, state="running")]
    queued = [make_job("one", gpu_request=1, submitted=1), make_job("two", gpu_request=2, submitted=2),
              make_job("named", gpu_request=["2"], submitted=3), make_job("cpu", submitted=4)]
    chosen = jobs.pick(queued, running, cap)
    # "one" takes GPU 1 (0 is busy); "two" cannot get two more; "named" wants 2, which is free; CPU-only runs
    assert [(j.id, j.gpu_ids) for j in chosen] == [("one", ["1"]), ("named", ["2"]), ("cpu", None)]


def test_a_gpu_a_workspace_holds_is_not_given_to_a_job():
    cap = jobs.Capacity(cpus=8, memory=None, gpus=["0", "1"])
    queued = [make_job("a", gpu_request=1, submitted=1), make_job("b", gpu_request=1, submitted=2)]
    chosen = jobs.pick(queued, [], cap, busy_gpus={"0"})
    assert [(j.id, j.gpu_ids) for j in chosen] == [("a", ["1"])]
    assert jobs.pick([make_job("all", gpu_request="all")], [], cap, busy_gpus={"1"}) == []
    assert jobs.pick([make_job("all", gpu_request="all")], [], cap)[0].gpu_ids == ["0", "1"]


def test_gpu_counting_and_choosing_are_pure():
    from dlbox.engine import gpus

    assert gpus.count("all", ["0", "1"]) == 2 and gpus.count(3, []) == 3 and gpus.count(["a"], []) == 1
    assert gpus.count(None, ["0"]) == 0
    assert gpus.choose(2, ["0", "1", "2"], {"1"}) == ["0", "2"]
    assert gpus.choose(2, ["0", "1"], {"1"}) is None
    assert gpus.choose(["1"], ["0", "1"], set()) == ["1"] and gpus.choose(["1"], ["0", "1"], {"1"}) is None
    assert gpus.choose(None, [], set()) == []


def test_secrets_are_redacted():
    env = jobs.redact({"PATH": "/bin", "HF_TOKEN": "x", "DB_PASSWORD": "y", "AWS_SECRET_ACCESS_KEY": "z"})
    assert env == {"PATH": "/bin", "HF_TOKEN": "***", "DB_PASSWORD": "***", "AWS_SECRET_ACCESS_KEY": "***"}


def test_store_transitions_go_through_the_machine(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/t.db")
    store.add_job(make_job("abcdef123456", submitted=time.time()))
    with pytest.raises(BadTransition):
        store.transition("abcdef123456", JobState.SUCCEEDED)
    store.transition("abcdef123456", JobState.STARTING)
    running = store.transition("abcdef123456", JobState.RUNNING, container_id="c1")
    assert running.started_at and running.container_id == "c1"
    done = store.transition("abcdef123456", JobState.SUCCEEDED, reason="exit code 0", exit_code=0)
    assert done.ended_at and store.get_job("abcd").id == "abcdef123456"  # a unique prefix finds it
    store.replace_metrics("abcdef123456", [{"step": 0, "name": "loss", "value": 1.5}])
    assert [(m.name, m.value) for m in store.metrics("abcdef123456")] == [("loss", 1.5)]


def test_runs_diff_sections():
    base = {"id": "a", "image": "i", "image_id": "sha256:1", "lock_hash": "l", "params": {"lr": "0.1"},
            "command": ["python", "t.py"], "git_commit": "c1", "git_dirty": False, "git_diff": None,
            "metrics": {"acc": 0.9}, "lock": None}
    other = {**base, "id": "b", "params": {"lr": "0.2", "epochs": "3"}, "git_commit": "c2", "metrics": {"acc": 0.95}}
    result = rundiff.diff(base, other)
    assert result["params"] == [{"name": "epochs", "a": None, "b": "3"}, {"name": "lr", "a": "0.1", "b": "0.2"}]
    assert result["code"] == [{"name": "git_commit", "a": "c1", "b": "c2"}]
    assert result["metrics"] == [{"name": "acc", "a": 0.9, "b": 0.95}]
    assert result["image"] == [] and result["packages"] == [] and result["command"] == []


def test_api_errors_have_one_shape(tmp_path):
    from fastapi.testclient import TestClient

    from dlbox.server import app as service

    store = Store(f"sqlite:///{tmp_path}/t.db")
    app = service.create_app(store, service.Loop(store, capacity=CAP))
    client = TestClient(app)
    missing = client.get("/api/jobs/ffffffffffff")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "no job 'ffffffffffff' (see `dlbox jobs`)"}}
    invalid = client.post("/api/jobs", json={"image": "x", "command": [], "bogus": 1})
    assert invalid.status_code == 422
    assert set(invalid.json()) == {"error"} and set(invalid.json()["error"]) == {"code", "message"}
    assert invalid.json()["error"]["message"].startswith("command:")
    assert client.get("/api/health").json()["ok"] is True
