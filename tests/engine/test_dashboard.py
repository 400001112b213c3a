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
