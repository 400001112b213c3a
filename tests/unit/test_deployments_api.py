"""Deployments' API in-process (server mode, no engine): another user's model or deployment is a 404,
bad flags are one-line 400s, and nothing is recorded when a serve cannot start."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dlbox.server import accounts
from dlbox.store.db import Deployment, Store


@pytest.fixture
def api(tmp_path, app_of, no_engine):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    tokens = {}
    for name, admin in (("ann", False), ("bob", False)):
        accounts.add_user(store, name, admin=admin)
        tokens[name] = {"Authorization": f"Bearer {accounts.create_token(store, name)[1]}"}
    store.add_model_version("ann", "digits", files_hash="0" * 64, files_bytes=1, path="model", run_id="r",
                            image_id="sha256:1", registered_by="ann", registered_at=1.0)
    store.add_deployment(Deployment(name="digits", owner="ann", model_owner="ann", model_name="digits", port=18501,
                                    host="127.0.0.1", versions=[1]))
    return TestClient(app_of(store, mode="server")), tokens, store


def test_another_users_model_and_deployment_are_not_found(api):
    client, t, _ = api
    for model in ("digits", "ann/digits", "ann/digits:1"):
        refused = client.post("/api/deployments", json={"model": model, "name": "mine"}, headers=t["bob"])
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found", refused.text
    assert client.get("/api/deployments", headers=t["bob"]).json() == []
    for method, path in (("GET", "/api/deployments/digits"), ("DELETE", "/api/deployments/digits"),
                         ("GET", "/api/deployments/digits/logs")):
        answer = client.request(method, path, headers=t["bob"])
        assert answer.status_code == 404 and "no deployment 'digits'" in answer.json()["error"]["message"]


def test_bad_flags_are_400_and_a_serve_that_cannot_start_records_nothing(api):
    client, t, store = api
    refused = client.post("/api/deployments", json={"model": "digits", "replicas": 9}, headers=t["ann"])
    assert refused.status_code == 422 and "replicas" in refused.json()["error"]["message"], refused.text
    host = client.post("/api/deployments", json={"model": "digits", "name": "web", "host": "0.0.0.0"},
                       headers=t["ann"])
    assert host.status_code == 403 and "the server chooses the host" in host.json()["error"]["message"]
    taken = client.post("/api/deployments", json={"model": "digits"}, headers=t["ann"])
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "exists"
    no_engine = client.post("/api/deployments", json={"model": "digits", "name": "web"}, headers=t["ann"])
    assert no_engine.status_code == 503 and no_engine.json()["error"]["code"] == "engine_unavailable"
    assert store.get_deployment("web") is None  # nothing half-made


def test_a_deployments_memory_counts_against_the_owners_quota(api):
    client, t, store = api
    from dlbox.server import quota

    user = store.get_user("ann")
    user.quota = {"memory": 4 * 1024**3}
    store.update_user(user)
    no_limit = client.post("/api/deployments", json={"model": "digits", "name": "web"}, headers=t["ann"])
    assert no_limit.status_code == 400 and "give a limit" in no_limit.json()["error"]["message"]
    store.update_deployment("digits", memory=3 * 1024**3)
    assert quota.held(store, "ann")["memory"] == 3 * 1024**3
    over = client.post("/api/deployments", json={"model": "digits", "name": "web", "memory": "2g"}, headers=t["ann"])
    assert over.status_code == 403 and over.json()["error"]["code"] == "quota_exceeded"
