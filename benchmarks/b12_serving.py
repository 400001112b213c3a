"""Benchmark 12: the inference server (issue 13) against the model called in-process and against MLflow.

A digits-sized SavedModel (64 inputs, a 64x128x10 dense net with softmax) is served by
dlbox.serving.up; one client script runs inside the serving container itself (the same cores,
the same image), so every figure pays the same costs: in-process
`model.signatures["serving_default"]` calls (the physical limit), dlbox REST at batch 1 and 32 over
one keep-alive connection, and dlbox gRPC (tensorflow-serving-api's client) at batch 1. Sequential
requests: req/s = 1 / mean latency. Then 16 client processes at once (batch 1 each, keep-alive),
against the same server with and without --batch-max 16. Then the same sequential client through a
deployment's front (`--replicas 1`: the front holds the ports and proxies to one replica), run inside that
replica and sending to the front by its container name, with its own in-process figures from the same run.

The peer a user would otherwise pick: `mlflow models serve` (MLflow 2.22.5, its TensorFlow
flavor, `--env-manager local`) of the same SavedModel, in a container of its own made from the model's
image plus MLflow (tagged dlbox-bench/mlflow:<version>-<recipe hash> and kept, so the next run does not
install it again), with the memory and CPU limits of dlbox's serving container. MLflow 2.x saves a TF2
model from a tf.Module, so a module that calls the SavedModel's serving_default signature is saved
with `mlflow.tensorflow.save_model` (MLflow's pyfunc then calls the same graph). The same client loop
as dlbox REST sends `POST /invocations` (`{"instances": ...}`) at batch 1 and 32, and the same 16
client processes. Before its client times anything it checks that MLflow's predictions for 8 rows
equal dlbox's (so both do the same work). MLflow's server is as `mlflow models serve` starts it
(uvicorn, 1 worker). Both servers run side by side (an idle one takes no CPU), so the two halves of
each comparison are measured one right after the other.

Targets: dlbox REST at batch 1 has at least 2x MLflow's req/s and a lower p99; a REST request at
batch 1 costs at most 1.5 ms p50 more than the in-process call, to the server and through the front; batching gives at least 1.5x the
unbatched req/s under 16 clients.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from common import DOCKER, LABEL, QUICK, RUN_ID, WS_IMAGE, BenchError, Row, Runner, say

NUMBER = 12
TITLE = "12. model serving"
OVERHEAD_TARGET = 0.0015  # seconds over in-process, p50, batch 1
MLFLOW_TARGET = 2.0       # dlbox REST req/s over MLflow's, batch 1 (and a lower p99)
REQUESTS = 500 if QUICK else 3000
MEMORY = 3 * 1024**3      # the serving container's limit; MLflow's container copies whatever dlbox's got

# The last MLflow release line for Python 3.9 (the model image's) that is 2.x; its skinny part pinned with it.
MLFLOW_VERSION = "2.22.5"
MLFLOW_PORT = 5000

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

# The inputs every client sends (seeded, so dlbox's and MLflow's clients send the same rows), the rows
# whose predictions are compared, and the timing loop: warm-up, then n timed calls one after another.
INPUTS = r'''
import json, sys, time, http.client, numpy as np
n = int(sys.argv[1])
rng = np.random.default_rng(0)
x = {b: rng.random((b, 64), dtype=np.float32) for b in (1, 32)}
check = np.random.default_rng(1).random((8, 64), dtype=np.float32)

def run(call):
    for _ in range(min(200, n)):
        call()
    times = []
    for _ in range(n):
        t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
    times.sort()
    return {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)], "rps": len(times) / sum(times)}

def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse(); data = r.read()
    assert r.status == 200, data[:200]
    return json.loads(data)
'''

CLIENT = INPUTS + r'''
import tensorflow as tf, grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
out = {}
fn = tf.saved_model.load("/models/1").signatures["serving_default"]
for b in (1, 32):
    out[f"inprocess{b}"] = run(lambda: fn(pixels=x[b])["probabilities"].numpy())
server = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"  # the front's container name: through the front
conn = http.client.HTTPConnection(server, 8501)
rest = lambda body: post(conn, "/v1/models/digits:predict", body)
out["check"] = rest(json.dumps({"instances": check.tolist()}))["predictions"]
for b in (1, 32):
    body = json.dumps({"instances": x[b].tolist()})
    out[f"rest{b}"] = run(lambda: rest(body))
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"{server}:8500"))
req = predict_pb2.PredictRequest()
req.model_spec.name = "digits"
req.inputs["pixels"].CopyFrom(tf.make_tensor_proto(x[1]))
out["grpc1"] = run(lambda: tf.make_ndarray(stub.Predict(req, timeout=10).outputs["probabilities"]))
print("BENCH " + json.dumps(out))
'''

# The same requests and loop against MLflow's scoring server (no TensorFlow in the client); first its
# predictions for the check rows against dlbox's (argv[3], JSON).
MLFLOW_CLIENT = INPUTS + r'''
out = {}
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]))
invoke = lambda body: post(conn, "/invocations", body)
theirs, ours = invoke(json.dumps({"instances": check.tolist()}))["predictions"], json.loads(sys.argv[3])
same_shape = len(theirs) == len(ours) and all(len(a) == len(b) for a, b in zip(theirs, ours))
out["difference"] = max(abs(p - q) for a, b in zip(theirs, ours) for p, q in zip(a, b)) if same_shape else None
if out["difference"] is None or out["difference"] > 1e-6:
    raise SystemExit(f"MLflow's predictions differ from dlbox's (max difference {out['difference']}): "
                     f"{theirs[0][:3]}... against {ours[0][:3]}...")
for b in (1, 32):
    body = json.dumps({"instances": x[b].tolist()})
    out[f"mlflow{b}"] = run(lambda: invoke(body))
print("BENCH " + json.dumps(out))
'''

# 16 processes (no TensorFlow: the clients must not eat the cores the server needs more than they must).
CONCURRENT = r'''
import json, sys, time, http.client, multiprocessing as mp
seconds, clients, port, path = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = json.dumps({"instances": [[0.5] * 64]})

def client(_):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
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
REST_PATH = "/v1/models/digits:predict"

# Into the model's image, as its own user (the venv is theirs): MLflow, with what TensorFlow needs held
# where the image has it (TF 2.9 breaks with protobuf >= 3.20 and NumPy 2). pip runs in a plain
# container that is then committed, not in a build: a container has the network any `docker run` has
# (on one engine here the legacy builder's RUN steps had no name resolution while containers had).
MLFLOW_INSTALL = (
    "set -e; pip freeze | grep -i -E '^(tensorflow|tensorflow-cpu|keras|numpy|protobuf|pandas|scikit-learn|scipy|"
    "grpcio|h5py)==' > /tmp/held.txt; "
    f"pip install --quiet --no-cache-dir mlflow=={MLFLOW_VERSION} mlflow-skinny=={MLFLOW_VERSION} -c /tmp/held.txt; "
    "python -c 'import mlflow, tensorflow, google.protobuf as p; "
    "print(\"mlflow\", mlflow.__version__, \"tensorflow\", tensorflow.__version__, \"protobuf\", p.__version__)'"
)

# In the MLflow image: the dlbox SavedModel (read-only at /models/1) saved as an MLflow model at /out/mlflow.
MLFLOW_SAVE = r'''
import numpy as np, tensorflow as tf, mlflow, mlflow.tensorflow
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

class SavedModel(tf.Module):
    """MLflow's TF2 flavor calls model(data): __call__ is the SavedModel's serving_default signature."""
    def __init__(self, path):
        super().__init__()
        self.saved = tf.saved_model.load(path)

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
    def __call__(self, pixels):
        return self.saved.signatures["serving_default"](pixels=pixels)["probabilities"]

signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 64))]),
                           outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]))
mlflow.tensorflow.save_model(SavedModel("/models/1"), "/out/mlflow", signature=signature,
                             pip_requirements=[f"mlflow=={mlflow.__version__}", f"tensorflow-cpu=={tf.__version__}"])
'''


def wait_script(url: str, tries: int = 900) -> str:
    """Poll `url` from inside the container until it answers 200 (0.2 s apart)."""
    return (f"import time,urllib.request\nfor _ in range({tries}):\n try:\n"
            f"  urllib.request.urlopen({url!r});break\n except Exception: time.sleep(0.2)\n"
            f"else: raise SystemExit('no answer from {url}')")


WAIT = wait_script("http://127.0.0.1:8501/healthz", 600)


def _results(text: str) -> dict:
    line = next((x for x in text.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise BenchError("the client printed no results")
    return json.loads(line.removeprefix("BENCH "))


def _ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def _concurrent(runner: Runner, log: str, container: str, seconds: str, port: int, path: str) -> dict:
    return _results(runner.run(log, [DOCKER, "exec", container, "python", "-c", CONCURRENT, seconds, str(CLIENTS),
                                     str(port), path])[1])


def limits_of(host_config: dict) -> tuple[list[str], str]:
    """`docker run` flags for the memory, CPU and shm limits of a container's HostConfig (dlbox's serving
    one), and those limits in words."""
    flags = []
    if host_config.get("Memory"):
        flags += ["--memory", f"{host_config['Memory']}b"]
        swap = host_config.get("MemorySwap") or 0
        flags += ["--memory-swap", f"{swap}b" if swap > 0 else "-1"]
    if host_config.get("NanoCpus"):
        flags += ["--cpus", f"{host_config['NanoCpus'] / 1e9:g}"]
    if host_config.get("CpusetCpus"):
        flags += ["--cpuset-cpus", host_config["CpusetCpus"]]
    if host_config.get("ShmSize"):
        flags += ["--shm-size", f"{host_config['ShmSize']}b"]
    memory = host_config.get("Memory") or 0
    words = (f"memory {memory / 1024**3:g} GiB" if memory else "no memory limit") + ", " + (
        f"{host_config['NanoCpus'] / 1e9:g} CPUs" if host_config.get("NanoCpus") else "no CPU limit")
    return flags, words + (f" (cpuset {host_config['CpusetCpus']})" if host_config.get("CpusetCpus") else "")


def mlflow_image(runner: Runner, base_id: str) -> str:
    """The model's image plus MLflow: made once per (image, recipe) and kept (not labelled with the run)."""
    recipe = hashlib.sha256(f"{base_id}\n{MLFLOW_INSTALL}".encode()).hexdigest()[:12]
    tag = f"dlbox-bench/mlflow:{MLFLOW_VERSION}-{recipe}"
    if subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True).returncode == 0:
        say(f"12. serving: {tag} is there from an earlier run (MLflow {MLFLOW_VERSION})")
        return tag
    say(f"12. serving: installing MLflow {MLFLOW_VERSION} into the model's image (once; kept as {tag})")
    name = f"dlbox-bench-{RUN_ID}-mlflow-install"
    try:
        runner.run("mlflow-install", [DOCKER, "run", "--name", name, "--label", LABEL, base_id, "sh", "-c",
                                      MLFLOW_INSTALL])
        # Not the run's label (cleanup would remove it) and not dlbox-managed (`dlbox images` lists those).
        runner.run("mlflow-commit", [DOCKER, "commit", "--change", 'CMD ["/bin/bash"]',
                                     "--change", f"LABEL dlbox.bench=cache dlbox.managed=false "
                                                 f"dlbox.bench.mlflow={MLFLOW_VERSION} dlbox.bench.from={base_id}",
                                     name, tag])
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)
    return tag


