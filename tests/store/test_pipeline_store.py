"""The pipeline rows (migration 0009): stages as intent with checked, compare-and-set moves; a stage's job
recorded with the job in one transaction; model versions marked by a pipeline's verdict."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from dlbox.jobs.state import BadTransition
from dlbox.pipelines.state import STAGES
from dlbox.store.db import Pipeline, Store
from tests.store.test_store import alembic_config, new_job, open_engine


def new_pipeline(pipeline_id: str = "p1", **fields) -> Pipeline:
    values = dict(id=pipeline_id, user="alice", state="queued", code_hash="c" * 64, trigger="cli",
                  cancel_requested=False, submitted_at=time.time())
    return Pipeline(**(values | fields))


def test_a_pipeline_starts_with_every_stage_pending_in_order(store):
    store.add_pipeline(new_pipeline(), list(STAGES))
    assert [(s.name, s.state, s.position) for s in store.stages("p1")] == [(n, "pending", i) for i, n in enumerate(STAGES)]
    assert store.get_pipeline("p1").state == "queued"
    assert store.referenced_snapshots() >= {"c" * 64}  # gc keeps a pipeline's snapshot


def test_stage_moves_follow_the_machine_and_stamp_times(store):
    store.add_pipeline(new_pipeline(), list(STAGES))
    row = store.stage_transition("p1", "build", "running")
    assert row.started_at and row.attempts == 1 and row.ended_at is None
    row = store.stage_transition("p1", "build", "succeeded", reason="image x", result={"id": "sha256:1"})
    assert row.ended_at and row.result == {"id": "sha256:1"} and row.reason == "image x"
    with pytest.raises(BadTransition):
        store.stage_transition("p1", "build", "running")
    with pytest.raises(BadTransition):
        store.stage_transition("p1", "test", "succeeded")  # never started
    assert store.get_pipeline("p1").state == "queued"


def test_pipeline_moves_are_checked_and_stamped(store):
    store.add_pipeline(new_pipeline(), list(STAGES))
    assert store.pipeline_transition("p1", "running").started_at
    ended = store.pipeline_transition("p1", "rejected", reason="acc: below")
    assert ended.ended_at and ended.reason == "acc: below"
    with pytest.raises(BadTransition):
        store.pipeline_transition("p1", "running")


def test_a_stage_job_is_recorded_with_the_job_once(store):
    store.add_pipeline(new_pipeline(), list(STAGES))
    first, second = new_job("j1"), new_job("j2")
    assert not store.start_stage_job("p1", "train", first)  # the stage is not running: nothing is added
    assert store.get_job("j1") is None
    store.stage_transition("p1", "train", "running")
    assert store.start_stage_job("p1", "train", first)
    assert not store.start_stage_job("p1", "train", second)  # a second submit finds the first: no job added
    assert store.get_job("j2") is None
    assert store.stages("p1")[STAGES.index("train")].job_ids == ["j1"]


def test_model_versions_carry_the_pipelines_verdict(store):
    fields = dict(files_hash="f" * 64, files_bytes=1, path="model", run_id="r", image_id="i", registered_by="alice",
                  registered_at=time.time(), metrics={"acc": 0.9}, signature={})
    store.add_model_version("alice", "digits", **fields)
    store.add_model_version("alice", "digits", verdict="rejected", verdict_detail={"passed": False},
                            pipeline_id="p9", **fields)
    model, row = store.version_of_pipeline("p9")
    assert (model.name, row.version, row.verdict, row.verdict_detail) == ("digits", 2, "rejected", {"passed": False})
    assert store.version_of_pipeline("nope") is None


def test_prefix_lookup_and_newest_pages(store):
    for i in range(3):
        store.add_pipeline(new_pipeline(f"abcd{i}", submitted_at=time.time() + i), list(STAGES))
    assert store.get_pipeline("abcd1").id == "abcd1"
    assert store.get_pipeline("abc") is None and store.get_pipeline("abcd%") is None
    assert [p.id for p in store.pipelines(newest=2)] == ["abcd1", "abcd2"]


def test_0009_downgrades_to_0008_keeping_versions_and_upgrades_again(db_url):
    from alembic import command

    engine = open_engine(db_url)
    cfg = alembic_config()
    try:
        with engine.begin() as c:
            cfg.attributes["connection"] = c
            command.upgrade(cfg, "0008")
            c.execute(sa.text("INSERT INTO models (id, owner, name, next_version, shared, created_at) "
                              "VALUES (1, 'a', 'm', 2, false, 1.0)"))
            c.execute(sa.text("INSERT INTO model_versions (model_id, version, files_hash, files_bytes, path, run_id, "
                              "image_id, git_dirty, registered_by, registered_at) "
                              "VALUES (1, 1, 'h', 1, 'model', 'r', 'i', false, 'a', 1.0)"))
            command.upgrade(cfg, "0009")
            assert {"pipelines", "pipeline_stages", "hook_projects"} <= set(sa.inspect(c).get_table_names())
            assert c.execute(sa.text("SELECT verdict FROM model_versions")).scalar_one() is None
            command.downgrade(cfg, "0008")
            names = set(sa.inspect(c).get_table_names())
            assert not names & {"pipelines", "pipeline_stages", "hook_projects"}
            assert "verdict" not in {col["name"] for col in sa.inspect(c).get_columns("model_versions")}
            assert "input_run" not in {col["name"] for col in sa.inspect(c).get_columns("jobs")}
            assert c.execute(sa.text("SELECT count(*) FROM model_versions")).scalar_one() == 1
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    store = Store(db_url)
    try:
        assert store.get_model("a", "m") is not None
    finally:
        store.engine.dispose()


def test_the_deploy_stage_names_the_deployments_that_follow_the_champion(store):
    from types import SimpleNamespace

    from dlbox.pipelines.deploy import deploy
    from dlbox.store.db import Deployment

    version = SimpleNamespace(owner="ann", name="digits", version=3)
    assert deploy(store, version) is None  # none yet: the stage says "skipped"
    for name, owner, model, alias in (("live", "ann", "digits", "champion"), ("pinned", "ann", "digits", None),
                                      ("canary", "ann", "digits", "canary"), ("bobs", "bob", "digits", "champion"),
                                      ("other", "ann", "mnist", "champion")):
        store.add_deployment(Deployment(name=name, owner=owner, model_owner=owner, model_name=model, alias=alias,
                                        port=18500 + len(name), host="127.0.0.1"))
    assert deploy(store, version) == "1 deployment(s) follow digits@champion and move to version 3: live"
