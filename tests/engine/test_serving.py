"""The inference server on the real engine: a tiny SavedModel (2 versions) written by a helper
container of the TF image, served by serving.up; REST and gRPC (the real tensorflow-serving-api
client, in a container of the same image) against the model called in-process; label moves under
load; the restart policy; CIS section 5."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest

from helpers import Rest, Traffic, ms, until

X = [[1.0, 2.0, 3.0], [-1.5, 0.5, 4.0]]
TAGS = ["a", "bé"]

# Writes versions 1 and 2 (different weights) and what their signatures answer in-process.
MAKE_MODEL = r'''
import json, sys, numpy as np, tensorflow as tf
X = np.array(json.loads(sys.argv[1]), np.float32); TAGS = np.array([t.encode() for t in json.loads(sys.argv[2])])

class M(tf.Module):
    def __init__(self, scale):
        self.w = tf.Variable([[1.0 * scale, 2.0], [3.0, 4.0 * scale], [0.5, -1.0]])
        self.b = tf.Variable([0.25, -0.5])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.matmul(x, self.w) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.string, name="tag")])
    def multi(self, x, tag):
        y = tf.matmul(x, self.w) + self.b
        return {"y": y, "total": tf.reduce_sum(y, axis=1), "tag_bytes": tag, "tag_len": tf.strings.length(tag)}

expected = {}
for version, scale in ((1, 1.0), (2, 10.0)):
    m = M(scale)
    tf.saved_model.save(m, f"/out/{version}", signatures={"serving_default": m.serve, "multi": m.multi})
    loaded = tf.saved_model.load(f"/out/{version}")
    one = loaded.signatures["serving_default"](x=tf.constant(X))
    many = loaded.signatures["multi"](x=tf.constant(X), tag=tf.constant(TAGS))
    expected[version] = {"serving_default": {k: v.numpy().tolist() for k, v in one.items()},
                         "multi": {k: (v.numpy().tolist() if v.dtype != tf.string else
                                       [b.decode() for b in v.numpy().tolist()]) for k, v in many.items()}}
print("EXPECTED " + json.dumps(expected))
'''

# The real tensorflow-serving-api client: Predict, GetModelMetadata, GetModelStatus, and errors.
GRPC_CLIENT = r'''
import json, sys, grpc, numpy as np, tensorflow as tf
from tensorflow_serving.apis import (predict_pb2, prediction_service_pb2_grpc, get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc)
target, name = sys.argv[1], sys.argv[2]
X = np.array(json.loads(sys.argv[3]), np.float32)
channel = grpc.insecure_channel(target)
grpc.channel_ready_future(channel).result(timeout=30)
predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
status = model_service_pb2_grpc.ModelServiceStub(channel)
out = {}
for version in (1, 2):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.version.value = version
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    res = predict.Predict(req, timeout=30)
    out[f"predict{version}"] = {k: tf.make_ndarray(v).tolist() for k, v in res.outputs.items()}
    out[f"spec{version}"] = [res.model_spec.name, res.model_spec.version.value, res.model_spec.signature_name]
req = predict_pb2.PredictRequest()
req.model_spec.name, req.model_spec.version_label, req.model_spec.signature_name = name, "stable", "multi"
req.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
req.inputs["tag"].CopyFrom(tf.make_tensor_proto([b"a", b"b"]))
res = predict.Predict(req, timeout=30)
out["multi"] = {k: tf.make_ndarray(v).tolist() for k, v in res.outputs.items() if k != "tag_bytes"}
meta = get_model_metadata_pb2.GetModelMetadataRequest()
meta.model_spec.name = name
meta.metadata_field.append("signature_def")
res = predict.GetModelMetadata(meta, timeout=30)
sigs = get_model_metadata_pb2.SignatureDefMap()
res.metadata["signature_def"].Unpack(sigs)
out["metadata"] = {"version": res.model_spec.version.value, "signatures": sorted(sigs.signature_def),
                   "inputs": sorted(sigs.signature_def["serving_default"].inputs)}
st = get_model_status_pb2.GetModelStatusRequest()
st.model_spec.name = name
res = status.GetModelStatus(st, timeout=30)
out["status"] = [[s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_code]
                 for s in res.model_version_status]
errors = {}
for what, change in (("model", lambda r: setattr(r.model_spec, "name", "nope")),
                     ("version", lambda r: r.model_spec.version.__setattr__("value", 9)),
                     ("label", lambda r: setattr(r.model_spec, "version_label", "nope")),
                     ("dtype", lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2, 3]], np.int32))))):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    change(req)
    try:
        predict.Predict(req, timeout=30)
        errors[what] = "OK"
    except grpc.RpcError as exc:
        errors[what] = exc.code().name
out["errors"] = errors
print("GRPC " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def image(tf_image, docker_client) -> dict:
    """The session's TF image (never one of the caller's: tests do not depend on their environment)."""
    return docker_client.api.inspect_image(tf_image["image"])


@pytest.fixture(scope="module")
def model_dir(image, docker_client, tmp_path_factory, run_id) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("saved-model")
    out.chmod(0o755)
    os.chown(out, 1000, 1000)
    logs = docker_client.containers.run(
        image["Id"], ["python", "-c", MAKE_MODEL, json.dumps(X), json.dumps(TAGS)], user="1000:1000",
        network_mode="none", cap_drop=["ALL"], volumes={str(out): {"bind": "/out", "mode": "rw"}},
        labels={"dlbox.test-run": run_id}, remove=True, environment={"TF_CPP_MIN_LOG_LEVEL": "2"})
    line = next(x for x in logs.decode().splitlines() if x.startswith("EXPECTED "))
    expected = {int(k): v for k, v in json.loads(line.removeprefix("EXPECTED ")).items()}
    return out, expected


@pytest.fixture(scope="module")
def deployment(image, model_dir, test_env, run_id):
    """The serving container, started in the test session's own dlbox home and labels."""
    from dlbox import serving
    from dlbox.engine import api as engine

    out, _ = model_dir
    with pytest.MonkeyPatch.context() as patch:
        for key in ("DLBOX_HOME", "DLBOX_LABELS", "DLBOX_CACHE_DIR"):
            patch.setenv(key, test_env[key])
        engine.client.cache_clear()
        name = f"t{run_id}-serve"
        started = time.monotonic()
        dep = serving.up(name, "tester", image["Id"], {1: out / "1", 2: out / "2"}, {"stable": 1, "canary": 2},
                         "tiny", memory=2 * 1024**3, cpus=2.0)
        rest = Rest(dep.rest_url)
        until(lambda: _ready(rest, 2), timeout=180)
        print(f"deployment ready in {time.monotonic() - started:.1f}s")
        yield dep
        serving.remove(name)


