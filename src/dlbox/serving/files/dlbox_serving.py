"""dlbox's model server: TensorFlow Serving's REST and gRPC APIs for SavedModel versions, run in a
deployment's container by the training image's own python (3.9+, TensorFlow, grpcio).

Stdlib only at import time, so `--probe` (the healthcheck) starts fast; TensorFlow loads in `serve`.
Models: MODELS/<version>/ (read-only). Labels and the versions to serve: a JSON config
({"labels": {"stable": 1}, "versions": [1, 2]}) re-read when it changes or on SIGHUP. A new version
is loaded and warmed before any label or "latest" request can reach it; an old one is unloaded only
after it drained (TF Serving's availability-preserving order).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AVAILABLE, LOADING, UNLOADING, END = "AVAILABLE", "LOADING", "UNLOADING", "END"
MAX_BODY = 64 * 1024 * 1024
CONFIG_MAX = 1024 * 1024
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HEALTH = ("/healthz", "/v1/health")
PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?(?:/(metadata)|:([a-z]+))?$")


class Fail(Exception):
    """A request's failure: its HTTP status, its gRPC code name, the message clients see."""

    def __init__(self, status: int, message: str, code: str = ""):
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE",
                             501: "UNIMPLEMENTED"}.get(status, "INTERNAL")


def log(text: str) -> None:
    os.write(1, (time.strftime("%Y-%m-%dT%H:%M:%S ") + text + "\n").encode(errors="replace"))


# --- a version: loaded functions, signatures, in-flight count --------------------------------------


class Version:
    def __init__(self, number: int, path: str):
        self.number, self.path = number, path
        self.state, self.error_code, self.error = LOADING, "OK", ""
        self.loaded = None  # the tf.saved_model object: keeps the functions alive
        self.sigs: dict = {}  # name -> Signature
        self.sigmap = None  # tensorflow.serving.SignatureDefMap (metadata)
        self.metadata_json: dict = {}
        self.inflight = 0

    def status(self) -> dict:
        return {"version": str(self.number), "state": self.state,
                "status": {"error_code": self.error_code, "error_message": self.error}}


class Signature:
    def __init__(self, name, fn, inputs: dict, outputs: list):
        self.name, self.fn, self.inputs, self.outputs = name, fn, inputs, outputs  # inputs: name -> TensorSpec


def load(version: Version) -> None:
    """Load, read the signatures (from saved_model.pb, as TF Serving shows them) and warm up."""
    import numpy as np
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version.path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in saved.meta_graphs[0].signature_def.items():
        sigmap.signature_def[name].CopyFrom(sig)
    version.sigmap = sigmap
    version.metadata_json = {"signature_def": json_format.MessageToDict(
        sigmap, preserving_proto_field_name=True, including_default_value_fields=True)}
    version.loaded = tf.saved_model.load(version.path)
    for name, fn in version.loaded.signatures.items():
        inputs = dict(fn.structured_input_signature[1])
        version.sigs[name] = Signature(name, fn, inputs, sorted(fn.structured_outputs))
    for sig in version.sigs.values():  # warm: the first call traces and allocates; no request pays it
        try:
            sig.fn(**{n: np.zeros([1 if d is None else d for d in s.shape.as_list()], s.dtype.as_numpy_dtype)
                      if s.dtype != tf.string else np.full([1 if d is None else d for d in s.shape.as_list()],
                                                           b"", dtype=object)
                      for n, s in sig.inputs.items()})
        except Exception as exc:  # noqa: BLE001 - zeros need not be valid input; the model is still served
            log(f"warmup of version {version.number} {sig.name}: {type(exc).__name__}")


# --- the model: versions, labels, routing ------------------------------------------------------


