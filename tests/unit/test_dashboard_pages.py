"""The dashboard without an engine: the chart, signing in, CSRF and isolation on store-only pages."""

import re
from pathlib import Path
import time

import pytest

from dlbox.server import deps
from dlbox.server import accounts
from dlbox.server.dashboard import pages as dashboard
from dlbox.jobs import runner as jobs
from dlbox.server import app as service
from dlbox.store.db import Job, Store


def test_chart_scales_the_curve_into_the_box():
    svg = dashboard.chart_svg([(0, 1.0), (1, 0.5), (2, 0.25)], width=100, height=50, pad=5)
    points = re.search(r'<polyline[^>]* points="([^"]+)"', svg).group(1).split()
    assert points == ["5.0,5.0", "50.0,31.7", "95.0,45.0"]  # highest value at the top, lowest at the bottom
    assert svg.startswith("<svg") and 'viewBox="0 0 100 50"' in svg


def test_chart_of_one_value_or_a_flat_line_stays_inside():
    flat = dashboard.chart_svg([(0, 2.0), (3, 2.0)], width=100, height=50, pad=5)
    assert 'points="5.0,25.0 95.0,25.0"' in flat
    assert 'points="50.0,25.0"' in dashboard.chart_svg([(7, 1.0)], width=100, height=50, pad=5)
    assert dashboard.chart_svg([]) == ""


def test_curves_group_metrics_and_number_steps_when_missing():
    got = dashboard.curves([{"name": "loss", "step": 0, "value": 1.0}, {"name": "acc", "step": None, "value": 0.5},
                            {"name": "loss", "step": 1, "value": 0.5}, {"name": "acc", "step": None, "value": 0.7}])
    assert {k: (v["last"], v["count"]) for k, v in got.items()} == {"loss": (0.5, 2), "acc": (0.7, 2)}
    assert "<polyline" in got["acc"]["svg"]


@pytest.fixture()
def server(tmp_path, monkeypatch, app_of):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    store = Store(f"sqlite:///{tmp_path}/t.db")
    app = app_of(store, mode="server")
    tokens = {}
    for name in ("ann", "bob"):
        accounts.add_user(store, name)
        tokens[name] = accounts.create_token(store, name)[1]
    store.add_job(Job(id="a1b2c3d4e5f6", user="ann", state="succeeded", command=["true"], params={"lr": "0.1"},
                      env={}, image_ref="img", image_id="sha256:00", submitted_at=time.time()))
    store.replace_metrics("a1b2c3d4e5f6", [{"name": "loss", "step": i, "value": 1 / (i + 1)} for i in range(5)])
    client = TestClient(app, base_url="http://dash.test", follow_redirects=False)
    return client, tokens


def sign_in(client, token):
    return client.post("/login", data={"token": token}, headers={"Origin": "http://dash.test"})


def test_pages_need_signing_in_and_the_cookie_is_strict(server):
    client, tokens = server
    assert client.get("/runs").headers["location"] == "/login"
    assert client.get("/login").status_code == 200
    refused = sign_in(client, "dlb_nope")
    assert refused.status_code == 401 and "not valid" in refused.text
    ok = sign_in(client, tokens["ann"])
    assert ok.status_code == 303 and ok.headers["location"] == "/workspaces"
    cookie = ok.headers["set-cookie"].lower()
    assert "dlbox_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    page = client.get("/runs")
    assert page.status_code == 200 and "a1b2c3d4e5f6" in page.text and "loss=0.2" in page.text
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    out = client.post("/logout", headers={"Origin": "http://dash.test"})
    assert out.headers["location"] == "/login" and 'dlbox_token=""' in out.headers["set-cookie"]


def test_forms_from_elsewhere_are_refused(server):
    client, tokens = server
    assert sign_in(client, tokens["ann"]).status_code == 303
    for origin in ({"Origin": "http://dash.test:8888"}, {"Origin": "http://evil.test"}, {}):
        refused = client.post("/jobs/a1b2c3d4e5f6/cancel", headers=origin)
        assert refused.status_code == 403, origin
    assert client.post("/jobs/a1b2c3d4e5f6/cancel", headers={"Referer": "http://dash.test/jobs"}).status_code == 303


