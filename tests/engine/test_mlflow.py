"""Exporting a run to a real MLflow tracking server (MLflow installed in its own venv)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, await_http):
    venv = Path.home() / ".cache" / "dlbox-tests" / "mlflow-venv"
    if not (venv / "bin" / "mlflow").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mlflow"], check=True, timeout=900)
    work = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{work}/mlflow.db", "--default-artifact-root", str(work / "artifacts"),
         "--workers", "1"],
        stdout=(work / "server.log").open("wb"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    await_http(f"{uri}/health", server, work / "server.log", 180, "mlflow server")
    yield uri
    server.terminate()
    server.wait(timeout=30)


def test_export_carries_image_id_git_commit_params_and_metrics(dlbox, small_image, mlflow_server,
                                                               tmp_path, git_project):
    (tmp_path / "README").write_text("a project\n")
    project = git_project(tmp_path)
    script = "import dlbox_metrics as m; [m.log('loss', 1.0 / (i + 1), step=i) for i in range(3)]"
    submitted = dlbox.json("run", "--image", small_image["image"], "--param", "lr=0.1", "--",
                           "python", "-c", script, cwd=project)
    dlbox("wait", submitted["id"])
    exported = dlbox.json("runs", "export", submitted["id"], "--mlflow", mlflow_server, "--experiment", "tests")
    with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={exported['mlflow_run_id']}") as r:
        run = json.load(r)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    record = dlbox.json("runs", "show", submitted["id"])
    assert tags["mlflow.docker.image.id"] == record["image_id"]
    assert tags["mlflow.source.git.commit"] == record["git_commit"] and record["git_commit"]
    assert tags["dlbox.lock_hash"] == record["lock_hash"]
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"lr": "0.1"}
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"loss": pytest.approx(1 / 3)}
    assert run["info"]["status"] == "FINISHED"
    with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/metrics/get-history?run_id="
                                f"{exported['mlflow_run_id']}&metric_key=loss") as r:
        assert [m["step"] for m in json.load(r)["metrics"]] == [0, 1, 2]


def test_export_to_nowhere_is_one_clear_line(dlbox, small_image):
    submitted = dlbox.json("run", "--image", small_image["image"], "--", "true")
    dlbox("wait", submitted["id"])
    result = dlbox("runs", "export", submitted["id"], "--mlflow", "http://127.0.0.1:9", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --mlflow: cannot reach the tracking server")