class Model:
    def __init__(self, name: str, root: str, batcher_args: tuple, metrics: Metrics):
        self.name, self.root, self.metrics = name, root, metrics
        self.versions: dict[int, Version] = {}
        self.labels: dict[str, int] = {}
        self.cond = threading.Condition()
        self.batch_max, self.batch_timeout = batcher_args
        self.batchers: dict = {}

    def on_disk(self) -> list[int]:
        try:
            return sorted(int(n) for n in os.listdir(self.root) if n.isdigit()
                          and os.path.isfile(os.path.join(self.root, n, "saved_model.pb")))
        except OSError:
            return []

    def acquire(self, name: str, version: int | None, label: str | None) -> Version:
        """The version a predict or metadata request goes to, counted in flight until release."""
        with self.cond:
            if name != self.name:
                raise Fail(404, f"Servable not found for request: {_request(name, version, label)}")
            ready = [v for v in self.versions.values() if v.state == AVAILABLE]
            if not ready:
                raise Fail(503, f"Servable not found for request: {_request(name, version, label)}: "
                                "no version is loaded yet")
            if label is not None:
                if label not in self.labels:
                    raise Fail(400, f"Unrecognized servable version label: {label}")
                version = self.labels[label]
            found = max(ready, key=lambda v: v.number) if version is None else self.versions.get(version)
            if found is None or found.state != AVAILABLE:
                raise Fail(404, f"Servable not found for request: {_request(name, version, None)}")
            found.inflight += 1
            return found

    def release(self, version: Version) -> None:
        with self.cond:
            version.inflight -= 1
            if version.inflight == 0:
                self.cond.notify_all()

    def status(self, name: str, version: int | None, label: str | None) -> list[dict]:
        with self.cond:
            if name != self.name or not self.versions:
                raise Fail(404, f"Could not find any versions of model {name}")
            if label is not None:
                if label not in self.labels:
                    raise Fail(400, f"Unrecognized servable version label: {label}")
                version = self.labels[label]
            if version is None:
                return [v.status() for _, v in sorted(self.versions.items())]
            if version not in self.versions:
                raise Fail(404, f"Could not find version {version} of model {name}")
            return [self.versions[version].status()]

    def apply(self, config: dict) -> None:
        """Make the served versions and labels what `config` says: load new, switch, then unload old."""
        labels = {str(k): int(v) for k, v in (config.get("labels") or {}).items()}
        wanted = set(int(v) for v in config.get("versions") or []) | set(labels.values())
        disk = self.on_disk()
        missing = sorted(wanted - set(disk))
        if missing:
            log(f"config names versions not in the models folder: {missing}")
        wanted = (wanted & set(disk)) or set(disk[-1:])  # nothing named: the latest, like TF Serving
        with self.cond:
            new = [Version(n, os.path.join(self.root, str(n))) for n in sorted(wanted)
                   if n not in self.versions or self.versions[n].state in (END,)]
            for v in new:
                self.versions[v.number] = v  # LOADING: visible in status, never routed to
        for v in new:
            started = time.monotonic()
            try:
                load(v)
                state = AVAILABLE
            except Exception as exc:  # noqa: BLE001 - a version that will not load is reported, not fatal
                v.error_code, v.error, state = "UNKNOWN", f"{type(exc).__name__}: {exc}"[:500], END
            with self.cond:
                v.state = state
            log(f"version {v.number}: {state} in {time.monotonic() - started:.1f}s {v.error}")
        with self.cond:
            self.labels = {k: n for k, n in labels.items()
                           if n in self.versions and self.versions[n].state == AVAILABLE}
            old = [v for n, v in self.versions.items() if n not in wanted and v.state == AVAILABLE]
            for v in old:
                v.state = UNLOADING  # no new requests; those in flight finish
        for v in old:
            with self.cond:
                self.cond.wait_for(lambda: v.inflight == 0, timeout=60)
                v.state, v.loaded, v.sigs = END, None, {}
                self.batchers = {k: b for k, b in self.batchers.items() if k[0] != v.number or b.stop()}
            log(f"version {v.number}: unloaded")

    def call(self, version: Version, sig: Signature, arrays: dict) -> dict:
        if self.batch_max > 1 and arrays:
            rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
            if len(rows) == 1 and rows != {-1}:
                with self.cond:
                    key = (version.number, sig.name)
                    batcher = self.batchers.get(key) or self.batchers.setdefault(
                        key, Batcher(sig, self.batch_max, self.batch_timeout, self.metrics))
                return batcher.submit(arrays)
        return {k: t.numpy() for k, t in sig.fn(**arrays).items()}


def _request(name: str, version: int | None, label: str | None) -> str:
    if label is not None:
        return f"Labeled({name}, {label})"
    return f"Specific({name}, {version})" if version is not None else f"Latest({name})"


class Batcher:
    """Server-side batching: requests of one signature that arrive within the timeout, up to
    batch_max rows, run as one call (same trailing shapes and dtypes only); each gets its rows back."""

    def __init__(self, sig: Signature, batch_max: int, timeout: float, metrics: Metrics):
        self.sig, self.max, self.timeout, self.metrics = sig, batch_max, timeout, metrics
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self.run, daemon=True).start()

    def stop(self) -> bool:
        self.queue.put(None)
        return False

    def submit(self, arrays: dict) -> dict:
        item = [arrays, threading.Event(), None]
        self.queue.put(item)
        item[1].wait()
        if isinstance(item[2], BaseException):
            raise item[2]
        return item[2]

    def run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            group, rows = [first], next(iter(first[0].values())).shape[0]
            deadline = time.monotonic() + self.timeout
            shape = {k: (a.shape[1:], a.dtype) for k, a in first[0].items()}
            while rows < self.max and (left := deadline - time.monotonic()) > 0:
                try:
                    item = self.queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                if {k: (a.shape[1:], a.dtype) for k, a in item[0].items()} != shape:
                    self._run([item])  # another shape: alone, now
                    continue
                group.append(item)
                rows += next(iter(item[0].values())).shape[0]
            self._run(group)

    def _run(self, group: list) -> None:
        import numpy as np

        self.metrics.batched(self.sig.name, len(group))
        try:
            if len(group) == 1:
                out = {k: t.numpy() for k, t in self.sig.fn(**group[0][0]).items()}
                group[0][2] = out
            else:
                merged = {k: np.concatenate([g[0][k] for g in group]) for k in group[0][0]}
                out = {k: t.numpy() for k, t in self.sig.fn(**merged).items()}
                start = 0
                for g in group:
                    n = next(iter(g[0].values())).shape[0]
                    g[2] = {k: a[start:start + n] for k, a in out.items()}
                    start += n
        except Exception as exc:  # noqa: BLE001 - each waiting request gets the failure
            for g in group:
                g[2] = exc
        for g in group:
            g[1].set()


