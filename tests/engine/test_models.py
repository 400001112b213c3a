"""The model registry on the real engine, lean: one job writes a tiny SavedModel, one register reads
its signature in the run's own image, and the version outlives the run's folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SAVE = """
import os
import tensorflow as tf

class Double(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable([[1.0], [2.0], [3.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.matmul(x, self.w)}

out = os.path.join(os.environ["DLBOX_RUN_DIR"], "artifacts")
model = Double()
tf.saved_model.save(model, os.path.join(out, "model"), signatures={"serving_default": model.__call__})
os.makedirs(os.path.join(out, "notamodel"), exist_ok=True)
with open(os.path.join(out, "notamodel", "readme.txt"), "w") as f:
    f.write("no model here")
"""


@pytest.fixture(scope="module")
def saved_run(dlbox, tf_image):
    submitted = dlbox.json("run", "--image", tf_image["image"], "--", "python", "-c", SAVE)
    waited = dlbox("wait", submitted["id"], "--json", "--timeout", "600", check=False)
    assert json.loads(waited.stdout)["state"] == "succeeded", dlbox("logs", submitted["id"]).stdout[-2000:]
    return submitted["id"]


def test_register_reads_the_signature_and_survives_the_run_folder(dlbox, saved_run, tf_image, run_id, test_env):
    name = f"t{run_id}"
    refused = dlbox("models", "register", name, "--run", saved_run, "--path", "notamodel", check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "is no SavedModel (it has no saved_model.pb)" in refused.stderr
    made = dlbox.json("models", "register", name, "--run", saved_run)
    assert (made["name"], made["version"], made["run_id"]) == (name, 1, saved_run)
    assert made["image_id"] == tf_image["id"] and made["lock_hash"] == tf_image["lock_hash"]
    sig = made["signature"]["signatures"]
    assert list(sig) == ["serving_default"]
    assert sig["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["serving_default"]["inputs"]["x"]["shape"] == [-1, 3]
    assert sig["serving_default"]["outputs"]["y"] == {"name": "StatefulPartitionedCall:0", "dtype": "DT_FLOAT",
                                                      "shape": [-1, 1]}
    home = Path(test_env["DLBOX_HOME"])
    files = Path(made["files"])
    assert files.is_relative_to(home / "models" / "objects") and (files / "saved_model.pb").is_file()
    assert not (files / "saved_model.pb").stat().st_mode & 0o222
    shutil.rmtree(home / "runs" / saved_run)  # the run's folder goes: the version stays whole
    shown = dlbox.json("models", "show", f"{name}:1")
    assert shown["files_hash"] == made["files_hash"] and (files / "variables").is_dir()
    from dlbox.models import files as kept

    assert kept.tree_hash(files).files_hash == made["files_hash"]
    listed = {m["name"]: m for m in dlbox.json("models", "ls")}  # other modules register models of their own
    assert listed[name]["versions"] == [1]  # the refusal left no version behind
