"""A SavedModel's signatures, read in the run's own image (it has TensorFlow; this host need not)
by a hardened helper with the model mounted read-only, and checked here as hostile output.

The helper parses saved_model.pb with TensorFlow's protobuf classes only (TensorFlow itself is not
imported when that works: no model code runs, and it takes a fraction of a second) and prints
{"tags", "signatures": {key: {"method_name", "inputs": {key: {"name", "dtype", "shape"}}, "outputs"}}}
with dtypes as TF Serving names them (DT_FLOAT) and shapes as lists (-1 unknown; null unknown rank).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dlbox.models.files import NotAModel

MOUNT = "/dlbox/model"
PYTHON = "/opt/venv/bin/python"
MAX_OUTPUT = 1024 * 1024
MAX_SIGNATURES, MAX_TENSORS, MAX_RANK = 64, 512, 32
INIT_OP = "__saved_model_init_op"  # a signature TF adds for initialisation, not one to serve
KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
TENSOR_NAME = re.compile(r"[A-Za-z0-9_.:/-]{0,256}")
DTYPE = re.compile(r"DT_[A-Z0-9_]{1,32}")

READER = r"""
import importlib.util, json, os, sys, types

def done(**answer):
    print(json.dumps(answer))
    sys.exit(0)

root = sys.argv[1]
found = importlib.util.find_spec("tensorflow")
if found is None:
    done(error="the run's image has no TensorFlow to read the SavedModel with")
try:  # the protobuf classes without TensorFlow's __init__: nothing of the model runs
    package = types.ModuleType("tensorflow")
    package.__path__ = list(found.submodule_search_locations)
    sys.modules["tensorflow"] = package
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.core.framework import types_pb2
except Exception:
    for name in [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]:
        del sys.modules[name]
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.core.framework import types_pb2
model = saved_model_pb2.SavedModel()
if not os.path.isfile(os.path.join(root, "saved_model.pb")):
    done(error="it has no saved_model.pb")
try:
    with open(os.path.join(root, "saved_model.pb"), "rb") as f:
        model.ParseFromString(f.read())
except Exception as exc:
    done(error="saved_model.pb is not a SavedModel (%s)" % type(exc).__name__)

def dtype(value):
    try:
        return types_pb2.DataType.Name(value)
    except ValueError:
        return "DT_INVALID"

def tensors(mapping):
    return {key: {"name": info.name, "dtype": dtype(info.dtype),
                  "shape": None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]}
            for key, info in sorted(mapping.items())}

graphs = [g for g in model.meta_graphs if "serve" in g.meta_info_def.tags]
if not graphs:
    done(error="no meta graph tagged 'serve'")
graph = graphs[0]
done(tags=sorted(graph.meta_info_def.tags), signatures={
    key: {"method_name": sig.method_name, "inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}
    for key, sig in sorted(graph.signature_def.items())})
"""


def read(image_id: str, folder: Path, *, what: str) -> dict:
    """The checked signatures of the SavedModel in `folder`, read in `image_id`; NotAModel if it has none."""
    from dlbox.engine import api as engine

    code, out, err = engine.run_reader(image_id, ["-c", READER, MOUNT], entrypoint=[PYTHON], source=str(folder),
                                       target=MOUNT, max_output=MAX_OUTPUT)
    if code != 0:
        raise NotAModel(f"cannot read the signature of {what} in the run's image: "
                        f"{err or ('exit code ' + str(code) if code is not None else 'no answer')}")
    return check(out, what=what)


def check(raw: bytes, *, what: str) -> dict:
    """The helper's answer, trusted in nothing: size, JSON, every field's type, shape and bounds."""
    if len(raw) > MAX_OUTPUT:
        raise NotAModel(f"the signature of {what} is too large to keep")
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise NotAModel(f"cannot read the signature of {what}: the helper's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise NotAModel(f"cannot read the signature of {what}: the helper's answer is not an object")
    if "error" in answer:
        message = answer["error"] if isinstance(answer["error"], str) else "unreadable"
        raise NotAModel(f"{what} is no SavedModel: {' '.join(message.split())[:200]}")
    tags, signatures = answer.get("tags"), answer.get("signatures")
    if not isinstance(tags, list) or not all(isinstance(t, str) and KEY.fullmatch(t) for t in tags) or len(tags) > 16:
        raise NotAModel(f"cannot read the signature of {what}: bad tags in the helper's answer")
    if not isinstance(signatures, dict) or len(signatures) > MAX_SIGNATURES:
        raise NotAModel(f"cannot read the signature of {what}: bad signatures in the helper's answer")
    kept = {}
    for key, sig in signatures.items():
        if not isinstance(key, str) or not KEY.fullmatch(key) or not isinstance(sig, dict):
            raise NotAModel(f"cannot read the signature of {what}: a bad signature key")
        method = sig.get("method_name")
        if not isinstance(method, str) or len(method) > 128 or not method.isprintable():
            raise NotAModel(f"cannot read the signature of {what}: signature {key} has a bad method name")
        kept[key] = {"method_name": method, "inputs": _tensors(sig.get("inputs"), what, key),
                     "outputs": _tensors(sig.get("outputs"), what, key)}
    served = {k: v for k, v in kept.items() if k != INIT_OP and v["inputs"] and v["outputs"]}
    if not served:
        raise NotAModel(f"{what} has no serving signature (such as serving_default): save it with "
                        "tf.saved_model.save(model, path, signatures=...)")
    return {"tags": tags, "signatures": served}


def _tensors(value, what: str, key: str) -> dict:
    if not isinstance(value, dict) or len(value) > MAX_TENSORS:
        raise NotAModel(f"cannot read the signature of {what}: signature {key} has bad tensors")
    kept = {}
    for name, info in value.items():
        if not isinstance(name, str) or not KEY.fullmatch(name) or not isinstance(info, dict):
            raise NotAModel(f"cannot read the signature of {what}: signature {key} has a bad tensor key")
        tensor, dtype, shape = info.get("name"), info.get("dtype"), info.get("shape")
        if not isinstance(tensor, str) or not TENSOR_NAME.fullmatch(tensor):
            raise NotAModel(f"cannot read the signature of {what}: {key}/{name} has a bad tensor name")
        if not isinstance(dtype, str) or not DTYPE.fullmatch(dtype):
            raise NotAModel(f"cannot read the signature of {what}: {key}/{name} has a bad dtype")
        if shape is not None and (not isinstance(shape, list) or len(shape) > MAX_RANK or not all(
                type(d) is int and -1 <= d < 2**62 for d in shape)):
            raise NotAModel(f"cannot read the signature of {what}: {key}/{name} has a bad shape")
        kept[name] = {"name": tensor, "dtype": dtype, "shape": shape}
    return kept
