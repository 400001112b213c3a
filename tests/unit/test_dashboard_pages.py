"""The dashboard without an engine: the run page's curves, signing in, CSRF and isolation on store-only pages."""

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


def test_curves_group_metrics_and_number_steps_when_missing():
    got = dashboard.curves([{"name": "loss", "step": 0, "value": 1.0}, {"name": "acc", "step": None, "value": 0.5},
                            {"name": "loss", "step": 1, "value": 0.5}, {"name": "acc", "step": None, "value": 0.7}])
    assert {k: (v["last"], v["count"]) for k, v in got.items()} == {"loss": (0.5, 2), "acc": (0.7, 2)}
    assert "<polyline" in got["acc"]["svg"]
    one = dashboard.curves([{"name": "acc", "step": None, "value": 0.9}])
    assert one["acc"]["svg"] == "" and one["acc"]["last"] == 0.9  # a single value is a number, not a chart


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


def add_run(store, job_id, user="ann", *, lr="0.01", metrics=None, name=None):
    store.add_job(Job(id=job_id, user=user, state="succeeded", command=["python", "train.py"], params={"lr": lr},
                      env={}, image_ref="img", image_id="sha256:00", submitted_at=time.time(), name=name))
    store.replace_metrics(job_id, metrics if metrics is not None else
                          [{"name": "loss", "step": i, "value": 2 / (i + 2)} for i in range(5)]
                          + [{"name": "acc", "step": None, "value": 0.8}])


def test_compare_overlays_curves_shows_single_values_as_numbers_and_the_cli_diff(server):
    from dlbox.runs.diff import runs_diff
    from dlbox.server import job_actions

    client, tokens = server
    store = client.app.state.ctx.store
    add_run(store, "b1b2c3d4e5f6", name="<b>candidate</b>")
    sign_in(client, tokens["ann"])
    page = client.get("/runs/compare?ids=a1b2c3d4e5f6,b1b2c3d4e5f6")
    assert page.status_code == 200
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    body = page.text.split("</head>")[1]
    assert "<script" not in body and " style=" not in body and "<b>candidate" not in body
    loss = body.split('<figure class="metric" data-metric="loss">')[1].split("</figure>")[0]
    assert loss.count("<polyline") == 2 and ">step</text>" in loss and 'class="ylabel"' in loss
    assert "&lt;b&gt;candidate" in loss  # the run's name labels its curve, escaped
    assert 'data-metric="acc"' in body and '<figure class="metric" data-metric="acc">' not in body  # a number
    acc = body.split('<tr data-metric="acc">')[1].split("</tr>")[0]
    assert "<td>-</td>" in acc and "<td>0.8</td>" in acc  # the base run logged no acc
    me = accounts.Caller(name="ann", role="user")
    expected = runs_diff(job_actions.RunsOf(client.app.state.ctx, me), "a1b2c3d4e5f6", "b1b2c3d4e5f6")
    section = body.split('<section class="diff" data-against="b1b2c3d4e5f6">')[1].split("</section>")[0]
    changed = re.findall(r'<tr class="changed" data-section="(\w+)"><td>\w+</td><td><code>([^<]*)</code></td>'
                         r'<td><code>([^<]*)</code></td><td><code>([^<]*)</code></td></tr>', section)
    shown = {(s, n, a, b) for s, n, a, b in changed}
    want = {(s, c["name"], "-" if c["a"] is None else str(c["a"]), "-" if c["b"] is None else str(c["b"]))
            for s in ("image", "packages", "params", "command", "code", "metrics") for c in expected[s]}
    assert shown == want and ("params", "lr", "0.1", "0.01") in shown
    repeated = client.get("/runs/compare?ids=a1b2c3d4e5f6&ids=b1b2c3d4e5f6")  # as the runs page's form sends them
    assert repeated.status_code == 200 and repeated.text.count("<polyline") == 2
    runs = client.get("/runs").text
    assert '<form id="compare" method="get" action="/runs/compare"' in runs
    assert 'name="ids" value="b1b2c3d4e5f6" form="compare"' in runs


def test_compare_hides_other_users_runs_as_missing_ones(server):
    client, tokens = server
    store = client.app.state.ctx.store
    add_run(store, "b0b0b0b0b0b0", user="bob")
    add_run(store, "b0b0b0b0b0b1", user="bob")
    sign_in(client, tokens["bob"])
    assert client.get("/runs/compare?ids=b0b0b0b0b0b0,b0b0b0b0b0b1").status_code == 200
    theirs = client.get("/runs/compare?ids=b0b0b0b0b0b0,a1b2c3d4e5f6")
    missing = client.get("/runs/compare?ids=b0b0b0b0b0b0,ffffffffffff")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace("a1b2c3d4e5f6", "X") == missing.text.replace("ffffffffffff", "X")
    assert "lr=0.1" not in theirs.text and "loss" not in theirs.text


