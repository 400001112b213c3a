"""Record metrics and artifacts from inside a dlbox job (put on PYTHONPATH by dlbox).

    import dlbox_metrics
    dlbox_metrics.log("loss", 0.31, step=3)          # -> $DLBOX_RUN_DIR/metrics.jsonl
    model.fit(..., callbacks=[dlbox_metrics.keras_callback()])
    model.save(dlbox_metrics.artifacts_dir() + "/model")
    lr = float(dlbox_metrics.params().get("lr", 0.01))
"""

import json
import os
import time


def run_dir() -> str:
    return os.environ.get("DLBOX_RUN_DIR", ".")


def log(name, value, step=None):
    """Append one metric value as a JSON line: {"step", "name", "value", "time"}."""
    line = json.dumps({"step": None if step is None else int(step), "name": str(name), "value": float(value),
                       "time": time.time()})
    with open(os.path.join(run_dir(), "metrics.jsonl"), "a") as handle:
        handle.write(line + "\n")


def artifacts_dir() -> str:
    path = os.path.join(run_dir(), "artifacts")
    os.makedirs(path, exist_ok=True)
    return path


def params() -> dict:
    """The job's --param KEY=VALUE pairs (strings)."""
    try:
        with open(os.path.join(run_dir(), "params.json")) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def keras_callback(prefix=""):
    """A Keras callback that logs every epoch's logs (loss, accuracy, val_...) with the epoch as step."""
    import tensorflow as tf

    class DlboxMetrics(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                log(prefix + key, value, step=epoch)

    return DlboxMetrics()