def mlflow_start(runner: Runner, work: Path, image_id: str, models: Path, flags: list[str]) -> str:
    """MLflow's server of the same SavedModel, started and answering: its container's name."""
    tag = mlflow_image(runner, image_id)
    model_dir = work / "mlflow-model"
    model_dir.mkdir(mode=0o755)
    os.chown(model_dir, 1000, 1000)
    runner.run("mlflow-save", [DOCKER, "run", "--rm", "--network", "none", "--user", "1000:1000", "--cap-drop", "ALL",
                               "--label", LABEL, "-e", "TF_CPP_MIN_LOG_LEVEL=2", "-v", f"{models / '1'}:/models/1:ro",
                               "-v", f"{model_dir}:/out", tag, "python", "-c", MLFLOW_SAVE])
    name = f"dlbox-bench-{RUN_ID}-mlflow"
    runner.run("mlflow-serve", [DOCKER, "run", "-d", "--name", name, "--label", LABEL, "--network", "none",
                                "--user", "1000:1000", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                                *flags, "-e", "TF_CPP_MIN_LOG_LEVEL=2", "-v", f"{model_dir / 'mlflow'}:/model:ro",
                                tag, "mlflow", "models", "serve", "-m", "/model", "--env-manager", "local",
                                "-h", "0.0.0.0", "-p", str(MLFLOW_PORT)])
    try:
        runner.run("mlflow-wait", [DOCKER, "exec", name, "python", "-c",
                                   wait_script(f"http://127.0.0.1:{MLFLOW_PORT}/ping")])
    except BenchError as exc:
        logs = subprocess.run([DOCKER, "logs", "--tail", "15", name], capture_output=True, text=True, errors="replace")
        raise BenchError(f"{exc}\n    mlflow models serve's log:\n{logs.stdout}{logs.stderr}") from None
    return name


