"""Deployments on the real engine, lean: a job saves two versions of a tiny SavedModel, both are
registered, `dlbox serve --alias champion` serves version 1; moving the alias in the registry moves the
deployment (a client sending without pause sees zero failed requests, promotion and rollback); a killed
server comes back by the restart policy and a removed container by the loop; another user of the team
server neither serves nor sees the model or the deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import Rest, Traffic, ms, until

X = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
ANSWERS = {1: [[14.0], [4.5]], 2: [[140.0], [45.0]]}  # x @ [[1], [2], [3]] * scale, scale 1 and 10: exact floats

SAVE = """
import os
import tensorflow as tf

class Linear(tf.Module):
    def __init__(self, scale):
        super().__init__()
        self.w = tf.Variable([[1.0 * scale], [2.0 * scale], [3.0 * scale]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.matmul(x, self.w)}

out = os.path.join(os.environ["DLBOX_RUN_DIR"], "artifacts")
for version, scale in ((1, 1.0), (2, 10.0)):
    model = Linear(scale)
    tf.saved_model.save(model, os.path.join(out, f"v{version}"), signatures={"serving_default": model.__call__})
"""


def _answers(url: str, model: str, version: int) -> bool:
    try:
        return Rest(url)("POST", f"/v1/models/{model}/labels/champion:predict", {"instances": X}) == (
            200, {"predictions": ANSWERS[version]})
    except OSError:
        return False


@pytest.fixture(scope="module")
def model(dlbox, tf_image, run_id) -> dict:
    submitted = dlbox.json("run", "--image", tf_image["image"], "--", "python", "-c", SAVE)
    waited = dlbox("wait", submitted["id"], "--json", "--timeout", "600", check=False)
    assert json.loads(waited.stdout)["state"] == "succeeded", dlbox("logs", submitted["id"]).stdout[-2000:]
    name = f"d{run_id}"
    one = dlbox.json("models", "register", name, "--run", submitted["id"], "--path", "v1")
    dlbox.json("models", "register", name, "--run", submitted["id"], "--path", "v2")
    dlbox.json("models", "alias", name, "champion", "1")
    return one


@pytest.fixture(scope="module")
def served(dlbox, model) -> dict:
    started = time.monotonic()
    dep = dlbox.json("serve", model["name"], "--alias", "champion", "--memory", "2g")
    until(lambda: _answers(dep["rest_url"], model["name"], 1), timeout=180, what="version 1 served")
    print(f"serve: ready in {time.monotonic() - started:.1f}s")
    yield dep
    dlbox("deployments", "rm", dep["name"], check=False)


def _listed(dlbox, name: str) -> dict:
    return next(d for d in dlbox.json("deployments", "ls") if d["name"] == name)


def test_serve_predicts_what_the_model_computes_and_ls_shows_it(dlbox, model, served):
    assert served["name"] == model["name"] and served["follows"] == "champion"
    assert served["rest_url"].startswith("http://127.0.0.1:") and served["grpc_target"].startswith("127.0.0.1:")
    rest = Rest(served["rest_url"])
    assert rest("POST", f"/v1/models/{model['name']}:predict", {"instances": X}) == (200, {"predictions": ANSWERS[1]})
    listed = _listed(dlbox, served["name"])
    assert (listed["state"], listed["labels"], listed["restarts"], listed["last_error"]) == (
        "running", {"champion": 1}, 0, None)
    assert listed["image_id"] == model["image_id"]  # the model's own training image, by ID
    shown = dlbox("deployments", "show", served["name"]).stdout
    assert f"/v1/models/{model['name']}" in shown and "follows champion" in shown
    text = dlbox("deployments", "ls").stdout
    assert served["name"] in text and "champion=1" in text and "running" in text
    log = dlbox("deployments", "logs", served["name"], "--tail", "1000").stdout
    assert "version 1: AVAILABLE" in log and "/v1/models/" in log  # loads, and a line per request
    assert json.dumps(X) not in log  # request lines carry no payloads
    taken = dlbox("serve", model["name"], check=False)  # the name is taken: refused, the running one untouched
    assert taken.returncode == 1 and "already exists" in taken.stderr and taken.stderr.count("\n") == 1


def test_moving_the_alias_moves_the_deployment_with_zero_failed_requests(dlbox, model, served):
    path = f"/v1/models/{model['name']}/labels/champion:predict"
    for old, new in ((1, 2), (2, 1)):  # promotion, then rollback
        with Traffic(served["rest_url"], path, X, ANSWERS) as traffic:
            time.sleep(2)
            moved = time.monotonic()
            dlbox.json("models", "alias", model["name"], "champion", str(new))
            until(lambda: traffic.samples and traffic.samples[-1][2] == new, timeout=120,
                  what=f"the deployment to follow champion -> {new}")
            switched = time.monotonic()
            time.sleep(1)
        assert traffic.failed == [], traffic.failed[:5]
        after = {v for at, _, v in traffic.samples if at > switched}
        assert after == {new}, "every request after the switch goes to the new version"
        steady = [t for at, t, _ in traffic.samples if at < moved]
        during = [t for at, t, _ in traffic.samples if moved <= at <= switched]
        print(f"alias champion {old}->{new} followed in {switched - moved:.1f}s, 0 failed of "
              f"{len(traffic.samples)}; steady {ms(steady)}; during the switch {ms(during)}")
        listed = _listed(dlbox, served["name"])
        assert listed["labels"] == {"champion": new} and listed["restarts"] == 0  # the same container
    assert _listed(dlbox, served["name"])["versions"] == [1, 2]


def test_a_killed_server_and_a_removed_container_come_back(dlbox, model, served, docker_client):
    name = f"dlbox-deploy-{served['name']}"
    init_pid = docker_client.api.inspect_container(name)["State"]["Pid"]  # docker-init; the server is its child
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    os.kill(int(children[0]), 9)
    until(lambda: _listed(dlbox, served["name"])["restart_count"] >= 1, timeout=60, what="the engine's restart")
    until(lambda: _answers(served["rest_url"], model["name"], 1), timeout=180, what="serving again")
    listed = _listed(dlbox, served["name"])
    assert listed["restarts"] >= 1 and listed["state"] == "running"
    docker_client.api.remove_container(name, force=True)  # gone: the loop starts it again from the record
    until(lambda: _answers(served["rest_url"], model["name"], 1), timeout=180, what="started again by the loop")
    listed = _listed(dlbox, served["name"])
    assert listed["recreated"] == 1 and listed["last_error"].startswith("started again: its container is gone")
    assert "restarts" in dlbox("deployments", "ls").stdout.splitlines()[0].lower()


def test_another_user_can_neither_serve_nor_see_the_model(dlbox, model, served, test_env, start_server):
    owner = model["owner"]
    with start_server(test_env) as url:  # the team server takes over this home (it replaces the service)
        out = subprocess.run([sys.executable, "-m", "dlbox", "users", "add", "bob", "--json"], env=test_env,
                             capture_output=True, text=True, check=True)
        bob = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {json.loads(out.stdout)['token']}"},
                           timeout=60)
        for ref in (model["name"], f"{owner}/{model['name']}", f"{owner}/{model['name']}@champion"):
            refused = bob.post("/api/deployments", json={"model": ref, "name": "stolen"})
            assert refused.status_code == 404, refused.text
        assert bob.get("/api/deployments").json() == []
        for path in (f"/api/deployments/{served['name']}", f"/api/deployments/{served['name']}/logs",
                     f"/api/models/{model['name']}?owner={owner}"):
            assert bob.get(path).status_code == 404
        assert bob.delete(f"/api/deployments/{served['name']}").status_code == 404
        env = {**test_env, "DLBOX_URL": url, "DLBOX_TOKEN": bob.headers["Authorization"].split()[1]}
        env.pop("DLBOX_HOME")
        cli = subprocess.run([sys.executable, "-m", "dlbox", "serve", f"{owner}/{model['name']}"], env=env,
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert cli.returncode == 1 and "no model" in cli.stderr and cli.stderr.count("\n") == 1
        assert _answers(served["rest_url"], model["name"], 1)  # still serving, untouched