def _ready(rest: Rest, count: int) -> bool:
    try:
        status, body = rest("GET", "/v1/models/tiny")
    except OSError:
        return False
    return status == 200 and sum(v["state"] == "AVAILABLE" for v in body["model_version_status"]) == count


def test_predict_row_and_columnar_equal_the_model_in_process(deployment, model_dir):
    _, expected = model_dir
    rest = Rest(deployment.rest_url)
    for version in (1, 2):
        want = expected[version]["serving_default"]["y"]
        assert rest("POST", f"/v1/models/tiny/versions/{version}:predict", {"instances": X}) == (
            200, {"predictions": want})
        assert rest("POST", f"/v1/models/tiny/versions/{version}:predict", {"inputs": X}) == (200, {"outputs": want})
        assert rest("POST", f"/v1/models/tiny/versions/{version}:predict", {"inputs": {"x": X}}) == (
            200, {"outputs": want})
    # row objects, several named outputs: a list of objects; _bytes outputs as b64
    multi = expected[1]["multi"]
    status, body = rest("POST", "/v1/models/tiny/labels/stable:predict", {
        "signature_name": "multi", "instances": [{"x": x, "tag": t} for x, t in zip(X, TAGS)]})
    assert status == 200
    assert [{k: v for k, v in row.items() if k != "tag_bytes"} for row in body["predictions"]] == [
        {"y": multi["y"][i], "total": multi["total"][i], "tag_len": multi["tag_len"][i]} for i in range(2)]
    import base64

    assert [base64.b64decode(r["tag_bytes"]["b64"]).decode() for r in body["predictions"]] == TAGS
    # columnar with b64 input values: an object of named outputs
    status, body = rest("POST", "/v1/models/tiny/versions/2:predict", {"signature_name": "multi", "inputs": {
        "x": X, "tag": [{"b64": base64.b64encode(t.encode()).decode()} for t in TAGS]}})
    assert status == 200 and set(body["outputs"]) == {"y", "total", "tag_bytes", "tag_len"}
    assert body["outputs"]["y"] == expected[2]["multi"]["y"] and body["outputs"]["total"] == expected[2]["multi"]["total"]
    # latest (no version) is the highest available one
    assert rest("POST", "/v1/models/tiny:predict", {"instances": X})[1] == {"predictions": expected[2]["serving_default"]["y"]}