# --- JSON <-> tensors (TF Serving's REST mapping) ---------------------------------------------------


def _shape(value, depth=0) -> tuple:
    """The shape of a nested list; Fail when it is ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = [_shape(v, depth + 1) for v in value]
    if any(s != inner[0] for s in inner):
        raise Fail(400, f"Expecting tensor size: {_size(inner[0])} but got: {_size(next(s for s in inner if s != inner[0]))}")
    return (len(value),) + inner[0]


def _size(shape: tuple) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _strings(value):
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise Fail(400, "Unable to base64 decode") from None
    if isinstance(value, str):
        return value.encode()
    raise Fail(400, f"JSON Value: {json.dumps(value)[:80]} Type: {type(value).__name__} is not of expected type: string")


def to_array(value, spec, where: str):
    """A JSON value as an ndarray of the signature input's dtype; 400 for a wrong type or ragged lists."""
    import numpy as np

    dtype = spec.dtype
    try:
        if dtype.name == "string":
            shape = _shape(value)
            arr = np.empty(shape, dtype=object)
            arr[...] = _strings(value)
            return arr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(value)
        kind = arr.dtype.kind
        want = np.dtype(dtype.as_numpy_dtype)
        allowed = {"f": "iuf", "i": "iu", "u": "iu", "b": "b", "c": "iufc"}.get(want.kind, "")
        if kind == "O":
            _shape(value)  # says how it is ragged
            raise Fail(400, "JSON Value is not of a single type")
        if kind not in allowed:
            raise Fail(400, f"JSON Value: {json.dumps(arr.flat[0].item() if arr.size else None)[:80]} "
                            f"is not of expected type: {dtype.name}")
        return arr.astype(want, copy=False)
    except Fail as exc:
        raise Fail(400, f"{where}Error: Invalid argument: {exc.message}") from None


def check_shape(arr, spec, name: str) -> None:
    expected = spec.shape
    if expected.rank is None:
        return
    dims = expected.as_list()
    if arr.ndim != len(dims) or any(d is not None and d != a for d, a in zip(dims, arr.shape)):
        raise Fail(400, f"input {name} has shape {list(arr.shape)} but the signature expects "
                        f"{[-1 if d is None else d for d in dims]}")


def to_json(arr, name: str):
    if arr.dtype.kind in "OS":
        binary = name.endswith("_bytes")

        def one(b):
            if binary:
                return {"b64": base64.b64encode(b).decode()}
            return b.decode("utf-8", "replace") if isinstance(b, bytes) else b

        flat = [one(b) for b in arr.reshape(-1).tolist()]
        out = _nest(flat, arr.shape)
        return out
    return arr.tolist()


def _nest(flat: list, shape: tuple):
    if not shape:
        return flat[0]
    for d in reversed(shape[1:]):
        flat = [flat[i:i + d] for i in range(0, len(flat), d)]
    return flat