def bench(runner: Runner, work: Path) -> list[Row]:
    """dlbox's server and MLflow's run side by side (an idle one takes no CPU), so each comparison's two
    halves are measured one right after the other: dlbox's sequential client, then MLflow's; dlbox's 16
    clients, then MLflow's; then MLflow's server goes and dlbox's restarts with --batch-max."""
    from dlbox import serving
    from dlbox.engine import api as engine
    from dlbox.serving import fleet
    from dlbox.serving.plan import replica_name

    saved = os.environ.copy()
    os.environ["DLBOX_HOME"] = str(work / "serving-home")
    os.environ["DLBOX_LABELS"] = ",".join(filter(None, [os.environ.get("DLBOX_LABELS", "").strip(","), LABEL]))
    name = "bench-" + LABEL.rsplit("-", 1)[1]
    models = work / "serving-model"
    models.mkdir(mode=0o755)
    os.chown(models, 1000, 1000)
    seconds = "5" if QUICK else "15"
    peer, peer_failed, limits = None, None, ""
    try:
        image = engine.image_attrs(WS_IMAGE)
        runner.run("serving-model", [DOCKER, "run", "--rm", "--network", "none", "--user", "1000:1000",
                                     "--cap-drop", "ALL", "--label", LABEL, "-e", "TF_CPP_MIN_LOG_LEVEL=2",
                                     "-v", f"{models}:/out", image["Id"], "python", "-c", MAKE_MODEL])
        say("12. serving: starting the deployment")
        dep = serving.up(name, "bench", image["Id"], {1: models / "1"}, {}, "digits", memory=MEMORY,
                         access_log=False)  # a log line per request would be measured too
        container = f"dlbox-deploy-{dep.name}"
        flags, limits = limits_of((engine.container_attrs(container) or {}).get("HostConfig") or {})
        try:  # a failure here leaves dlbox's figures standing (and is still counted as an error)
            say(f"12. serving: starting mlflow models serve ({limits}, as dlbox's serving container)")
            peer = mlflow_start(runner, work, image["Id"], models, flags)
        except BenchError as exc:
            peer_failed = exc
        runner.run("serving-wait", [DOCKER, "exec", container, "python", "-c", WAIT])
        say(f"12. serving: {REQUESTS} sequential requests of each kind, inside the serving container")
        _, text = runner.run("serving-client", [DOCKER, "exec", container, "python", "-c", CLIENT, str(REQUESTS)])
        got = _results(text)
        if peer:
            say(f"12. serving: MLflow's predictions against dlbox's, then {REQUESTS} sequential requests at "
                "batch 1 and 32, inside its container")
            try:
                got["mlflow"] = _results(runner.run("mlflow-client", [DOCKER, "exec", peer, "python", "-c",
                                                                      MLFLOW_CLIENT, str(REQUESTS), str(MLFLOW_PORT),
                                                                      json.dumps(got["check"])])[1])
            except BenchError as exc:
                peer_failed = exc
        say(f"12. serving: {CLIENTS} concurrent clients for {seconds} s, unbatched")
        got["concurrent"] = _concurrent(runner, "serving-concurrent", container, seconds, 8501, REST_PATH)
        if peer and not peer_failed:
            say(f"12. serving: {CLIENTS} concurrent clients for {seconds} s to MLflow")
            try:
                got["mlflow"]["concurrent"] = _concurrent(runner, "mlflow-concurrent", peer, seconds, MLFLOW_PORT,
                                                          "/invocations")
            except BenchError as exc:
                peer_failed = exc
        if peer:
            subprocess.run([DOCKER, "rm", "-f", peer], capture_output=True)
        serving.remove(name)
        say(f"12. serving: {REQUESTS} sequential requests of each kind through a deployment's front (--replicas 1)")
        fleet.up(name, fleet.Shape("bench", "digits", MEMORY, access_log=False), image["Id"], {1: models / "1"}, {})
        replica = replica_name(name, 1, 0)  # the client runs in the replica (its cores, its model for in-process)
        runner.run("serving-wait-front", [DOCKER, "exec", replica, "python", "-c",
                                          wait_script(f"http://{container}:8501/healthz", 600)])
        got["front"] = _results(runner.run("serving-client-front", [DOCKER, "exec", replica, "python", "-c", CLIENT,
                                                                   str(REQUESTS), container])[1])
        fleet.remove(name)
        say(f"12. serving: {CLIENTS} concurrent clients for {seconds} s, --batch-max {CLIENTS}")
        batched = serving.up(name, "bench", image["Id"], {1: models / "1"}, {}, "digits", memory=MEMORY,
                             access_log=False, grpc=False, batch_max=CLIENTS, batch_timeout_ms=1.0)
        container = f"dlbox-deploy-{batched.name}"
        runner.run("serving-wait-batched", [DOCKER, "exec", container, "python", "-c", WAIT])
        got["batched"] = _concurrent(runner, "serving-batched", container, seconds, 8501, REST_PATH)
    finally:
        try:
            if peer:
                subprocess.run([DOCKER, "rm", "-f", peer], capture_output=True)
            fleet.remove(name)  # the front and replicas, or the one serving container (same name)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    rows = dlbox_rows(got)
    if peer_failed:
        raise BenchError(f"MLflow peer: {peer_failed}", rows=rows)
    return rows + mlflow_rows(got, got["mlflow"], limits)