def test_status_and_metadata_have_tf_servings_shapes(deployment):
    rest = Rest(deployment.rest_url)
    ok = {"error_code": "OK", "error_message": ""}
    assert rest("GET", "/v1/models/tiny") == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": ok}, {"version": "2", "state": "AVAILABLE", "status": ok}]})
    assert rest("GET", "/v1/models/tiny/versions/2") == (200, {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok}]})
    assert rest("GET", "/v1/models/tiny/labels/stable")[1]["model_version_status"][0]["version"] == "1"
    status, meta = rest("GET", "/v1/models/tiny/labels/canary/metadata")
    assert status == 200 and meta["model_spec"] == {"name": "tiny", "signature_name": "", "version": "2"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "multi"} <= set(sigs)
    x = sigs["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and x["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "3", "name": ""}], "unknown_rank": False}
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert set(sigs["multi"]["outputs"]) == {"y", "total", "tag_bytes", "tag_len"}
    assert rest("GET", "/v1/models/tiny/metadata")[1]["model_spec"]["version"] == "2"


def test_every_error_case_answers_tf_servings_status(deployment):
    rest = Rest(deployment.rest_url)
    cases = [
        ("GET", "/v1/models/nope", None, None, 404),
        ("GET", "/v1/models/tiny/versions/9", None, None, 404),
        ("GET", "/v1/models/tiny/labels/nope", None, None, 400),
        ("POST", "/v1/models/nope:predict", {"instances": X}, None, 404),
        ("POST", "/v1/models/tiny/versions/9:predict", {"instances": X}, None, 404),
        ("POST", "/v1/models/tiny/labels/nope:predict", {"instances": X}, None, 400),
        ("GET", "/v1/models/tiny/versions/9/metadata", None, None, 404),
        ("POST", "/v1/models/tiny:predict", None, b"{not json", 400),
        ("POST", "/v1/models/tiny:predict", {"instances": [["a", "b", "c"]]}, None, 400),  # wrong dtype
        ("POST", "/v1/models/tiny:predict", {"instances": [[1.0, 2.0, 3.0], [1.0, 2.0]]}, None, 400),  # ragged
        ("POST", "/v1/models/tiny:predict", {"inputs": [[1.0, 2.0]]}, None, 400),  # wrong shape
        ("POST", "/v1/models/tiny:predict", {"signature_name": "nope", "instances": X}, None, 400),
        ("POST", "/v1/models/tiny:predict", {"instances": X, "inputs": X}, None, 400),
        ("POST", "/v1/models/tiny:predict", {"signature_name": "multi", "instances": [{"x": X[0]}]}, None, 400),
        ("GET", "/v1/nothing", None, None, 404),
        ("DELETE", "/v1/models/tiny", None, None, 404),
    ]
    for method, path, body, raw, want in cases:
        status, answer = rest(method, path, body, raw)
        assert (status, type(answer.get("error"))) == (want, str), (method, path, body, raw, answer)
    assert "Servable not found for request: Latest(nope)" in rest("POST", "/v1/models/nope:predict", {"instances": X})[1]["error"]
    assert rest("GET", "/v1/models/tiny/labels/nope")[1] == {"error": "Unrecognized servable version label: nope"}