def parse_predict(body: bytes, version: Version):
    """(signature, input arrays, row format?) of a :predict body."""
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Fail(400, f"JSON Parse error: {exc}") from None
    if not isinstance(req, dict):
        raise Fail(400, "JSON Parse error: the request body must be a JSON object")
    name = req.get("signature_name") or "serving_default"
    sig = version.sigs.get(name) if isinstance(name, str) else None
    if sig is None:
        raise Fail(400, f"Serving signature name: \"{name}\" not found in signature def")
    if ("instances" in req) == ("inputs" in req):
        raise Fail(400, "JSON object: does not have named input(s) key: instances or inputs (exactly one)")
    names = sorted(sig.inputs)
    if "instances" in req:
        rows = req["instances"]
        if not isinstance(rows, list) or not rows:
            raise Fail(400, "Expecting 'instances' to be a non-empty list")
        columns = {n: [] for n in names}
        for i, row in enumerate(rows):
            if isinstance(row, dict) and not (len(names) == 1 and set(row) == {"b64"}):
                if set(row) != set(names):
                    raise Fail(400, f"Failed to process element: {i} of 'instances' list. Error: Invalid argument: "
                                    f"expected named inputs {names}, got {sorted(row)}")
                for n in names:
                    columns[n].append(row[n])
            elif len(names) == 1:
                columns[names[0]].append(row)
            else:
                raise Fail(400, f"Failed to process element: {i} of 'instances' list. Error: Invalid argument: "
                                f"expected an object with named inputs {names}")
        arrays = {}
        for n in names:
            arrays[n] = to_array(columns[n], sig.inputs[n], "Failed to process 'instances' list. ")
            check_shape(arrays[n], sig.inputs[n], n)
        return sig, arrays, True
    given = req["inputs"]
    if not (isinstance(given, dict) and set(given) != {"b64"}):
        if len(names) != 1:
            raise Fail(400, f"'inputs' must be an object with named inputs {names}")
        given = {names[0]: given}
    if set(given) != set(names):
        raise Fail(400, f"expected named inputs {names}, got {sorted(given)}")
    arrays = {}
    for n in names:
        arrays[n] = to_array(given[n], sig.inputs[n], f"Failed to process input: {n}. ")
        check_shape(arrays[n], sig.inputs[n], n)
    return sig, arrays, False


def answer(outs: dict, rows: bool) -> dict:
    names = sorted(outs)
    if not rows:
        if len(names) == 1:
            return {"outputs": to_json(outs[names[0]], names[0])}
        return {"outputs": {n: to_json(outs[n], n) for n in names}}
    sizes = {outs[n].shape[0] if outs[n].ndim else None for n in names}
    if len(sizes) != 1 or None in sizes:
        raise Fail(400, "Batch size of the output tensors differ, or an output is a scalar: "
                        "use the columnar ('inputs') format")
    if len(names) == 1:
        return {"predictions": to_json(outs[names[0]], names[0])}
    cols = {n: to_json(outs[n], n) for n in names}
    return {"predictions": [{n: cols[n][i] for n in names} for i in range(sizes.pop())]}


# --- metrics --------------------------------------------------------------------------------------


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict = {}
        self.errors: dict = {}
        self.latency: dict = {}  # key -> [bucket counts..., sum, count]
        self.batches: dict = {}  # signature -> [calls, requests in them]

    def batched(self, sig: str, requests: int) -> None:
        with self.lock:
            counts = self.batches.setdefault(sig, [0, 0])
            counts[0] += 1
            counts[1] += requests

    def observe(self, model, version, sig, api, code, seconds: float, failed: bool) -> None:
        key = (model, str(version), sig)
        with self.lock:
            self.requests[key + (api, str(code))] = self.requests.get(key + (api, str(code)), 0) + 1
            if failed:
                self.errors[key + (api, str(code))] = self.errors.get(key + (api, str(code)), 0) + 1
            h = self.latency.get(key)
            if h is None:
                h = self.latency[key] = [0] * (len(BUCKETS) + 2)
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
                    break
            h[-2] += seconds
            h[-1] += 1

    def text(self) -> str:
        def lbl(key, extra=()):
            names = ("model", "version", "signature", "api", "code")
            pairs = list(zip(names, key)) + list(extra)
            return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in pairs) + "}"

        out = ["# HELP dlbox_serving_requests_total Requests answered, by model, version, signature, api and code.",
               "# TYPE dlbox_serving_requests_total counter"]
        with self.lock:
            out += [f"dlbox_serving_requests_total{lbl(k)} {n}" for k, n in sorted(self.requests.items())]
            out += ["# HELP dlbox_serving_request_errors_total Requests that failed.",
                    "# TYPE dlbox_serving_request_errors_total counter"]
            out += [f"dlbox_serving_request_errors_total{lbl(k)} {n}" for k, n in sorted(self.errors.items())]
            out += ["# HELP dlbox_serving_request_latency_seconds Time from request read to answer written.",
                    "# TYPE dlbox_serving_request_latency_seconds histogram"]
            for k, h in sorted(self.latency.items()):
                total = 0
                for b, n in zip(BUCKETS, h):
                    total += n
                    out.append(f"dlbox_serving_request_latency_seconds_bucket{lbl(k, [('le', repr(b))])} {total}")
                out.append(f"dlbox_serving_request_latency_seconds_bucket{lbl(k, [('le', '+Inf')])} {h[-1]}")
                out.append(f"dlbox_serving_request_latency_seconds_sum{lbl(k)} {h[-2]:.6f}")
                out.append(f"dlbox_serving_request_latency_seconds_count{lbl(k)} {h[-1]}")
            if self.batches:
                out += ["# HELP dlbox_serving_batches_total Batched signature calls, and the requests they held.",
                        "# TYPE dlbox_serving_batches_total counter"]
                for sig, (calls, requests) in sorted(self.batches.items()):
                    out.append(f'dlbox_serving_batches_total{{signature="{_esc(sig)}"}} {calls}')
                    out.append(f'dlbox_serving_batched_requests_total{{signature="{_esc(sig)}"}} {requests}')
        return "\n".join(out) + "\n"