def test_compare_takes_two_to_eight_runs_and_refuses_hostile_ids(server):
    client, tokens = server
    store = client.app.state.ctx.store
    ids = ["a1b2c3d4e5f6"] + [f"c{i}c2c3d4e5f6" for i in range(8)]
    for run_id in ids[1:]:
        add_run(store, run_id)
    sign_in(client, tokens["ann"])
    eight = client.get("/runs/compare?ids=" + ",".join(ids[:8]))
    assert eight.status_code == 200 and eight.text.count("<polyline") == 8 and eight.text.count('class="diff"') == 7
    nine = client.get("/runs/compare?ids=" + ",".join(ids))
    assert nine.status_code == 400 and "at most 8 runs" in nine.text
    same_twice = client.get("/runs/compare?ids=a1b2c3d4e5f6,a1b2c3d4e5f6")
    assert same_twice.status_code == 400 and "two or more runs" in same_twice.text
    hostile = ["", "ids=", "ids=a1b2c3d4e5f6", "ids=../../etc/passwd,a1b2c3d4e5f6", "ids=%2e%2e%2f%2e%2e,a1b2c3d4e5f6",
               "ids=a1b2c3d4e5f6,..%5c..%5cwindows", "ids=" + "f" * 60_000, "ids=" + ",".join(["ab"] * 5000),
               "ids=%E2%80%AEa1b2,a1b2c3d4e5f6", "ids=a1b2c3d4e5f%C3%A9,a1b2c3d4e5f6", "ids=a1b2%00c3,a1b2c3d4e5f6",
               "ids=a1b2c3d4e5f6,%3Cscript%3Ealert(1)%3C/script%3E", "ids=%FF%FE,a1b2c3d4e5f6"]
    for query in hostile:
        answer = client.get("/runs/compare?" + query)
        assert answer.status_code == 400, (query[:60], answer.status_code)
        message = answer.text.split('id="message">')[1].split("</p>")[0]
        assert message.startswith("ids: ") and len(message) < 200 and "<script" not in message, message


def finished_pipeline(store, user="ann", train_run="a1b2c3d4e5f6"):
    """A promoted pipeline whose train stage ran `train_run`, with its report written by the real writer."""
    from dlbox.pipelines import report
    from dlbox.pipelines.state import STAGES
    from dlbox.store.db import Pipeline

    store.add_pipeline(Pipeline(id="p0p0p0p0p0p0", user=user, state="promoted", code_hash="0" * 64, trigger="cli",
                                git_commit="ab" * 20, message="more epochs", cancel_requested=False,
                                submitted_at=time.time()), list(STAGES))
    for name in STAGES:
        store.stage_transition("p0p0p0p0p0p0", name, "running")
        if name == "train":
            store.update_stage("p0p0p0p0p0p0", name, job_ids=[train_run])
        store.stage_transition("p0p0p0p0p0p0", name, "failed" if name == "deploy" else "succeeded")
    assert "curves.png" in report.write(store, store.get_pipeline("p0p0p0p0p0p0"))
    return "p0p0p0p0p0p0"


def test_the_pipeline_page_sizes_its_report_by_css_lets_its_plots_sign_in_and_marks_states(server):
    client, tokens = server
    pipeline = finished_pipeline(client.app.state.ctx.store)
    sign_in(client, tokens["ann"])
    page = client.get(f"/pipelines/{pipeline}")
    assert page.status_code == 200
    frame = re.search(r"<iframe[^>]*>", page.text).group(0)
    assert " style=" not in frame and 'class="report"' in frame  # the policy drops style attributes
    sandbox = re.search(r'sandbox="([^"]*)"', frame).group(1).split()
    assert "allow-same-origin" in sandbox and "allow-scripts" not in sandbox  # the cookie goes; no script runs
    css = client.get("/static/app.css").text
    assert re.search(r"\.report \{[^}]*height: 70em", css)
    build = page.text.split('<tr data-stage="build">')[1].split("</tr>")[0]
    assert '<span class="mark" aria-hidden="true">✓</span> succeeded' in build
    deploy = page.text.split('<tr data-stage="deploy">')[1].split("</tr>")[0]
    assert '<span class="mark" aria-hidden="true">✗</span> failed' in deploy
    assert '✓</span> promoted' in page.text.split("</h1>")[0]
    listing = client.get("/pipelines").text
    assert 'title="deploy: failed"><span class="mark" aria-hidden="true">✗</span> deploy' in listing
    report = client.get(f"/api/pipelines/{pipeline}/report/report.html")
    assert report.status_code == 200 and '<img src="curves.png"' in report.text and '<base target="_top">' in report.text
    assert "script-src" not in report.headers["content-security-policy"]  # default-src 'none': no script
    assert client.get(f"/api/pipelines/{pipeline}/report/curves.png").headers["content-type"] == "image/png"
