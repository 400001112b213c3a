"""The registry's API in-process (server mode): ownership is 404, sharing is an admin's, aliases and
their history over HTTP; registration with the signature helper faked at the engine's edge."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from dlbox.jobs import runner as jobs
from dlbox.server import accounts
from dlbox.store.db import Job, Store

from test_models_registry import SIG, tree


@pytest.fixture
def api(tmp_path, app_of, monkeypatch):
    from dlbox.engine import api as engine

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    tokens = {}
    for name, admin in (("ann", False), ("bob", False), ("boss", True)):
        accounts.add_user(store, name, admin=admin)
        tokens[name] = {"Authorization": f"Bearer {accounts.create_token(store, name)[1]}"}
    store.add_job(Job(id="a1b2c3d4e5f6", user="ann", state="succeeded", command=["true"], params={}, env={},
                      image_ref="img", image_id="sha256:abc", submitted_at=time.time()))
    tree(jobs.run_dir("a1b2c3d4e5f6") / "artifacts" / "model")
    (jobs.run_dir("a1b2c3d4e5f6") / "artifacts" / "plain").mkdir()
    monkeypatch.setattr(engine, "run_reader", lambda *a, **k: (0, json.dumps(SIG).encode(), ""))
    client = TestClient(app_of(store, mode="server"))
    return client, tokens


def test_register_show_alias_and_history(api):
    client, t = api
    made = client.post("/api/models/digits/versions", json={"run": "a1b2c3d4e5f6"}, headers=t["ann"])
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["name"], body["version"], body["owner"], body["run_id"]) == ("digits", 1, "ann", "a1b2c3d4e5f6")
    assert body["signature"]["signatures"]["serving_default"]["inputs"]["x"] == {
        "name": "serving_default_x:0", "dtype": "DT_FLOAT", "shape": [-1, 3]}
    assert client.post("/api/models/digits/versions", json={"run": "a1b2c3d4e5f6"}, headers=t["ann"]).json()[
        "version"] == 2
    moved = client.put("/api/models/digits/aliases/champion", json={"version": 1}, headers=t["ann"]).json()
    assert (moved["version"], moved["previous"]) == (1, None)
    assert client.put("/api/models/digits/aliases/champion", json={"version": 2}, headers=t["ann"]).json()[
        "previous"] == 1
    assert client.get("/api/models/digits/aliases/champion", headers=t["ann"]).json()["version"] == 2
    assert client.get("/api/models/digits/versions/1", headers=t["ann"]).json()["aliases"] == []
    history = client.get("/api/models/digits/history", headers=t["ann"]).json()
    assert [(h["from_version"], h["to_version"], h["by"]) for h in history] == [(None, 1, "ann"), (1, 2, "ann")]
    paged = client.get("/api/models/digits/history?limit=1&offset=1", headers=t["ann"]).json()
    assert [(h["from_version"], h["to_version"]) for h in paged] == [(1, 2)]  # pages, like every list
    assert client.get("/api/models/digits/history?limit=0", headers=t["ann"]).status_code == 422
    detail = client.get("/api/models/digits", headers=t["ann"]).json()
    assert detail["versions"] == [1, 2] and detail["aliases"] == {"champion": 2} and len(detail["history"]) == 2
    assert client.delete("/api/models/digits/aliases/champion", headers=t["ann"]).json()["version"] is None
    assert client.delete("/api/models/digits/versions/2", headers=t["ann"]).json()["removed"] is True
    assert client.post("/api/models/digits/versions", json={"run": "a1b2c3d4e5f6"}, headers=t["ann"]).json()[
        "version"] == 3


def test_refusals_are_one_line_errors_with_their_codes(api):
    client, t = api
    for body, status, code in (({"run": "a1b2c3d4e5f6", "path": "plain"}, 422, "not_a_model"),
                               ({"run": "a1b2c3d4e5f6", "path": "../x"}, 400, "invalid"),
                               ({"run": "ffffffffffff"}, 404, "not_found")):
        answer = client.post("/api/models/digits/versions", json=body, headers=t["ann"])
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert client.get("/api/models/Bad%20Name", headers=t["ann"]).status_code == 400
    assert client.get("/api/models/digits/versions/0", headers=t["ann"]).status_code == 400
    assert client.get("/api/models", headers=t["ann"]).json() == []  # nothing half-made


def test_other_users_models_are_404_until_an_admin_shares_them(api):
    client, t = api
    assert client.post("/api/models/digits/versions", json={"run": "a1b2c3d4e5f6"}, headers=t["ann"]).status_code == 201
    # bob cannot use ann's run either
    assert client.post("/api/models/mine/versions", json={"run": "a1b2c3d4e5f6"}, headers=t["bob"]).status_code == 404
    hidden = [("GET", "/api/models/digits?owner=ann"), ("GET", "/api/models/digits/versions/1?owner=ann"),
              ("GET", "/api/models/digits/history?owner=ann"), ("DELETE", "/api/models/digits/versions/1?owner=ann")]
    for method, url in hidden:
        assert client.request(method, url, headers=t["bob"]).status_code == 404, url
    assert client.get("/api/models/digits", headers=t["bob"]).status_code == 404  # not in bob's namespace
    assert client.get("/api/models", headers=t["bob"]).json() == []
    refused = client.put("/api/models/digits/share?owner=ann", json={"shared": True}, headers=t["ann"])
    assert refused.status_code == 403  # even the owner: sharing is the admin's
    assert client.get("/api/models", headers=t["boss"]).json()[0]["owner"] == "ann"  # admins see all
    assert client.put("/api/models/digits/share?owner=ann", json={"shared": True}, headers=t["boss"]).json()["shared"]
    assert client.get("/api/models/digits/versions/1?owner=ann", headers=t["bob"]).status_code == 200
    assert [m["name"] for m in client.get("/api/models", headers=t["bob"]).json()] == ["digits"]
    moved = client.put("/api/models/digits/aliases/x?owner=ann", json={"version": 1}, headers=t["bob"])
    assert moved.status_code == 403  # shared to use, not to change
    assert client.delete("/api/models/digits/versions/1?owner=ann", headers=t["bob"]).status_code == 403