def _esc(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- REST ------------------------------------------------------------------------------------------


def make_handler(model: Model, metrics: Metrics, access_log: bool):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a connection per request would cost more than the model
        server_version = "dlbox-serving"
        timeout = 300  # an idle keep-alive connection's thread goes after this

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):  # our own line per request, without payloads
            pass

        def do_any(self):
            self.handle_one(self.command)

        # other methods have no routes: TF Serving's "Malformed request", not the stdlib's HTML 501
        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_any

        def handle_one(self, method: str) -> None:
            started = time.perf_counter()
            info = {"version": "", "signature": ""}
            close = False
            try:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    close = True
                    raise Fail(400, "Content-Length is not a number") from None
                if length < 0 or length > MAX_BODY:
                    close = True
                    raise Fail(413, f"request body over {MAX_BODY} bytes")
                body = self.rfile.read(length) if length else b""
                status, payload, ctype = self.answer(method, body, info)
            except Fail as exc:
                status, payload, ctype = exc.status, json.dumps({"error": exc.message}).encode(), "application/json"
            except Exception as exc:  # noqa: BLE001 - a bug or a model's own failure: said, not fatal
                status = 500
                payload, ctype = json.dumps({"error": f"{type(exc).__name__}: {exc}"[:1000]}).encode(), "application/json"
            head = (f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(payload)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n")
            try:
                self.wfile.write(head.encode() + payload)  # one write: headers and body in one segment
            except OSError:
                close = True
            if close:
                self.close_connection = True
            elapsed = time.perf_counter() - started
            if info.get("api"):
                metrics.observe(model.name, info["version"], info["signature"], "rest", status, elapsed, status >= 400)
            if access_log and not (status == 200 and self.path in HEALTH):  # the front probes often
                log(f"{self.client_address[0]} {method} {self.path[:200]} {status} {elapsed * 1000:.2f}ms "
                    f"version={info['version']} signature={info['signature']}")

        def answer(self, method: str, body: bytes, info: dict) -> tuple[int, bytes, str]:
            return (200, *self.route(method, body, info))

        def route(self, method: str, body: bytes, info: dict):
            path = self.path.split("?", 1)[0]
            if path in HEALTH:
                ok = any(v.state == AVAILABLE for v in list(model.versions.values()))
                if not ok:
                    raise Fail(503, "no version is loaded yet")
                return json.dumps({"status": "ok"}).encode(), "application/json"
            if path == "/monitoring/prometheus/metrics" and method == "GET":
                return metrics.text().encode(), "text/plain; version=0.0.4"
            match = PATH.match(path)
            if not match:
                raise Fail(404, f"Malformed request: {method} {path[:200]}")
            name, number, label, meta, verb = match.groups()
            number = int(number) if number is not None else None
            info["api"] = True
            info["version"] = "" if number is None else str(number)
            if verb is None and method == "GET":
                if meta:
                    return self.metadata(name, number, label, info), "application/json"
                return json.dumps({"model_version_status": model.status(name, number, label)}).encode(), "application/json"
            if verb == "predict" and method == "POST" and not meta:
                return self.predict(name, number, label, body, info), "application/json"
            if verb in ("classify", "regress") and method == "POST":
                raise Fail(501, f"{verb} is not served by dlbox: use predict")
            raise Fail(404, f"Malformed request: {method} {path[:200]}")

        def metadata(self, name, number, label, info) -> bytes:
            version = model.acquire(name, number, label)
            try:
                info["version"] = str(version.number)
                spec = {"name": model.name, "signature_name": "", "version": str(version.number)}
                return json.dumps({"model_spec": spec, "metadata": version.metadata_json}).encode()
            finally:
                model.release(version)

        def predict(self, name, number, label, body, info) -> bytes:
            version = model.acquire(name, number, label)
            try:
                info["version"] = str(version.number)
                sig, arrays, rows = parse_predict(body, version)
                info["signature"] = sig.name
                outs = model.call(version, sig, arrays)
                return json.dumps(answer(outs, rows)).encode()
            finally:
                model.release(version)

    return Handler


# --- gRPC ------------------------------------------------------------------------------------------


def start_grpc(model: Model, metrics: Metrics, port: int, workers: int):
    from concurrent import futures

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)

    def spec_of(request):
        which = request.model_spec.WhichOneof("version_choice")
        number = request.model_spec.version.value if which == "version" else None
        label = request.model_spec.version_label if which == "version_label" else None
        return request.model_spec.name, number, label

    def fail(context, exc: Fail):
        context.abort(getattr(grpc.StatusCode, exc.code), exc.message)

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            started, info, code = time.perf_counter(), {"version": "", "signature": ""}, "OK"
            try:
                version = model.acquire(*spec_of(request))
            except Fail as exc:
                metrics.observe(model.name, "", "", "grpc", exc.code, time.perf_counter() - started, True)
                fail(context, exc)
            try:
                info["version"] = version.number
                sig = version.sigs.get(request.model_spec.signature_name or "serving_default")
                if sig is None:
                    raise Fail(400, f"Serving signature name: \"{request.model_spec.signature_name}\" "
                                    "not found in signature def")
                info["signature"] = sig.name
                if set(request.inputs) != set(sig.inputs):
                    raise Fail(400, f"expected named inputs {sorted(sig.inputs)}, got {sorted(request.inputs)}")
                arrays = {}
                for n, proto in request.inputs.items():
                    if proto.dtype != sig.inputs[n].dtype.as_datatype_enum:
                        raise Fail(400, f"input {n}: expects {sig.inputs[n].dtype.name} but "
                                        f"{tf.dtypes.as_dtype(proto.dtype).name} is provided")
                    arrays[n] = tf.make_ndarray(proto)
                    check_shape(arrays[n], sig.inputs[n], n)
                wanted = list(request.output_filter) or sig.outputs
                unknown = [o for o in wanted if o not in sig.outputs]
                if unknown:
                    raise Fail(400, f"output tensor alias not found in signature: {unknown[0]}")
                outs = model.call(version, sig, arrays)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = model.name
                response.model_spec.version.value = version.number
                response.model_spec.signature_name = sig.name
                for o in wanted:
                    response.outputs[o].CopyFrom(tf.make_tensor_proto(outs[o]))
                return response
            except Fail as exc:
                code = exc.code
                fail(context, exc)
            except Exception as exc:  # noqa: BLE001 - the model's own failure, e.g. an op's bad argument
                code = "INVALID_ARGUMENT"
                fail(context, Fail(400, f"{type(exc).__name__}: {exc}"[:1000]))
            finally:
                model.release(version)
                metrics.observe(model.name, info["version"], info["signature"], "grpc", code,
                                time.perf_counter() - started, code != "OK")

        def GetModelMetadata(self, request, context):
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                fail(context, Fail(400, "Metadata field(s) not supported: "
                                        f"{[f for f in fields if f != 'signature_def'] or 'none given'}"))
            try:
                version = model.acquire(*spec_of(request))
            except Fail as exc:
                fail(context, exc)
            try:
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = model.name
                response.model_spec.version.value = version.number
                response.metadata["signature_def"].Pack(version.sigmap)
                return response
            finally:
                model.release(version)

    class Status(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            try:
                found = model.status(*spec_of(request))
            except Fail as exc:
                fail(context, exc)
            response = get_model_status_pb2.GetModelStatusResponse()
            for s in found:
                entry = response.model_version_status.add()
                entry.version = int(s["version"])
                entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(s["state"])
                if s["status"]["error_code"] != "OK":
                    entry.status.error_code = 2  # tensorflow.error.UNKNOWN
                    entry.status.error_message = s["status"]["error_message"]
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", MAX_BODY),
                                  ("grpc.max_send_message_length", MAX_BODY)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Status(), server)
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    return server


