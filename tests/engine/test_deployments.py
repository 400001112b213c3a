"""Deployments on the real engine, lean: a job saves two versions of a tiny SavedModel, both are
registered, `dlbox serve --alias champion` serves version 1; moving the alias in the registry moves the
deployment (a client sending without pause sees zero failed requests, promotion and rollback); a killed
server comes back by the restart policy and a removed container by the loop; another user of the team
server neither serves nor sees the model or the deployment."""

from __future__ import annotations

import http.client
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
# x @ [[1], [2], [3]] * scale, scale 1, 10 and (version 3, trained in another image) 100: exact floats
ANSWERS = {1: [[14.0], [4.5]], 2: [[140.0], [45.0]], 3: [[1400.0], [450.0]]}

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


def _answers(url: str, model: str, version: int, label: str = "champion") -> bool:
    try:
        return Rest(url)("POST", f"/v1/models/{model}/labels/{label}:predict", {"instances": X}) == (
            200, {"predictions": ANSWERS[version]})
    except (OSError, http.client.HTTPException):
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
    assert listed["recreated"] == 1
    assert listed["last_error"].startswith("started again: the front (its container is gone")
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


def _front(url: str) -> dict:
    try:
        return Rest(url)("GET", "/healthz")[1]
    except (OSError, http.client.HTTPException):
        return {}


def test_replicas_out_of_range_are_refused_in_one_line(dlbox, model):
    for bad in ("0", "9"):
        refused = dlbox("serve", model["name"], "--replicas", bad, "--name", "toomany", check=False)
        assert refused.returncode == 2 and "--replicas" in refused.stderr and refused.stderr.count("\n") == 1
    assert all(d["name"] != "toomany" for d in dlbox.json("deployments", "ls"))


def test_two_replicas_behind_a_front_lose_no_request_when_one_dies(dlbox, model, docker_client, run_id):
    """--replicas 2: a replica killed (the engine restarts it) and one removed (the loop replaces it),
    each under steady traffic through the front: zero failed requests, counted."""
    name = f"r{run_id}"
    dep = dlbox.json("serve", f"{model['name']}:1", "--replicas", "2", "--name", name, "--memory", "1g")
    try:
        path = f"/v1/models/{model['name']}:predict"
        until(lambda: _front(dep["rest_url"]).get("ready") == 2, timeout=240, what="both replicas ready")
        listed = _listed(dlbox, name)
        assert listed["replicas"] == 2 and [r["name"] for r in listed["replica_states"]] == [
            f"dlbox-replica-{name}-g1-r0", f"dlbox-replica-{name}-g1-r1"]
        for replica in listed["replica_states"]:  # hardened like the front; only the front publishes ports
            attrs = docker_client.api.inspect_container(replica["name"])
            assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["HostConfig"]["CapDrop"] == ["ALL"]
            assert attrs["Config"]["User"] == "1000:1000" and not attrs["HostConfig"]["PortBindings"]
        front = docker_client.api.inspect_container(f"dlbox-deploy-{name}")
        assert front["HostConfig"]["ReadonlyRootfs"] and front["HostConfig"]["CapDrop"] == ["ALL"]
        assert set(front["HostConfig"]["PortBindings"]) == {"8501/tcp", "8500/tcp"}
        for how, replica in (("killed", 1), ("removed", 0)):
            target = f"dlbox-replica-{name}-g1-r{replica}"
            with Traffic(dep["rest_url"], path, X, ANSWERS) as traffic:
                time.sleep(2)
                cut = time.monotonic()
                if how == "killed":  # its server process: the engine's restart policy brings it back
                    init_pid = docker_client.api.inspect_container(target)["State"]["Pid"]
                    os.kill(int(Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()[0]), 9)
                else:
                    docker_client.api.remove_container(target, force=True)  # gone: the loop starts it again
                until(lambda: _front(dep["rest_url"]).get("ready") == 1, timeout=30, what="the front to see it")
                until(lambda: _front(dep["rest_url"]).get("ready") == 2, timeout=240,
                         what=f"replica {replica} back")
                back = time.monotonic()
                time.sleep(1)
            assert traffic.failed == [], traffic.failed[:5]
            assert {v for _, _, v in traffic.samples} == {1}
            steady = [t for at, t, _ in traffic.samples if at < cut]
            during = [t for at, t, _ in traffic.samples if cut <= at <= back]
            print(f"replica {replica} {how}: back in {back - cut:.1f}s, 0 failed of {len(traffic.samples)}; "
                  f"steady {ms(steady)}; while one replica was down {ms(during)}")
        listed = _listed(dlbox, name)
        assert listed["recreated"] == 1 and listed["restarts"] >= 2
        assert listed["last_error"].startswith(f"started again: replica 0 of generation 1 (its container is gone")
        logs = dlbox("deployments", "logs", name, "--tail", "50").stdout
        assert f"==> dlbox-replica-{name}-g1-r1 <==" in logs and f"==> dlbox-deploy-{name} <==" in logs
    finally:
        dlbox("deployments", "rm", name, check=False)
    assert not [c for c in docker_client.api.containers(all=True, filters={"label": f"dlbox.deployment={name}"})]