def test_grpc_with_the_tensorflow_serving_api_client(deployment, model_dir, image, docker_client, run_id):
    from dlbox.containers import networks
    from dlbox.engine import api as engine

    _, expected = model_dir
    attrs = engine.container_attrs(f"dlbox-deploy-{deployment.name}")
    lib = next(m["Source"] for m in attrs["Mounts"] if m["Destination"] == "/opt/dlbox/serving")
    network = next(iter(attrs["NetworkSettings"]["Networks"]))
    logs = docker_client.containers.run(
        image["Id"], ["python", "-c", GRPC_CLIENT, f"dlbox-deploy-{deployment.name}:8500", "tiny", json.dumps(X)],
        user="1000:1000", network=network, cap_drop=["ALL"], remove=True,
        volumes={lib: {"bind": "/opt/dlbox/serving", "mode": "ro"}},
        environment={"PYTHONPATH": "/opt/dlbox/serving", "TF_CPP_MIN_LOG_LEVEL": "2"}, labels={"dlbox.test-run": run_id})
    line = next(x for x in logs.decode().splitlines() if x.startswith("GRPC "))
    got = json.loads(line.removeprefix("GRPC "))
    assert got["predict1"] == expected[1]["serving_default"] and got["predict2"] == expected[2]["serving_default"]
    assert got["spec1"] == ["tiny", 1, "serving_default"]
    assert got["multi"] == {k: v for k, v in expected[1]["multi"].items() if k != "tag_bytes"} | {"tag_len": [1, 1]}
    assert got["metadata"] == {"version": 2, "signatures": ["__saved_model_init_op", "multi", "serving_default"],
                               "inputs": ["x"]}
    assert got["status"] == [[1, "AVAILABLE", 0], [2, "AVAILABLE", 0]]
    assert got["errors"] == {"model": "NOT_FOUND", "version": "NOT_FOUND", "label": "INVALID_ARGUMENT",
                             "dtype": "INVALID_ARGUMENT"}
    assert networks.for_owner("tester").name == network


def test_metrics_health_and_request_log(deployment):
    from dlbox.engine import api as engine

    rest = Rest(deployment.rest_url)
    assert rest("GET", "/healthz") == (200, {"status": "ok"})
    status, body = rest("GET", "/monitoring/prometheus/metrics")
    text = body["text"]
    assert status == 200 and "# TYPE dlbox_serving_request_latency_seconds histogram" in text
    assert 'dlbox_serving_requests_total{model="tiny",version="1",signature="serving_default",api="rest",code="200"}' in text
    assert 'dlbox_serving_request_errors_total{model="tiny",version="",signature="",api="rest",code="404"}' in text
    assert 'le="+Inf"' in text
    log = b"".join(engine.logs(f"dlbox-deploy-{deployment.name}")).decode()
    assert "POST /v1/models/tiny/versions/1:predict 200" in log
    assert "1.0, 2.0" not in log and "-1.5" not in log  # no payloads


def test_cis_section_5_of_a_serving_container(deployment, docker_client):
    from dlbox.engine import cis

    attrs = docker_client.api.inspect_container(f"dlbox-deploy-{deployment.name}")
    top = docker_client.api.top(attrs["Id"], ps_args="-eo pid,args")
    processes = [row[top["Titles"].index("COMMAND")] for row in top["Processes"]]
    findings = cis.check(attrs, docker_client.api.info(), processes)
    assert cis.warnings(findings) == [], json.dumps([f.__dict__ for f in findings], indent=1)
    by_rule = {f.rule: f for f in findings}
    assert by_rule["5.13"].status == by_rule["5.27"].status == by_rule["5.30"].status == cis.PASS
    assert attrs["Config"]["User"] == "1000:1000" and attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert {m["Destination"]: m["RW"] for m in attrs["Mounts"]} == {
        "/models/1": False, "/models/2": False, "/opt/dlbox/serving": False, "/dlbox/serving/config": False}
    assert {p: b[0]["HostIp"] for p, b in attrs["HostConfig"]["PortBindings"].items()} == {
        "8501/tcp": "127.0.0.1", "8500/tcp": "127.0.0.1"}
    assert attrs["Config"]["Labels"]["dlbox.kind"] == "deployment"