def dlbox_rows(got: dict) -> list[Row]:
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
    front = got.get("front")
    for key, what in (("rest1", "REST, batch 1"), ("rest32", "REST, batch 32"), ("grpc1", "gRPC, batch 1")):
        if front is None:
            break
        b = "32" if key.endswith("32") else "1"
        ours, theirs = front[key], front[f"inprocess{b}"]  # in-process measured in the same run, same container
        over = ours["p50"] - theirs["p50"]
        target = key == "rest1"
        rows.append(Row(f"12. dlbox {what} through the front, --replicas 1 (vs in-process)", _ms(ours["p50"]),
                        _ms(theirs["p50"]), f"+{over * 1000:.2f} ms", "p50 <= +1.5 ms" if target else "-",
                        ("pass" if over <= OVERHEAD_TARGET else "MISS") if target else "-",
                        f"p99 {_ms(ours['p99'])}, {ours['rps']:.0f} req/s; the front costs "
                        f"+{(ours['p50'] - got[key]['p50']) * 1000:.2f} ms p50 over the server alone"))
    plain, batched = got["concurrent"], got["batched"]
    gain = batched["rps"] / plain["rps"]
    rows.append(Row(f"12. dlbox REST, {CLIENTS} clients, --batch-max {CLIENTS} (vs off)", f"{batched['rps']:.0f} req/s",
                    f"{plain['rps']:.0f} req/s", f"{gain:.2f}x", f">= {BATCH_TARGET}x", "pass" if gain >= BATCH_TARGET
                    else "MISS", f"p50/p99 {_ms(batched['p50'])}/{_ms(batched['p99'])} vs "
                                 f"{_ms(plain['p50'])}/{_ms(plain['p99'])}"))
    return rows