# --- the front: a deployment's published ports, in front of its replicas ---------------------------
# Each REST request (keep-alive: a connection per client thread and replica) and each gRPC call (raw
# bytes, any method) goes to a ready replica of the current generation, the least busy. A connection
# that fails before an answer is tried on another replica (predict is idempotent), so a replica that
# dies loses no request. A new generation (another image) gets traffic only once every one of its
# replicas answers /healthz (loaded and warmed); the old one then drains and the host removes it.


class Backend:
    def __init__(self, entry: dict):
        self.host, self.rest, self.grpc = str(entry["host"]), int(entry["rest"]), int(entry.get("grpc") or 0)
        self.key = (self.host, self.rest, self.grpc)
        self.healthy, self.inflight, self.channel = False, 0, None


class Pool:
    """The replicas, from the backends file: {"generation": G, "backends": [{"host", "rest", "grpc"}],
    "previous": {"generation": G0, "backends": [...]} or null}."""

    def __init__(self):
        self.lock = threading.Lock()
        self.generation, self.active, self.pending = None, [], None  # pending: (generation, [Backend])
        self.known: dict = {}
        self.turn = 0
        self.local = threading.local()  # a thread's REST connections, by backend

    def _backends(self, entries) -> list:
        out = []
        for entry in entries or []:
            b = Backend(entry)
            out.append(self.known.setdefault(b.key, b))
        return out

    def apply(self, config: dict) -> None:
        generation = int(config["generation"])
        with self.lock:
            new = self._backends(config["backends"])
            previous = config.get("previous") or None
            if self.generation == generation:
                self.active, self.pending = new, None
            elif self.generation is None and previous:  # started mid-move: the old one serves meanwhile
                self.generation, self.active = int(previous["generation"]), self._backends(previous["backends"])
                self.pending = (generation, new)
            elif self.generation is None:
                self.generation, self.active = generation, new
            else:
                self.pending = (generation, new)
        self.check()

    def check(self) -> None:
        """Probe every replica in use or coming; switch to a pending generation once all of it is ready."""
        with self.lock:
            probing = {b.key: b for b in self.active + (self.pending[1] if self.pending else [])}
        for b in probing.values():
            b.healthy = _healthy(b.host, b.rest)
        with self.lock:
            if self.pending and self.pending[1] and all(b.healthy for b in self.pending[1]):
                old, (self.generation, self.active) = self.generation, self.pending
                self.pending = None
                log(f"generation {self.generation}: every replica ready; traffic moves from generation {old}")
            keep = {b.key for b in self.active + (self.pending[1] if self.pending else [])}
            for key, b in list(self.known.items()):
                if key not in keep and b.inflight == 0:
                    del self.known[key]
                    if b.channel is not None:
                        b.channel.close()

    def pick(self, tried: list):
        """A replica for one request (counted in flight until done): the least busy ready one not yet tried."""
        with self.lock:
            fresh = [b for b in self.active if b not in tried]
            ready = [b for b in fresh if b.healthy] or fresh or self.active
            if not ready:
                return None
            self.turn += 1
            ready = ready[self.turn % len(ready):] + ready[:self.turn % len(ready)]
            chosen = min(ready, key=lambda b: b.inflight)
            chosen.inflight += 1
            return chosen

    def done(self, b: Backend, failed: bool = False) -> None:
        with self.lock:
            b.inflight -= 1
            if failed:
                b.healthy = False  # until its next good probe

    def status(self) -> tuple[int, dict]:
        with self.lock:
            ready = sum(b.healthy for b in self.active)
            draining = sum(b.inflight for k, b in self.known.items() if b not in self.active)
            body = {"status": "ok" if ready else "no replica is ready", "generation": self.generation,
                    "pending": self.pending[0] if self.pending else None, "ready": ready,
                    "replicas": len(self.active), "draining": draining}
        return (200 if ready else 503), body

    def connection(self, b: Backend):
        import http.client

        conns = self.local.__dict__.setdefault("conns", {})
        conn = conns.get(b.key)
        if conn is None:
            conn = conns[b.key] = http.client.HTTPConnection(b.host, b.rest, timeout=300)
        return conn

    def drop(self, b: Backend) -> None:
        conn = self.local.__dict__.get("conns", {}).pop(b.key, None)
        if conn is not None:
            conn.close()


