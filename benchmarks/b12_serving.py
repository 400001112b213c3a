"""Benchmark 12: the inference server (issue 13) against the model called in-process.

A digits-sized SavedModel (64 inputs, a 64x128x10 dense net with softmax) is served by
dlbox.serving.up; one client script runs inside the serving container itself (the same cores,
the same image), so every figure pays the same costs: in-process
`model.signatures["serving_default"]` calls (the physical limit), dlbox REST at batch 1 and 32 over
one keep-alive connection, and dlbox gRPC (tensorflow-serving-api's client) at batch 1. Sequential
requests: req/s = 1 / mean latency. Then 16 client processes at once (batch 1 each, keep-alive),
against the same server with and without --batch-max 16.
Targets: a REST request at batch 1 costs at most 1.5 ms p50 more than the in-process call;
batching gives at least 1.5x the unbatched req/s under 16 clients. Not measured yet: MLflow's server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from common import DOCKER, LABEL, QUICK, WS_IMAGE, BenchError, Row, Runner, say

NUMBER = 12
TITLE = "12. model serving"
OVERHEAD_TARGET = 0.0015  # seconds over in-process, p50, batch 1
REQUESTS = 500 if QUICK else 3000

MAKE_MODEL = r'''
import tensorflow as tf
tf.random.set_seed(0)

class Digits(tf.Module):
    def __init__(self):
        self.w1 = tf.Variable(tf.random.normal([64, 128], stddev=0.1))
        self.w2 = tf.Variable(tf.random.normal([128, 10], stddev=0.1))

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
    def serve(self, pixels):
        return {"probabilities": tf.nn.softmax(tf.matmul(tf.nn.relu(tf.matmul(pixels, self.w1)), self.w2))}

m = Digits()
tf.saved_model.save(m, "/out/1", signatures={"serving_default": m.serve})
'''

CLIENT = r'''
import json, sys, time, http.client, numpy as np, tensorflow as tf, grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
n = int(sys.argv[1])
rng = np.random.default_rng(0)
x = {b: rng.random((b, 64), dtype=np.float32) for b in (1, 32)}

def run(call):
    for _ in range(min(200, n)):
        call()
    times = []
    for _ in range(n):
        t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
    times.sort()
    return {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)], "rps": len(times) / sum(times)}

out = {}
fn = tf.saved_model.load("/models/1").signatures["serving_default"]
for b in (1, 32):
    out[f"inprocess{b}"] = run(lambda: fn(pixels=x[b])["probabilities"].numpy())
conn = http.client.HTTPConnection("127.0.0.1", 8501)
def rest(body):
    conn.request("POST", "/v1/models/digits:predict", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse(); data = r.read()
    assert r.status == 200, data[:200]
    return json.loads(data)
for b in (1, 32):
    body = json.dumps({"instances": x[b].tolist()})
    out[f"rest{b}"] = run(lambda: rest(body))
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("127.0.0.1:8500"))
req = predict_pb2.PredictRequest()
req.model_spec.name = "digits"
req.inputs["pixels"].CopyFrom(tf.make_tensor_proto(x[1]))
out["grpc1"] = run(lambda: tf.make_ndarray(stub.Predict(req, timeout=10).outputs["probabilities"]))
print("BENCH " + json.dumps(out))
'''


# 16 processes (no TensorFlow: the clients must not eat the cores the server needs more than they must).
CONCURRENT = r'''
import json, sys, time, http.client, multiprocessing as mp
seconds, clients = float(sys.argv[1]), int(sys.argv[2])
body = json.dumps({"instances": [[0.5] * 64]})

def client(_):
    conn = http.client.HTTPConnection("127.0.0.1", 8501)
    times, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        conn.request("POST", "/v1/models/digits:predict", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse(); r.read()
        if r.status != 200:
            raise SystemExit(f"status {r.status}")
        times.append(time.perf_counter() - t)
    return times

with mp.Pool(clients) as pool:
    started = time.monotonic()
    parts = pool.map(client, range(clients))
    wall = time.monotonic() - started
times = sorted(t for p in parts for t in p)
print("BENCH " + json.dumps({"rps": len(times) / wall, "p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}))
'''
CLIENTS = 16
BATCH_TARGET = 1.5


WAIT = ("import time,urllib.request\nfor _ in range(600):\n try:\n"
        "  urllib.request.urlopen('http://127.0.0.1:8501/healthz');break\n except Exception: time.sleep(0.2)")


def _results(text: str) -> dict:
    line = next((x for x in text.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise BenchError("the client printed no results")
    return json.loads(line.removeprefix("BENCH "))


def _ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def bench(runner: Runner, work: Path) -> list[Row]:
    from dlbox import serving
    from dlbox.engine import api as engine

    saved = os.environ.copy()
    os.environ["DLBOX_HOME"] = str(work / "serving-home")
    os.environ["DLBOX_LABELS"] = ",".join(filter(None, [os.environ.get("DLBOX_LABELS", "").strip(","), LABEL]))
    name = "bench-" + LABEL.rsplit("-", 1)[1]
    models = work / "serving-model"
    models.mkdir(mode=0o755)
    os.chown(models, 1000, 1000)
    try:
        image = engine.image_attrs(WS_IMAGE)
        runner.run("serving-model", [DOCKER, "run", "--rm", "--network", "none", "--user", "1000:1000",
                                     "--cap-drop", "ALL", "--label", LABEL, "-e", "TF_CPP_MIN_LOG_LEVEL=2",
                                     "-v", f"{models}:/out", image["Id"], "python", "-c", MAKE_MODEL])
        say("12. serving: starting the deployment")
        dep = serving.up(name, "bench", image["Id"], {1: models / "1"}, {}, "digits", memory=3 * 1024**3,
                         access_log=False)  # a log line per request would be measured too
        container = f"dlbox-deploy-{dep.name}"
        runner.run("serving-wait", [DOCKER, "exec", container, "python", "-c", WAIT])
        say(f"12. serving: {REQUESTS} sequential requests of each kind, inside the serving container")
        _, text = runner.run("serving-client", [DOCKER, "exec", container, "python", "-c", CLIENT, str(REQUESTS)])
        got = _results(text)
        seconds = "5" if QUICK else "15"
        say(f"12. serving: {CLIENTS} concurrent clients for {seconds} s, unbatched")
        got["concurrent"] = _results(runner.run("serving-concurrent", [DOCKER, "exec", container, "python", "-c",
                                                                      CONCURRENT, seconds, str(CLIENTS)])[1])
        serving.remove(name)
        say(f"12. serving: {CLIENTS} concurrent clients for {seconds} s, --batch-max {CLIENTS}")
        batched = serving.up(name, "bench", image["Id"], {1: models / "1"}, {}, "digits", memory=3 * 1024**3,
                             access_log=False, grpc=False, batch_max=CLIENTS, batch_timeout_ms=1.0)
        container = f"dlbox-deploy-{batched.name}"
        runner.run("serving-wait-batched", [DOCKER, "exec", container, "python", "-c", WAIT])
        got["batched"] = _results(runner.run("serving-batched", [DOCKER, "exec", container, "python", "-c",
                                                                CONCURRENT, seconds, str(CLIENTS)])[1])
    finally:
        try:
            serving.remove(name)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    base = got["inprocess1"]
    rows = [Row("12. in-process signature call, batch 1", _ms(base["p50"]), note=f"p99 {_ms(base['p99'])}, "
                f"{base['rps']:.0f} req/s (the limit)"),
            Row("12. in-process signature call, batch 32", _ms(got["inprocess32"]["p50"]),
                note=f"p99 {_ms(got['inprocess32']['p99'])}, {got['inprocess32']['rps']:.0f} calls/s")]
    for key, what in (("rest1", "dlbox REST, batch 1"), ("rest32", "dlbox REST, batch 32"), ("grpc1", "dlbox gRPC, batch 1")):
        ours, theirs = got[key], got["inprocess32" if key.endswith("32") else "inprocess1"]
        over = ours["p50"] - theirs["p50"]
        target = key == "rest1"
        rows.append(Row(f"12. {what} (vs in-process)", _ms(ours["p50"]), _ms(theirs["p50"]),
                        f"+{over * 1000:.2f} ms", "p50 <= +1.5 ms" if target else "-",
                        ("pass" if over <= OVERHEAD_TARGET else "MISS") if target else "-",
                        f"p99 {_ms(ours['p99'])}, {ours['rps']:.0f} req/s, {REQUESTS} sequential"))
    plain, batched = got["concurrent"], got["batched"]
    gain = batched["rps"] / plain["rps"]
    rows.append(Row(f"12. dlbox REST, {CLIENTS} clients, --batch-max {CLIENTS} (vs off)", f"{batched['rps']:.0f} req/s",
                    f"{plain['rps']:.0f} req/s", f"{gain:.2f}x", f">= {BATCH_TARGET}x", "pass" if gain >= BATCH_TARGET
                    else "MISS", f"p50/p99 {_ms(batched['p50'])}/{_ms(batched['p99'])} vs "
                                 f"{_ms(plain['p50'])}/{_ms(plain['p99'])}"))
    return rows
