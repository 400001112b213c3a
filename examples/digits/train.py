"""A small TensorFlow 2.9 classifier on scikit-learn's bundled digits (8x8 images, no download).

Run as a dlbox job, it logs metrics with dlbox_metrics (one line per epoch in
$DLBOX_RUN_DIR/metrics.jsonl) and saves a SavedModel as an artifact:

    dlbox run --preset tensorflow-2.9 --mount examples/digits:/code:ro --param epochs=10 \
        -- python /code/train.py
"""

import os

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

try:
    import dlbox_metrics
except ImportError:  # outside dlbox: still runs, logs nowhere
    dlbox_metrics = None

params = dlbox_metrics.params() if dlbox_metrics else {}
epochs = int(params.get("epochs", os.environ.get("EPOCHS", 10)))
seed = int(params.get("seed", 0))
tf.random.set_seed(seed)
np.random.seed(seed)

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target.astype("int32")
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)

model = tf.keras.Sequential([
    tf.keras.layers.Dense(64, activation="relu", input_shape=(64,)),
    tf.keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
callbacks = [dlbox_metrics.keras_callback()] if dlbox_metrics else []
model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_split=0.1, verbose=2, callbacks=callbacks)

loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"test accuracy {accuracy:.4f}, test loss {loss:.4f}")
if dlbox_metrics:
    dlbox_metrics.log("test_accuracy", accuracy, step=epochs)
    dlbox_metrics.log("test_loss", loss, step=epochs)
    out = os.path.join(dlbox_metrics.artifacts_dir(), "model")
else:
    out = "digits-model"
model.save(out)  # a SavedModel directory: what TF Serving loads
print(f"saved the model to {out}")
