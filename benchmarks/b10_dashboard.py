"""Benchmark 10: the web dashboard's weight and time to interactive.

The web dashboard of `dlbox server` (a server of its own, in a home in the work directory,
one user): the workspaces page's weight (HTML + CSS + JS bytes as served, uncompressed,
from the responses of one load in headless Chromium) and its time to interactive: from
navigation start to DOMContentLoaded (the page's script is deferred, so it has run by then)
and to the load event, read from the Navigation Timing entry. Median of 5 loads, each in a
fresh browser context (a first visit), after one untimed warm-up. Needs Playwright (the
test extra) and Debian's chromium (/usr/bin/chromium; scripts/host-setup.sh packages).
The run comparison page (/runs/compare) is held to the same budget: 8 runs (the most it takes),
each with a 2,000-step history of two metrics and one single-valued metric, written to the server's
database before it starts (the page is measured, not the jobs).
No baseline: informational, with a target of 100 KB and 1 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from dlbox.server.dashboard import charts

from common import DLBOX, BenchError, Row, Runner, dlbox_env, free_port, say, secs, verdict

CHROMIUM = os.environ.get("BENCH_CHROMIUM", "/usr/bin/chromium")
DASH_RUNS = 5
DASH_WEIGHT_TARGET = 100.0  # KB, HTML + CSS + JS of the workspaces page
DASH_TTI_TARGET = 1.0       # seconds, navigation start to DOMContentLoaded
COMPARE_RUNS, COMPARE_STEPS = 8, 2000
# For run.py: the number BENCH_ONLY names; the row's name when the benchmark fails.
NUMBER = 10
TITLE = "10. dashboard page weight and time to interactive"


def dashboard_session(port: int, token: str) -> str:
    """Sign in as the login form does; the cookie it sets holds a session id, not the token."""
    import http.client
    from urllib.parse import urlencode

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/login", body=urlencode({"token": token}),
                 headers={"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    cookie = response.getheader("set-cookie") or ""
    conn.close()
    if response.status != 303 or not cookie.startswith("dlbox_token="):
        raise BenchError(f"signing in to the dashboard answered {response.status}")
    return cookie.split(";", 1)[0].split("=", 1)[1]


def seed_runs(home: Path, user: str) -> list[str]:
    """COMPARE_RUNS finished runs of `user` with long metric histories, straight into the database."""
    import math

    from dlbox.store.db import Job, Store

    store = Store(f"sqlite:///{home / 'dlbox.db'}")
    ids = []
    for k in range(COMPARE_RUNS):
        job_id = f"bench{k:07d}"
        ids.append(job_id)
        if store.get_job(job_id) is not None:  # a home kept from an earlier run
            continue
        store.add_job(Job(id=job_id, user=user, state="succeeded", command=["python", "train.py"],
                          params={"lr": str(0.1 / (k + 1)), "epochs": "20"}, env={}, image_ref="dlbox/bench:latest",
                          image_id="sha256:" + "0" * 64, submitted_at=time.time()))
        history = [{"name": name, "step": i, "value": value} for i in range(COMPARE_STEPS)
                   for name, value in (("loss", math.exp(-i / (300 + 50 * k)) + 0.01 * math.sin(i)),
                                       ("accuracy", 1 - math.exp(-i / (400 + 30 * k))))]
        store.replace_metrics(job_id, history + [{"name": "test_accuracy", "step": None, "value": 0.9 + k / 100}])
    store.engine.dispose()
    return ids


def bench(runner: Runner, work: Path) -> list[Row]:
    try:
        from playwright.sync_api import sync_playwright  # the test extra: pip install -e '.[test]'
    except ImportError:
        raise BenchError("10 needs Playwright: pip install -e '.[test]'") from None
    if not Path(CHROMIUM).is_file():
        raise BenchError(f"10 needs Chromium at {CHROMIUM} (scripts/host-setup.sh packages installs Debian's)")
    env = {**dlbox_env(), "DLBOX_HOME": str(work / "dashboard-home")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = runner.logs / "dashboard-server.log"
    (work / "dashboard-home").mkdir(mode=0o700, parents=True, exist_ok=True)
    compared = seed_runs(work / "dashboard-home", "bench")
    say(f"10. dlbox server on port {port} (log {log})")
    with log.open("wb") as out:
        proc = subprocess.Popen([DLBOX, "server", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"dlbox server did not answer (log {log})") from None
                time.sleep(0.2)
        _, out = runner.run("dashboard-user", [DLBOX, "users", "add", "bench", "--json"], env=env)
        cookie = {"name": "dlbox_token", "value": dashboard_session(port, json.loads(out)["token"]), "url": url}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                def load(path: str, weigh: bool = False) -> tuple[dict, dict[str, int]]:
                    context = browser.new_context()
                    context.add_cookies([cookie])
                    page = context.new_page()
                    sizes: dict[str, int] = {}
                    if weigh:
                        page.on("response", lambda r: sizes.__setitem__(r.request.resource_type, sizes.get(
                            r.request.resource_type, 0) + len(r.body())) if r.url.startswith(url) else None)
                    response = page.goto(f"{url}{path}", wait_until="load")
                    if response is None or response.status != 200 or not page.url.endswith(path):
                        raise BenchError(f"GET {path}: {response.status if response else 'no response'} "
                                         f"at {page.url}")
                    timing = page.evaluate("JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))")
                    context.close()
                    return timing, sizes

                def timed(path: str) -> tuple[dict[str, int], list[float], list[float], list[float]]:
                    _, sizes = load(path, weigh=True)  # warm-up, untimed: weighs the page
                    dcl, loaded, first_byte = [], [], []
                    for i in range(DASH_RUNS):
                        timing, _ = load(path)
                        dcl.append(timing["domContentLoadedEventEnd"] / 1000)
                        loaded.append(timing["loadEventEnd"] / 1000)
                        first_byte.append(timing["responseStart"] / 1000)
                        say(f"10. {path[:40]} {i + 1}/{DASH_RUNS}: DOMContentLoaded {dcl[-1] * 1000:.0f} ms, "
                            f"load {loaded[-1] * 1000:.0f} ms")
                    return sizes, dcl, loaded, first_byte

                sizes, dcl, loaded, first_byte = timed("/workspaces")
                c_sizes, c_dcl, c_loaded, c_first = timed("/runs/compare?ids=" + ",".join(compared))
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    kb = {kind: sizes.get(kind, 0) / 1024 for kind in ("document", "stylesheet", "script")}
    weight = sum(kb.values())
    other = sum(v for k, v in sizes.items() if k not in kb)
    tti, at_load = statistics.median(dcl), statistics.median(loaded)
    c_kb = {kind: c_sizes.get(kind, 0) / 1024 for kind in ("document", "stylesheet", "script")}
    c_weight, c_tti = sum(c_kb.values()), statistics.median(c_dcl)
    c_other = sum(v for k, v in c_sizes.items() if k not in c_kb)
    shape = (f"{COMPARE_RUNS} runs x 2 metrics x {COMPARE_STEPS} steps (curves thinned to "
             f"{charts.MAX_POINTS} points) + 1 single value")
    return [
        Row("10. dashboard page weight (workspaces)", f"{weight:.1f} KB", "-", "-",
            f"<= {DASH_WEIGHT_TARGET:.0f} KB", verdict(weight <= DASH_WEIGHT_TARGET),
            f"HTML {kb['document']:.1f} KB, CSS {kb['stylesheet']:.1f} KB, JS {kb['script']:.1f} KB, uncompressed; "
            f"other requests {other} bytes; no workspaces listed"),
        Row("10. dashboard time to interactive", secs(tti), "-", "-", f"< {DASH_TTI_TARGET:.0f} s",
            verdict(tti < DASH_TTI_TARGET), f"navigation start to DOMContentLoaded (deferred script run), median of "
            f"{DASH_RUNS}, fresh context each; to load {secs(at_load)}; first byte "
            f"{secs(statistics.median(first_byte))} (the server lists images from the engine); "
            f"{' '.join(f'{t * 1000:.0f}' for t in dcl)} ms"),
        Row("10. dashboard page weight (compare, 8 runs)", f"{c_weight:.1f} KB", "-", "-",
            f"<= {DASH_WEIGHT_TARGET:.0f} KB", verdict(c_weight <= DASH_WEIGHT_TARGET),
            f"HTML {c_kb['document']:.1f} KB (the SVG charts inline), CSS {c_kb['stylesheet']:.1f} KB, JS "
            f"{c_kb['script']:.1f} KB, uncompressed; other requests {c_other} bytes; {shape}"),
        Row("10. compare page time to interactive", secs(c_tti), "-", "-", f"< {DASH_TTI_TARGET:.0f} s",
            verdict(c_tti < DASH_TTI_TARGET), f"the same measure as the workspaces page's; to load "
            f"{secs(statistics.median(c_loaded))}; first byte {secs(statistics.median(c_first))} (the server reads "
            f"{COMPARE_RUNS} records and diffs 7 pairs); {' '.join(f'{t * 1000:.0f}' for t in c_dcl)} ms"),
    ]
