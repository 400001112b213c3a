"""The web dashboard in real headless Chromium (Debian's, /usr/bin/chromium) against a real `dlbox server`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
JOB = ("import time, dlbox_metrics as m; "
       "[print('line', i, flush=True) or m.log('loss', 1 / (i + 1), step=i) or time.sleep(0.5) for i in range(10)]")


@pytest.fixture(scope="module")
def server(test_env, tmp_path_factory, start_server):
    """`dlbox server` in a home of its own (it would replace the session's CLI service otherwise)."""
    home = tmp_path_factory.mktemp("dashboard-home")
    env = {**test_env, "DLBOX_HOME": str(home)}

    def add_user(name: str, *extra: str) -> str:
        out = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", name, *extra, "--json"], env=env,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["token"]

    with start_server(env) as url:
        yield {"url": url, "env": env, "add_user": add_user}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)  # never `playwright install`
        yield chromium
        chromium.close()


def api(server, token: str, method: str, path: str, body=None) -> dict:
    request = urllib.request.Request(f"{server['url']}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()[:1000]}") from None


def watched_page(browser, server):
    """A page in a fresh context that records console errors and uncaught exceptions."""
    context = browser.new_context(base_url=server["url"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    return context, page, errors


def sign_in(page, token: str) -> None:
    page.goto("/workspaces")
    assert page.url.endswith("/login")  # not signed in: sent to sign in
    page.fill("#token", token)
    page.click("button:text('Sign in')")
    page.wait_for_url("**/workspaces")


def test_dashboard_end_to_end(server, browser, tf_image, small_image, run_id, docker_client):
    from playwright.sync_api import expect

    token = server["add_user"]("alice")
    context, page, errors = watched_page(browser, server)
    name = f"d{run_id}-ws"
    try:
        sign_in(page, token)
        assert "alice" in page.text_content("header")

        # launch a workspace with Jupyter from the TF image; the form waits until Jupyter answers
        page.fill("#launch [name=name]", name)
        page.select_option("#launch [name=source]", f"image:{tf_image['image']}")
        page.fill("#launch [name=cpus]", "1")
        assert page.is_checked("#launch [name=jupyter]")
        page.click("#launch button[type=submit]", timeout=300_000)
        page.wait_for_url(f"**/workspaces/{name}", timeout=300_000)
        assert page.text_content("#state") == "running"
        with context.expect_page(timeout=120_000) as opened:
            page.click("#open-jupyter")
        jupyter = opened.value
        jupyter.wait_for_load_state("load", timeout=120_000)
        status = jupyter.evaluate("performance.getEntriesByType('navigation')[0].responseStatus")
        assert status == 200 and "/login" not in jupyter.url, (status, jupyter.url)
        # the token signed the browser in to Jupyter: its file tree opens without it
        root = re.match(r"http://[^/]+/", jupyter.url).group(0)
        tree = jupyter.goto(f"{root}tree")
        assert tree.status == 200 and jupyter.url == f"{root}tree", jupyter.url
        jupyter.close()
        page.goto("/workspaces")
        assert page.text_content(f"[data-state-of='{name}']") == "running"

        # submit a job and follow its output while it runs
        page.goto("/jobs")
        page.select_option("#submit [name=image]", small_image["image"])
        page.fill("#submit [name=command]", f'python -c "{JOB}"')
        page.fill("#submit [name=params]", "epochs=3\nlr=0.1")
        page.fill("#submit [name=cpus]", "0.5")
        page.click("#submit button[type=submit]")
        page.wait_for_url(re.compile(r"/jobs/[0-9a-f]+$"))
        job_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#log")).to_contain_text("line 1", timeout=60_000)
        state, log = page.text_content("#state"), page.text_content("#log")
        # live: the first lines are there long before the last, and the job has not ended yet
        assert state in ("queued", "starting", "running") and "line 9" not in log, (state, log)
        expect(page.locator("#state")).to_have_text("succeeded", timeout=60_000)
        expect(page.locator("#log")).to_contain_text("line 9", timeout=30_000)
        assert page.locator("#cancel").count() == 0

        # the runs table with last metric values, and the run's chart
        page.goto("/runs")
        row = page.locator(f"#runs tr:has(a[href='/runs/{job_id}'])")
        assert "succeeded" in row.text_content() and "loss=0.1" in row.text_content()
        assert "epochs=3" in row.text_content()
        row.locator("a").first.click()
        page.wait_for_url(f"**/runs/{job_id}")
        points = page.get_attribute("figure[data-metric=loss] svg polyline", "points")
        assert len(points.split()) == 10

        # images with their lock and size
        page.goto("/images")
        assert small_image["image"] in page.text_content("#images")
        assert re.search(r"\d+(\.\d+)? [MG]B", page.text_content("#images")), "each image shows its size"
        page.click(f"#images a:text-is('{small_image['image']}')")
        assert "six" in page.text_content("#python-packages") and "1.16.0" in page.text_content("#python-packages")

        # stop and start the workspace from its page: the engine really stops and starts it
        page.goto(f"/workspaces/{name}")
        page.click("button:text-is('Stop')", timeout=120_000)
        expect(page.locator("#state")).to_have_text("exited", timeout=60_000)
        assert docker_client.containers.get(f"dlbox-ws-{name}").status == "exited"
        page.click("button:text-is('Start')", timeout=120_000)
        expect(page.locator("#state")).to_have_text("running", timeout=120_000)
        assert docker_client.containers.get(f"dlbox-ws-{name}").status == "running"

        # remove the workspace from its page (the button asks first)
        page.goto(f"/workspaces/{name}")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("button:text('Remove')", timeout=120_000)
        page.wait_for_url("**/workspaces")
        assert page.locator(f"[data-state-of='{name}']").count() == 0

        assert errors == []
        page.click("#sign-out")
        page.wait_for_url("**/login")
        page.goto("/jobs")
        assert page.url.endswith("/login")
    finally:
        context.close()
        subprocess.run([sys.executable, "-m", "dlbox", "rm", name, "--purge-data"], env=server["env"],
                       capture_output=True)


def test_other_users_things_are_not_found(server, browser, small_image, run_id):
    ann, ben = server["add_user"]("ann"), server["add_user"]("ben")
    name = f"d{run_id}-ann"
    api(server, ann, "POST", "/api/workspaces", {"name": name, "image": small_image["image"], "jupyter": False})
    job = api(server, ann, "POST", "/api/jobs", {"image": small_image["image"], "command": ["true"]})
    context, page, errors = watched_page(browser, server)
    try:
        sign_in(page, ben)
        for path in (f"/workspaces/{name}", f"/workspaces/{name}/jupyter", f"/jobs/{job['id']}",
                     f"/runs/{job['id']}"):
            assert page.goto(path).status == 404, path
        page.goto("/workspaces")
        assert page.locator(f"[data-state-of='{name}']").count() == 0
        page.goto("/jobs")
        assert job["id"] not in page.text_content("#jobs")
        context.close()
        context, page, errors = watched_page(browser, server)
        sign_in(page, ann)
        assert page.goto(f"/workspaces/{name}").status == 200
        assert page.goto(f"/jobs/{job['id']}").status == 200
        assert errors == []
    finally:
        context.close()
        api(server, ann, "DELETE", f"/api/workspaces/{name}?purge_data=true")


def finished_job(server, token: str, image: str, code: str, params: dict) -> str:
    """A real job through the API that logs metrics; its id once it succeeded."""
    import time

    job = api(server, token, "POST", "/api/jobs", {"image": image, "command": ["python", "-c", code],
                                                   "params": params, "cpus": 0.5})
    deadline = time.monotonic() + 240
    while (state := api(server, token, "GET", f"/api/jobs/{job['id']}")["state"]) not in (
            "succeeded", "failed", "cancelled", "oom-killed", "lost"):
        assert time.monotonic() < deadline, f"job {job['id']} still {state}"
        time.sleep(0.5)
    assert state == "succeeded", api(server, token, "GET", f"/api/runs/{job['id']}")
    return job["id"]


CURVE = ("import dlbox_metrics as m; f = {f}; "
         "[m.log('loss', f / (i + 1), step=i) for i in range(6)]; m.log('accuracy', 1 - f / 10)")


def test_comparing_runs_overlays_their_curves_beside_their_diff(server, browser, small_image):
    from playwright.sync_api import expect

    token = server["add_user"]("cleo")
    a = finished_job(server, token, small_image["image"], CURVE.format(f=1.0), {"lr": "0.1"})
    b = finished_job(server, token, small_image["image"], CURVE.format(f=2.0), {"lr": "0.01"})
    context, page, errors = watched_page(browser, server)
    try:
        sign_in(page, token)
        page.goto("/runs")
        page.check(f"input[name=ids][value='{a}']")
        page.check(f"input[name=ids][value='{b}']")
        page.click("#compare button[type=submit]")
        page.wait_for_url(re.compile(r"/runs/compare\?"))
        assert page.locator("#compared tbody tr").count() == 2
        loss = page.locator("figure[data-metric=loss] svg")
        curves = loss.locator("polyline.series")
        assert curves.count() == 2
        assert [len(curves.nth(i).get_attribute("points").split()) for i in range(2)] == [6, 6]
        # shared axes: run b's loss is twice a's at every step, so its line lies above a's at each x
        order = [row.get_attribute("data-run") for row in page.locator("#compared tbody tr").all()]
        assert sorted(order) == sorted([a, b])  # the newest first, as the runs list ticked them
        pa, pb = ([tuple(map(float, p.split(","))) for p in curves.nth(order.index(run)).get_attribute("points").split()]
                  for run in (a, b))
        assert [x for x, _ in pa] == [x for x, _ in pb] and all(yb < ya for (_, ya), (_, yb) in zip(pa, pb))
        assert loss.locator("text.xlabel").text_content() == "step"
        assert loss.locator("text.ylabel").text_content() == "loss"
        assert loss.locator("g.legend").count() == 2
        box = loss.bounding_box()
        assert box["width"] >= 300 and box["height"] >= 150, box  # drawn at its size, not squashed
        # a single value is a number in the table, not an empty chart
        assert page.locator("figure[data-metric=accuracy]").count() == 0
        values = page.locator("#last-values tr[data-metric=accuracy] td").all_text_contents()[1:]
        assert values == [{a: "0.9", b: "0.8"}[run] for run in order]
        # beside them, what `dlbox runs diff` prints
        base, other = order
        expect(page.locator(f"section[data-against='{other}'] tr[data-section=params]")).to_contain_text("0.1")
        out = subprocess.run([sys.executable, "-m", "dlbox", "runs", "diff", base, other, "--json"], capture_output=True,
                             text=True, env={**server["env"], "DLBOX_URL": server["url"], "DLBOX_TOKEN": token})
        cli = json.loads(out.stdout)
        shown = page.locator(f"section[data-against='{other}'] tr.changed[data-section=params] td").all_text_contents()
        assert shown == ["params", cli["params"][0]["name"], cli["params"][0]["a"], cli["params"][0]["b"]]
        assert errors == []  # no policy violation, no script error

        # someone else's runs are not there; hostile ids are a 400, never a 500
        other = server["add_user"]("dora")
        context.close()
        context, page, errors = watched_page(browser, server)
        sign_in(page, other)
        assert page.goto(f"/runs/compare?ids={a},{b}").status == 404
        for ids in ("../../etc/passwd,x", "%E2%80%AE" + a, a + "," + "f" * 8000, ",".join(["ab"] * 9),
                    "%00," + a, a):
            answer = page.goto(f"/runs/compare?ids={ids}")
            assert answer.status == 400 and page.text_content("#message").startswith("ids: "), ids[:40]
    finally:
        context.close()


def test_the_pipeline_page_shows_its_report_full_size_with_its_plots_and_marked_states(server, browser,
                                                                                       small_image, monkeypatch):
    """The report frame was once 300x150 (the policy dropped its style attribute), its plots a 401 (a sandbox
    without allow-same-origin sends no SameSite cookie), and stage states had no marks."""
    import time

    from dlbox.pipelines import report
    from dlbox.pipelines.state import STAGES
    from dlbox.store.db import Pipeline, Store

    token = server["add_user"]("erin")
    train = finished_job(server, token, small_image["image"], CURVE.format(f=1.0), {})
    monkeypatch.setenv("DLBOX_HOME", server["env"]["DLBOX_HOME"])  # the server's database and run folders
    store = Store()
    pipeline_id = f"p{train}"[:12]
    store.add_pipeline(Pipeline(id=pipeline_id, user="erin", state="promoted", code_hash="0" * 64, trigger="cli",
                                git_commit="ab" * 20, message="more epochs", cancel_requested=False,
                                submitted_at=time.time()), list(STAGES))
    for name in STAGES:  # finished as the driver finishes them; the service's loop leaves a finished one be
        store.stage_transition(pipeline_id, name, "running")
        if name == "train":
            store.update_stage(pipeline_id, name, job_ids=[train])
        store.stage_transition(pipeline_id, name, "skipped" if name == "deploy" else "succeeded")
    assert "curves.png" in report.write(store, store.get_pipeline(pipeline_id))

    context, page, errors = watched_page(browser, server)
    plots: dict[str, int] = {}
    page.on("response", lambda r: plots.__setitem__(r.url.rsplit("/", 1)[1], r.status) if ".png" in r.url else None)
    try:
        sign_in(page, token)
        page.goto(f"/pipelines/{pipeline_id}")
        frame_box = page.locator("iframe#report").bounding_box()
        assert frame_box["width"] > 600 and frame_box["height"] > 600, frame_box  # not the default 300x150
        frame = page.frame_locator("iframe#report")
        image = frame.locator("img[src='curves.png']")
        image.wait_for()
        page.wait_for_function("() => { const f = document.querySelector('iframe#report').contentDocument;"
                               " const i = f && f.querySelector('img'); return i && i.complete; }")
        assert plots == {"curves.png": 200}, plots
        assert image.evaluate("i => i.naturalWidth") > 100  # a decoded PNG, not a broken image
        marks = {row.get_attribute("data-stage"): row.locator(".mark").text_content()
                 for row in page.locator("#stages tbody tr").all()}
        assert marks == {**{s: "✓" for s in STAGES}, "deploy": "–"}, marks
        assert page.locator("h1 .mark").text_content() == "✓"
        page.goto("/pipelines")
        assert page.locator(f"tr:has(a[href='/pipelines/{pipeline_id}']) .stage .mark").count() == len(STAGES)
        # the report's links open in the whole tab (a dashboard page may not be framed)
        page.goto(f"/pipelines/{pipeline_id}")
        page.frame_locator("iframe#report").locator(f"a[href='/runs/{train}']").first.click()
        page.wait_for_url(f"**/runs/{train}")
        assert page.locator("figure[data-metric=loss] svg polyline").count() == 1
        assert errors == []
    finally:
        context.close()
