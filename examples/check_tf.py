"""Smoke check for a TensorFlow image: print the version and train a small Keras model.

Runs with no network and no data download: the data is generated here.
"""

import numpy as np
import tensorflow as tf

print(f"TensorFlow {tf.__version__}, NumPy {np.__version__}")
rng = np.random.default_rng(0)
x = rng.normal(size=(4000, 20)).astype("float32")
y = (x[:, :5].sum(axis=1) > 0).astype("int32")
model = tf.keras.Sequential([
    tf.keras.layers.Dense(32, activation="relu", input_shape=(20,)),
    tf.keras.layers.Dense(2, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x, y, epochs=3, batch_size=64, verbose=0)
accuracy = history.history["accuracy"][-1]
print(f"trained 3 epochs: accuracy {accuracy:.3f}")
assert accuracy > 0.8, "the model did not learn"
