"""Every preset that can be built here builds, and its tested pins work together."""

from __future__ import annotations


def build_preset(dlbox, tmp_path, run_id, preset: str) -> dict:
    from dlbox.spec import presets

    spec = presets.text(preset).replace(f"name: {preset}\n", f"name: t{run_id}-{preset}\n", 1)
    (tmp_path / "dlbox.yaml").write_text(spec)
    return dlbox.json("build", cwd=tmp_path)


def test_scikit_learn_preset_builds_and_fits(dlbox, tmp_path, run_id, docker_client):
    built = build_preset(dlbox, tmp_path, run_id, "scikit-learn")
    script = ("from sklearn.datasets import load_digits; from sklearn.linear_model import LogisticRegression; "
              "x, y = load_digits(return_X_y=True); print(round(LogisticRegression(max_iter=2000).fit(x, y)"
              ".score(x, y), 2)); import jupyter_server, numpy; print(numpy.__version__)")
    out = docker_client.containers.run(built["id"], ["python", "-c", script], remove=True).decode().split()
    assert float(out[0]) > 0.95 and out[1] == "2.0.2"
    assert dlbox("verify", built["image"]).returncode == 0


def test_tensorflow_preset_trains_keras(tf_image, docker_client):
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    out = docker_client.containers.run(tf_image["id"], ["python", "/examples/check_tf.py"], remove=True,
                                       volumes={str(examples): {"bind": "/examples", "mode": "ro"}})
    text = out.decode()
    assert "TensorFlow 2.9.3, NumPy 1.23.5" in text and "trained 3 epochs" in text