def _healthy(host: str, port: int) -> bool:
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


TRIES = 4  # replicas a request is tried on before its failure is the client's


def make_front_handler(pool: Pool):
    import http.client

    class Front(make_handler(None, None, False)):
        def answer(self, method: str, body: bytes, info: dict) -> tuple[int, bytes, str]:
            if self.path in HEALTH:
                status, state = pool.status()
                return status, json.dumps(state).encode(), "application/json"
            tried, last = [], "no replica is ready"
            for attempt in range(TRIES):
                b = pool.pick(tried)
                if b is None:
                    break
                if b in tried:  # every replica failed once: a moment for one to come back
                    time.sleep(0.2 * attempt)
                tried.append(b)
                conn = pool.connection(b)
                try:
                    conn.request(method, self.path, body=body or None,
                                 headers={"Content-Type": self.headers.get("Content-Type") or "application/json"})
                    response = conn.getresponse()
                    payload = response.read()
                except socket.timeout:
                    pool.drop(b)
                    pool.done(b)
                    raise Fail(504, "the replica did not answer in time") from None
                except (OSError, http.client.HTTPException) as exc:  # before any answer: another replica
                    pool.drop(b)
                    pool.done(b, failed=True)
                    last = f"replica {b.host}: {type(exc).__name__}"
                    continue
                pool.done(b)
                if response.getheader("Connection", "").lower() == "close":
                    pool.drop(b)
                return response.status, payload, response.getheader("Content-Type") or "application/json"
            raise Fail(503, last)

    return Front