@pytest.fixture(scope="module")
def other_image(dlbox, tf_image, tmp_path_factory, run_id) -> dict:
    """The same preset with one more ENV line: another image ID, built from the cached layers."""
    from dlbox.spec import presets

    project = tmp_path_factory.mktemp("tf-project-two")
    spec = presets.text("tensorflow-2.9").replace("name: tensorflow-2.9\n", f"name: t{run_id}-tf-two\n", 1)
    (project / "dlbox.yaml").write_text(spec + "env:\n  DLBOX_TEST_IMAGE: two\n")
    built = dlbox.json("build", cwd=project)
    assert built["id"] != tf_image["id"]
    return built


def test_a_move_to_a_version_of_another_image_loses_no_request(dlbox, model, other_image, docker_client, run_id):
    """Version 3 was trained in another image: moving the alias to it starts a new generation of
    replicas, the front switches once they are ready, the old generation drains and goes; and back."""
    submitted = dlbox.json("run", "--image", other_image["image"], "--", "python", "-c",
                           SAVE.replace("((1, 1.0), (2, 10.0))", "((3, 100.0),)"))
    waited = dlbox("wait", submitted["id"], "--json", "--timeout", "600", check=False)
    assert json.loads(waited.stdout)["state"] == "succeeded", dlbox("logs", submitted["id"]).stdout[-2000:]
    three = dlbox.json("models", "register", model["name"], "--run", submitted["id"], "--path", "v3")
    assert three["version"] == 3 and three["image_id"] != model["image_id"]
    dlbox.json("models", "alias", model["name"], "cross", "1")
    name = f"x{run_id}"
    dep = dlbox.json("serve", model["name"], "--alias", "cross", "--replicas", "2", "--name", name, "--memory", "1g")
    try:
        until(lambda: _front(dep["rest_url"]).get("ready") == 2, timeout=240, what="both replicas ready")
        path = f"/v1/models/{model['name']}/labels/cross:predict"
        for old, new, generation in ((1, 3, 2), (3, 1, 3)):  # promotion, then rollback: each a new generation
            with Traffic(dep["rest_url"], path, X, ANSWERS) as traffic:
                time.sleep(2)
                moved = time.monotonic()
                dlbox.json("models", "alias", model["name"], "cross", str(new))
                until(lambda: traffic.samples and traffic.samples[-1][2] == new, timeout=300,
                         what=f"the deployment to follow cross -> {new}")
                switched = time.monotonic()
                until(lambda: _listed(dlbox, name)["moving_from"] is None, timeout=60,
                         what="the old generation drained and removed")
                time.sleep(1)
            assert traffic.failed == [], traffic.failed[:5]
            after = {v for at, _, v in traffic.samples if at > switched}
            assert after == {new}, "every request after the switch goes to the new generation"
            steady = [t for at, t, _ in traffic.samples if at < moved]
            during = [t for at, t, _ in traffic.samples if moved <= at <= switched]
            print(f"cross-image move {old}->{new} (generation {generation}) in {switched - moved:.1f}s, 0 failed of "
                  f"{len(traffic.samples)}; steady {ms(steady)}; during the switch {ms(during)}")
            listed = _listed(dlbox, name)
            image = three["image_id"] if new == 3 else model["image_id"]
            assert (listed["generation"], listed["image_id"], listed["labels"]) == (generation, image, {"cross": new})
            assert [r["generation"] for r in listed["replica_states"]] == [generation, generation]
            left = docker_client.api.containers(all=True, filters={"label": f"dlbox.deployment={name}"})
            assert sorted(c["Names"][0].lstrip("/") for c in left) == sorted(
                [f"dlbox-deploy-{name}"] + [f"dlbox-replica-{name}-g{generation}-r{i}" for i in range(2)])
    finally:
        dlbox("deployments", "rm", name, check=False)