def test_run_page_charts_each_metric_and_hides_other_users_runs(server):
    client, tokens = server
    sign_in(client, tokens["ann"])
    page = client.get("/runs/a1b2c3d4e5f6")
    assert page.status_code == 200 and page.text.count("<polyline") == 1 and 'data-metric="loss"' in page.text
    client.cookies.clear()
    sign_in(client, tokens["bob"])
    for path in ("/runs/a1b2c3d4e5f6", "/jobs/a1b2c3d4e5f6"):
        assert client.get(path).status_code == 404
    assert "a1b2c3d4e5f6" not in client.get("/runs").text


def test_the_local_socket_has_no_dashboard(tmp_path):
    from fastapi.testclient import TestClient

    store = Store(f"sqlite:///{tmp_path}/t.db")
    client = TestClient(service.create_app(store, service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None,
                                                                                           gpus=[]))))
    assert client.get("/login").status_code == 404


def test_the_dashboard_session_is_no_token_and_only_reads_the_api(tmp_path):
    """Browsers send a host's cookies to all its ports (a workspace's Jupyter too): the cookie holds
    a session id that is no API token, and through the API it may only read."""
    from fastapi.testclient import TestClient

    from dlbox.server import accounts
    from dlbox.server import app as service
    from dlbox.store.db import Store

    store = Store(f"sqlite:///{tmp_path / 'db'}")
    accounts.add_user(store, "alice")
    _, token = accounts.create_token(store, "alice")
    from dlbox.jobs import runner as jobs

    loop = service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None, gpus=[]))  # made, never started
    client = TestClient(service.create_app(store, loop, mode="server"), base_url="http://dash")
    signed_in = client.post("/login", data={"token": token}, headers={"Origin": "http://dash"},
                            follow_redirects=False)
    assert signed_in.status_code == 303
    session = client.cookies.get(deps.COOKIE)
    assert session and session != token and token not in signed_in.headers["set-cookie"]
    assert client.get("/api/tokens").status_code == 200
    refused = client.post("/api/tokens", json={"name": "stolen"})
    assert refused.status_code == 401 and "only reads" in refused.json()["error"]["message"]
    as_bearer = client.get("/api/tokens", headers={"Authorization": f"Bearer {session}"})
    assert as_bearer.status_code == 401  # a leaked session id is no API token
    store.revoke_token(store.tokens(user="alice")[0].id)
    assert client.get("/api/tokens").status_code == 401  # revoking the token ends its sessions


def test_image_page_shows_the_kept_scan(server, monkeypatch):
    from dlbox.build import images
    from dlbox.supply import scan

    client, tokens = server
    image_id = "sha256:" + "ab" * 32
    lock = {"base": {"ref": "b", "rootfs_sha256": None}, "python": {"version": "3.9.2", "packages": []},
            "os": {"packages": []}}
    monkeypatch.setattr(images, "inspect", lambda ref: {"ref": ref, "id": image_id, "tags": [], "size": 1,
                                                        "lock_hash": "l", "services": [], "created": "c",
                                                        "lock": lock})
    sign_in(client, tokens["ann"])
    assert "Not scanned yet" in client.get("/images/dlbox/x:latest").text
    result = scan.scan_facts({"image": "dlbox/x", "id": image_id, "python": [("protobuf", "3.19.6")], "os": []},
                             advisories=str(Path(__file__).resolve().parent.parent / "data" / "advisories" / "osv"))
    scan.keep(result)
    page = client.get("/images/dlbox/x:latest").text
    assert "GHSA-8qvm-5x2c-j2w7" in page and "CVE-2025-4565" in page and "2 advisories (2 high)" in page
    assert "scan-gate" not in page  # scanned without --fail-on: no verdict to show
    scan.keep(scan.scan_facts({"image": "dlbox/x", "id": image_id, "python": [("protobuf", "3.19.6")], "os": []},
                              advisories=str(Path(__file__).resolve().parent.parent / "data" / "advisories" / "osv"),
                              fail_on="critical"))
    assert "Fail-on critical: passed (0 at or above)" in client.get("/images/dlbox/x:latest").text