def start_front_grpc(pool: Pool, port: int, workers: int):
    from concurrent import futures

    import grpc

    options = [("grpc.max_receive_message_length", MAX_BODY), ("grpc.max_send_message_length", MAX_BODY)]

    class Proxy(grpc.GenericRpcHandler):
        def service(self, details):
            method = details.method

            def unary(request: bytes, context):
                tried, error = [], None
                for attempt in range(TRIES):
                    b = pool.pick(tried)
                    if b is None or not b.grpc:
                        if b is not None:
                            pool.done(b)
                        break
                    if b in tried:
                        time.sleep(0.2 * attempt)
                    tried.append(b)
                    if b.channel is None:
                        b.channel = grpc.insecure_channel(f"{b.host}:{b.grpc}", options=options + [
                            ("grpc.dns_min_time_between_resolutions_ms", 500)])  # a replaced replica: a new IP
                    try:
                        answer = b.channel.unary_unary(method)(request, timeout=context.time_remaining())
                    except grpc.RpcError as exc:
                        down = exc.code() == grpc.StatusCode.UNAVAILABLE
                        pool.done(b, failed=down)
                        if not down:
                            context.abort(exc.code(), exc.details())
                        error = exc
                        continue
                    pool.done(b)
                    return answer
                context.abort(grpc.StatusCode.UNAVAILABLE, error.details() if error else "no replica is ready")

            return grpc.unary_unary_rpc_method_handler(unary)  # no (de)serializers: the bytes as they are

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options,
                         handlers=[Proxy()])
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    return server


def checker(pool: Pool, every: float = 0.5) -> None:
    while True:
        try:
            pool.check()
        except Exception as exc:  # noqa: BLE001 - the prober never dies
            log(f"probing replicas: {type(exc).__name__}: {exc}")
        time.sleep(every)


# --- the config watcher and main -------------------------------------------------------------------


def read_config(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(CONFIG_MAX + 1)[:CONFIG_MAX])
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def watch(model: Model, path: str, wake: threading.Event) -> None:
    seen = None
    while True:
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key != seen or wake.is_set():
            wake.clear()
            seen = key
            config = read_config(path) if key else {}
            if config is None:
                log(f"config {path}: not a JSON object; kept the last one")
            else:
                try:
                    model.apply(config)
                except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a malformed config: keep serving
                    log(f"config {path}: {type(exc).__name__}: {exc}; kept the last one")
        wake.wait(0.2)


def probe(port: int) -> int:
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        return 0
    except Exception:  # noqa: BLE001 - any failure is unhealthy
        return 1


def until_stopped(stopping: threading.Event, http, grpc_server) -> int:
    """Serve until SIGTERM, then stop taking requests (gRPC's in flight get 5 s)."""
    stopping.wait()
    log("SIGTERM: stopping")
    http.shutdown()
    if grpc_server:
        grpc_server.stop(5).wait()
    return 0


def front(args) -> int:
    pool = Pool()
    wake = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: wake.set())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    http = ThreadingHTTPServer(("0.0.0.0", args.rest_port), make_front_handler(pool))
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    threading.Thread(target=watch, args=(pool, args.front, wake), daemon=True).start()
    threading.Thread(target=checker, args=(pool,), daemon=True).start()
    grpc_server = start_front_grpc(pool, args.grpc_port, args.grpc_workers) if args.grpc_port else None
    log(f"front: REST :{args.rest_port}, gRPC :{args.grpc_port or 'off'}, replicas from {args.front}")
    return until_stopped(stopping, http, grpc_server)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dlbox_serving")
    p.add_argument("--model-name", default="model")
    p.add_argument("--models", default="/models")
    p.add_argument("--config", default="/dlbox/serving/config/config.json")
    p.add_argument("--rest-port", type=int, default=8501)
    p.add_argument("--grpc-port", type=int, default=8500, help="0: no gRPC")
    p.add_argument("--batch-max", type=int, default=0, help="rows per batched call; 0 or 1: no batching")
    p.add_argument("--batch-timeout-ms", type=float, default=2.0)
    p.add_argument("--grpc-workers", type=int, default=16)
    p.add_argument("--no-access-log", action="store_true")
    p.add_argument("--probe", action="store_true", help="exit 0 when the REST port answers healthy")
    p.add_argument("--front", metavar="BACKENDS", help="be a deployment's front: the replicas file to follow")
    args = p.parse_args(argv)
    if args.probe:
        return probe(args.rest_port)
    if args.front:
        return front(args)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", args.model_name):
        p.error("--model-name: letters, digits, . _ - only")
    metrics = Metrics()
    model = Model(args.model_name, args.models, (args.batch_max, args.batch_timeout_ms / 1000), metrics)
    wake = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: wake.set())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    http = ThreadingHTTPServer(("0.0.0.0", args.rest_port), make_handler(model, metrics, not args.no_access_log))
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    threading.Thread(target=watch, args=(model, args.config, wake), daemon=True).start()  # LOADING at once
    grpc_server = start_grpc(model, metrics, args.grpc_port, args.grpc_workers) if args.grpc_port else None
    log(f"serving {args.model_name}: REST :{args.rest_port}, gRPC :{args.grpc_port or 'off'}, "
        f"batching {'max ' + str(args.batch_max) if args.batch_max > 1 else 'off'}")
    return until_stopped(stopping, http, grpc_server)


if __name__ == "__main__":
    sys.exit(main())