def test_label_moves_under_load_fail_no_request(deployment, model_dir, test_env):
    from dlbox import serving

    _, expected = model_dir
    answers = {v: expected[v]["serving_default"]["y"] for v in (1, 2)}
    rest = Rest(deployment.rest_url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLBOX_HOME", test_env["DLBOX_HOME"])
        serving.move_labels(deployment.name, {"stable": 1})  # version 2 unloads: the move must load it again
        until(lambda: rest("GET", "/v1/models/tiny/versions/2")[1]["model_version_status"][0]["state"] == "END",
              timeout=120)
        for old, new in ((1, 2), (2, 1)):  # promotion, then rollback
            with Traffic(deployment.rest_url, "/v1/models/tiny/labels/stable:predict", X, answers) as traffic:
                time.sleep(2)
                moved = time.monotonic()
                serving.move_labels(deployment.name, {"stable": new})
                until(lambda: rest("GET", f"/v1/models/tiny/versions/{old}")[1][
                    "model_version_status"][0]["state"] == "END", timeout=120)
                switched = time.monotonic()
                time.sleep(1)
            assert traffic.failed == []
            steady = [t for at, t, _ in traffic.samples if at < moved]
            during = [t for at, t, _ in traffic.samples if moved <= at <= switched]
            after = [v for at, _, v in traffic.samples if at > switched]
            assert after and set(after) == {new}, "every request after the switch goes to the new version"
            print(f"label move {old}->{new} in {switched - moved:.1f}s, 0 failed of {len(traffic.samples)}; "
                  f"steady {ms(steady)}; during the switch {ms(during)}")
        serving.move_labels(deployment.name, {"stable": 1, "canary": 2})
        until(lambda: _ready(rest, 2), timeout=120)


def test_a_killed_server_comes_back_by_the_restart_policy(deployment, docker_client):
    name = f"dlbox-deploy-{deployment.name}"
    attrs = docker_client.api.inspect_container(name)
    init_pid = attrs["State"]["Pid"]  # docker-init; the server is its child
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    os.kill(int(children[0]), 9)
    until(lambda: docker_client.api.inspect_container(name)["RestartCount"] == 1, timeout=60)
    until(lambda: _ready(Rest(deployment.rest_url), 2), timeout=180)
    assert Rest(deployment.rest_url)("POST", "/v1/models/tiny:predict", {"instances": X})[0] == 200


def test_batching_answers_each_request_its_own_rows_and_503_while_loading(image, model_dir, test_env, run_id):
    """A second deployment with --batch-max: before a version is loaded predict is 503 (and the status
    says LOADING); then 8 clients at once each get their own rows back from fewer, batched calls."""
    from dlbox import serving
    from dlbox.engine import api as engine

    out, expected = model_dir
    with pytest.MonkeyPatch.context() as patch:
        for key in ("DLBOX_HOME", "DLBOX_LABELS", "DLBOX_CACHE_DIR"):
            patch.setenv(key, test_env[key])
        engine.client.cache_clear()
        name = f"t{run_id}-batch"
        dep = serving.up(name, "tester", image["Id"], {1: out / "1"}, {"stable": 1}, "tiny", memory=2 * 1024**3,
                         grpc=False, batch_max=8, batch_timeout_ms=20)
        try:
            seen = set()

            def answered():
                try:
                    rest = Rest(dep.rest_url)
                    status, body = rest("POST", "/v1/models/tiny:predict", {"instances": X})
                    state = rest("GET", "/v1/models/tiny")[1].get("model_version_status", [{}])[0].get("state")
                except (OSError, http.client.HTTPException):
                    return False
                seen.add((status, state if status == 503 else None, "error" in body))
                return status == 200

            until(answered, timeout=180, every=0.05)
            assert (503, "LOADING", True) in seen, seen  # never a request to a version still loading
            rows = [[float(i), 1.0, -float(i)] for i in range(8)]
            results, want = {}, {}

            def client(i):
                results[i] = [Rest(dep.rest_url)("POST", "/v1/models/tiny/labels/stable:predict",
                                                 {"instances": [rows[i]]}) for _ in range(10)]

            w = [[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]]
            for i, r in enumerate(rows):
                want[i] = [[sum(r[k] * w[k][j] for k in range(3)) + b for j, b in enumerate([0.25, -0.5])]]
            threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            for i in range(8):
                for status, body in results[i]:
                    assert status == 200 and len(body["predictions"]) == 1
                    assert body["predictions"][0] == pytest.approx(want[i][0])
            text = Rest(dep.rest_url)("GET", "/monitoring/prometheus/metrics")[1]["text"]
            calls = int(next(x for x in text.splitlines() if x.startswith("dlbox_serving_batches_total")).split()[-1])
            held = int(next(x for x in text.splitlines() if x.startswith("dlbox_serving_batched_requests_total")).split()[-1])
            print(f"batching: {held} requests in {calls} calls")
            assert held >= 81 and calls < held
            for got, x in zip(expected[1]["serving_default"]["y"], X):  # the weights above are version 1's
                assert got == pytest.approx([sum(x[k] * w[k][j] for k in range(3)) + b
                                             for j, b in enumerate([0.25, -0.5])])
        finally:
            serving.remove(name)


def test_a_failed_start_leaves_nothing_and_a_taken_name_touches_nothing(deployment, image, model_dir, test_env,
                                                                          run_id):
    import socket

    from dlbox import config, serving
    from dlbox.engine import api as engine
    from dlbox.errors import DlboxError

    out, _ = model_dir
    with pytest.MonkeyPatch.context() as patch, socket.socket() as taken:
        for key in ("DLBOX_HOME", "DLBOX_LABELS", "DLBOX_CACHE_DIR"):
            patch.setenv(key, test_env[key])
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        name = f"t{run_id}-fails"
        with pytest.raises(DlboxError) as failed:
            serving.up(name, "tester", image["Id"], {1: out / "1"}, {}, "tiny", port=taken.getsockname()[1])
        assert failed.value.code == "port_in_use"
        assert engine.container_attrs(f"dlbox-deploy-{name}") is None
        assert not (config.home() / "deployments" / name).exists()
        before = (config.home() / "deployments" / deployment.name / "config" / "config.json").read_text()
        with pytest.raises(DlboxError) as exists:
            serving.up(deployment.name, "tester", image["Id"], {1: out / "1"}, {"other": 1}, "tiny")
        assert exists.value.code == "exists"
        assert (config.home() / "deployments" / deployment.name / "config" / "config.json").read_text() == before


def test_a_malformed_label_config_keeps_the_last_good_one(deployment, test_env):
    from dlbox import serving

    rest = Rest(deployment.rest_url)
    config = Path(test_env["DLBOX_HOME"]) / "deployments" / deployment.name / "config" / "config.json"
    for bad in ('{"labels": {"stable": "one"}}', "[1, 2]", "{not json"):
        config.write_text(bad)
        time.sleep(0.6)  # the server polls every 0.2 s
        assert rest("GET", "/v1/models/tiny/labels/stable")[0] == 200
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLBOX_HOME", test_env["DLBOX_HOME"])
        serving.move_labels(deployment.name, {"stable": 2, "canary": 2}, serve=[1])
        until(lambda: rest("GET", "/v1/models/tiny/labels/stable")[1]["model_version_status"][0]["version"] == "2", timeout=120)
        serving.move_labels(deployment.name, {"stable": 1, "canary": 2})
        until(lambda: rest("GET", "/v1/models/tiny/labels/stable")[1]["model_version_status"][0]["version"] == "1", timeout=120)