def mlflow_rows(got: dict, peer: dict, limits: str) -> list[Row]:
    one = peer["mlflow1"]
    rows = [Row(f"12. mlflow models serve {MLFLOW_VERSION} (TF flavor), batch 1", _ms(one["p50"]),
                note=f"p99 {_ms(one['p99'])}, {one['rps']:.0f} req/s, {REQUESTS} sequential; predictions = dlbox's "
                     f"(max diff {peer['difference']:.1g}); {limits}, as dlbox's")]
    for b in (1, 32):
        ours, theirs = got[f"rest{b}"], peer[f"mlflow{b}"]
        gain = ours["rps"] / theirs["rps"]
        target = b == 1
        ok = gain >= MLFLOW_TARGET and ours["p99"] < theirs["p99"]
        rows.append(Row(f"12. dlbox REST vs mlflow models serve, batch {b}", f"{ours['rps']:.0f} req/s",
                        f"{theirs['rps']:.0f} req/s", f"{gain:.2f}x",
                        f">= {MLFLOW_TARGET:g}x, lower p99" if target else "-",
                        ("pass" if ok else "MISS") if target else "-",
                        f"p99 {_ms(ours['p99'])} vs {_ms(theirs['p99'])}, "
                        f"p50 {_ms(ours['p50'])} vs {_ms(theirs['p50'])}"))
    if (front := got.get("front")) is not None:  # what `dlbox serve` deploys: the server behind its front
        ours, theirs = front["rest1"], peer["mlflow1"]
        gain = ours["rps"] / theirs["rps"]
        ok = gain >= MLFLOW_TARGET and ours["p99"] < theirs["p99"]
        rows.append(Row("12. dlbox REST through the front vs mlflow models serve, batch 1", f"{ours['rps']:.0f} req/s",
                        f"{theirs['rps']:.0f} req/s", f"{gain:.2f}x", f">= {MLFLOW_TARGET:g}x, lower p99",
                        "pass" if ok else "MISS", f"p99 {_ms(ours['p99'])} vs {_ms(theirs['p99'])}, "
                                                  f"p50 {_ms(ours['p50'])} vs {_ms(theirs['p50'])}"))
    ours, theirs = got["concurrent"], peer["concurrent"]
    rows.append(Row(f"12. {CLIENTS} clients: dlbox REST vs mlflow models serve", f"{ours['rps']:.0f} req/s",
                    f"{theirs['rps']:.0f} req/s", f"{ours['rps'] / theirs['rps']:.2f}x", "-", "-",
                    f"p50/p99 {_ms(ours['p50'])}/{_ms(ours['p99'])} vs {_ms(theirs['p50'])}/{_ms(theirs['p99'])}; "
                    f"dlbox --batch-max {CLIENTS}: {got['batched']['rps']:.0f} req/s"))
    return rows
