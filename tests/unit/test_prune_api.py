"""POST /api/images/prune in-process (server mode): admins only, bad input named, and the needs read
from a real store. The engine's two listings (images, containers) and its removal are faked at the
engine's edge; tests/engine/test_prune.py runs the same route on the real engine."""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient

from dlbox.server import accounts
from dlbox.store.db import Deployment, Job, Pipeline, Store


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
def api(tmp_path, app_of, monkeypatch):
    from dlbox.build import images
    from dlbox.engine import api as engine

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    tokens = {}
    for name, admin in (("ann", False), ("boss", True)):
        accounts.add_user(store, name, admin=admin)
        tokens[name] = {"Authorization": f"Bearer {accounts.create_token(store, name)[1]}"}
    listed = [{"id": digest(n), "ref": f"dlbox/tf:{n}", "name": "tf", "created": f"2026-12-01T00:00:0{n}Z",
               "tags": [f"dlbox/tf:{n}"]} for n in range(1, 9)]
    monkeypatch.setattr(images, "list_images", lambda include_untagged=False: listed)
    monkeypatch.setattr(engine, "container_images", lambda: [
        {"Id": "c1", "Name": "dlbox-ws-ann-nb", "State": "exited", "ImageID": digest(1),
         "Labels": {"dlbox.workspace": "nb"}},
        {"Id": "c2", "Name": "someone-elses", "State": "running", "ImageID": digest(2), "Labels": {}}])
    removed = []
    monkeypatch.setattr(engine, "remove_image", lambda ref, force=False: removed.append((ref, force)))
    now = time.time()
    store.add_job(Job(id="q1", user="ann", state="queued", command=["true"], params={}, env={}, image_ref="x",
                      image_id=digest(3), submitted_at=now))
    store.add_job(Job(id="d1", user="ann", state="succeeded", command=["true"], params={}, env={}, image_ref="x",
                      image_id=digest(4), submitted_at=now))  # a finished job needs nothing
    store.add_model_version("ann", "digits", files_hash="f" * 64, files_bytes=1, path="model", run_id="d1",
                            image_id=digest(5), registered_by="ann", registered_at=now)
    store.add_pipeline(Pipeline(id="p1", user="ann", state="running", code_hash="c" * 64, trigger="cli",
                                image_id=digest(6)[7:19], submitted_at=now), ["build"])
    store.add_deployment(Deployment(name="web", owner="ann", model_owner="ann", model_name="digits", port=18501,
                                    host="127.0.0.1", versions=[1]))
    return TestClient(app_of(store, mode="server")), tokens, removed


def test_only_an_admin_may_prune(api):
    client, tokens, removed = api
    refused = client.post("/api/images/prune", json={"keep": 1}, headers=tokens["ann"])
    assert refused.status_code == 403 and "only an admin may prune" in refused.json()["error"]["message"]
    assert removed == []


@pytest.mark.parametrize("body, field", [({"keep": -1}, "keep"), ({}, "keep"), ({"keep": 1, "force": True}, "force"),
                                         ({"keep": 1, "name": ""}, "name")])
def test_bad_input_is_named_and_changes_nothing(api, body, field):
    client, tokens, removed = api
    answer = client.post("/api/images/prune", json=body, headers=tokens["boss"])
    assert answer.status_code in (400, 422) and field in answer.text and removed == []


def test_prune_keeps_what_the_store_and_the_containers_need_and_removes_the_rest_unforced(api):
    client, tokens, removed = api
    dry = client.post("/api/images/prune", json={"keep": 1, "dry_run": True}, headers=tokens["boss"]).json()
    assert removed == [] and dry["dry_run"]
    kept = {k["id"]: k["reasons"] for k in dry["kept"]}
    assert kept == {
        digest(8): ["one of the newest 1 of tf"],
        digest(1): ["workspace nb (exited) uses it"],
        digest(2): ["container someone-elses (running) uses it"],
        digest(3): ["job q1 is queued"],
        digest(5): ["model ann/digits:1 was trained in it", "deployment web serves digits:1"],
        digest(6): ["pipeline p1 is running"],
    }
    assert sorted(r["id"] for r in dry["remove"]) == sorted([digest(4), digest(7)])
    done = client.post("/api/images/prune", json={"keep": 1}, headers=tokens["boss"]).json()
    assert sorted(removed) == sorted([(digest(4), False), (digest(7), False)])  # by ID, never forced
    assert all(r["removed"] for r in done["remove"]) and done["failed"] == 0
    only = client.post("/api/images/prune", json={"keep": 0, "name": "other", "dry_run": True},
                       headers=tokens["boss"]).json()
    assert only["kept"] == [] and only["remove"] == []


@pytest.mark.parametrize("target", ["not a host", "127.0.0.1:5000/UPPER", "127.0.0.1:5000/a//b"])
def test_a_bad_registry_target_is_named_and_asks_no_registry(api, target):
    client, tokens, removed = api
    answer = client.post("/api/images/prune", json={"keep": 1, "registry": target}, headers=tokens["boss"])
    assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("--registry: ")
    assert removed == []


def test_the_digests_records_keep_are_needs_in_a_registry(tmp_path):
    from dlbox.server import image_actions

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    now = time.time()
    ref = "reg.example:5000/team/tf@" + digest(1)
    for job_id, state in (("q1", "queued"), ("d1", "succeeded")):
        store.add_job(Job(id=job_id, user="ann", state=state, command=["true"], params={}, env={}, image_ref="x",
                          image_id=digest(2), submitted_at=now, repo_digests=[ref, f"{ref[:-1]}0"]))
    store.add_model_version("ann", "digits", files_hash="f" * 64, files_bytes=1, path="model", run_id="d1",
                            image_id=digest(2), registered_by="ann", registered_at=now, repo_digests=[ref])
    store.add_deployment(Deployment(name="web", owner="ann", model_owner="ann", model_name="digits", port=18501,
                                    host="127.0.0.1", versions=[1], repo_digests=[ref]))
    store.add_deployment(Deployment(name="gone", owner="ann", model_owner="ann", model_name="digits", port=18502,
                                    host="127.0.0.1", versions=[1], desired="removed", repo_digests=[ref]))
    needs = image_actions.recorded_digests(store)
    assert needs[ref] == ["job q1 is queued", "model ann/digits:1 records it", "deployment web records it"]
    assert needs[f"{ref[:-1]}0"] == ["job q1 is queued"]  # a finished job holds nothing
