"""Evaluate the pipeline's trained digits model (the train run's artifacts, read-only at $DLBOX_INPUT_DIR).

Logs `accuracy` and `loss` on the held-out quarter (the split train.py used) and writes the labels and
predictions for the report's confusion matrix to artifacts/predictions.json.
"""

import json
import os

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import dlbox_metrics

seed = int(dlbox_metrics.params().get("seed", 0))
digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target.astype("int32")
_, x_test, _, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)

model = tf.keras.models.load_model(os.path.join(os.environ["DLBOX_INPUT_DIR"], "model"))
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
predicted = np.argmax(model.predict(x_test, verbose=0), axis=1)
dlbox_metrics.log("accuracy", accuracy)
dlbox_metrics.log("loss", loss)
with open(os.path.join(dlbox_metrics.artifacts_dir(), "predictions.json"), "w") as handle:
    json.dump({"labels": [int(v) for v in y_test], "predictions": [int(v) for v in predicted]}, handle)
print(f"accuracy {accuracy:.4f}, loss {loss:.4f}")