def test_models_pages_show_versions_lineage_aliases_and_history_to_their_owner_only(server, tmp_path):
    from dlbox.models import registry

    client, tokens = server
    store = client.app.state.ctx.store
    for _ in range(2):
        store.add_model_version("ann", "digits", files_hash="0" * 64, files_bytes=1, path="model",
                                run_id="a1b2c3d4e5f6", image_id="sha256:00", metrics={"acc": 0.91},
                                signature={"tags": ["serve"], "signatures": {"serving_default": {
                                    "method_name": "m", "inputs": {"x": {"name": "x:0", "dtype": "DT_FLOAT",
                                                                         "shape": [-1, 3]}}, "outputs": {}}}},
                                registered_by="ann", registered_at=time.time())
    registry.move_alias(store, "ann", "digits", "champion", 1)
    registry.move_alias(store, "ann", "digits", "champion", 2)
    assert client.get("/models").headers["location"] == "/login"
    assert sign_in(client, tokens["ann"]).status_code == 303
    listing = client.get("/models")
    assert listing.status_code == 200 and "/models/ann/digits" in listing.text and "champion=2" in listing.text
    page = client.get("/models/ann/digits")
    assert page.status_code == 200 and 'href="/runs/a1b2c3d4e5f6"' in page.text
    assert "acc=0.91" in page.text and "DT_FLOAT" in page.text and "<script" not in page.text.split("</head>")[1]
    history = page.text.split('id="history"')[1]
    assert history.count("<tr>") == 3 and "champion" in history  # header and two moves
    client.post("/logout", headers={"Origin": "http://dash.test"})
    assert sign_in(client, tokens["bob"]).status_code == 303
    assert client.get("/models/ann/digits").status_code == 404
    assert "/models/ann/digits" not in client.get("/models").text


def test_the_deployments_page_lists_only_the_callers_own(server):
    from dlbox.store.db import Deployment

    client, tokens = server
    store = client.app.state.ctx.store
    store.add_deployment(Deployment(name="secret-dep", owner="ann", model_owner="ann", model_name="digits",
                                    port=18501, host="127.0.0.1", versions=[1]))
    sign_in(client, tokens["bob"])
    page = client.get("/deployments")
    assert page.status_code == 200 and "secret-dep" not in page.text and "No deployments" in page.text
    assert 'href="/deployments"' in page.text


def test_the_workspaces_page_says_running_or_why_it_stopped(server, monkeypatch):
    """A running workspace has no `stopped` (None); an idle-stopped one says so. The pages' Jinja2 is
    strict: a missing attribute is an error, which once made this page a 500 for any running workspace."""
    from dlbox.build import images
    from dlbox.server import workspace_actions

    client, tokens = server

    def row(name, state, stopped):
        return {"name": name, "owner": "ann", "state": state, "image": "dlbox/x:latest", "jupyter": None,
                "resources": {"cpus": None, "memory": None, "gpus": None}, "stopped": stopped}

    rows = [row("busy", "running", None), row("quiet", "exited", {"reason": "idle", "text": "stopped: idle for 2h"})]
    monkeypatch.setattr(workspace_actions, "rows_for", lambda ctx, who, limit, offset: (rows, False))
    monkeypatch.setattr(images, "list_images", lambda: [])
    sign_in(client, tokens["ann"])
    page = client.get("/workspaces")
    assert page.status_code == 200
    assert 'data-state-of="busy">running<' in page.text and 'data-state-of="quiet">stopped: idle for 2h<' in page.text
