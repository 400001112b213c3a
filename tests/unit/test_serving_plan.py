"""The serving container's plan (pure) and the lib folder's wheel extraction."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from dlbox.errors import UsageError
from dlbox.serving import lib
from dlbox.serving import plan as serving_plan  # the function (dlbox.serving.plan)
from dlbox.serving.plan import PROGRAM, label_config

IMAGE_LABELS = {"dlbox.uid": "1000", "dlbox.user": "dl"}


def make(**over):
    args = dict(name="web", owner="ann", image_id="sha256:" + "a" * 64,
                versions={1: Path("/m/1"), 2: Path("/m/2")}, labels={"stable": 1}, model_name="digits",
                port=18501, grpc_port=18500, lib_dir=Path("/h/lib/serving-x"), config_dir=Path("/h/deployments/web/config"),
                image_labels=IMAGE_LABELS) | over
    return serving_plan(**args)


def test_the_plan_is_a_hardened_service_with_read_only_mounts(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    spec = make(memory=2 * 1024**3)
    assert spec.name == "dlbox-deploy-web" and spec.image.startswith("sha256:") and spec.user == "1000:1000"
    assert spec.read_only and set(spec.tmpfs) == {"/tmp", "/home/dl"}
    assert spec.healthcheck["test"][:3] == ["CMD", "python", PROGRAM] and spec.restart["Name"] == "on-failure"
    assert {m.target: (m.source, m.read_only) for m in spec.mounts} == {
        "/models/1": ("/m/1", True), "/models/2": ("/m/2", True), "/opt/dlbox/serving": ("/h/lib/serving-x", True),
        "/dlbox/serving/config": ("/h/deployments/web/config", True)}
    assert spec.ports == {8501: ("127.0.0.1", 18501), 8500: ("127.0.0.1", 18500)}
    assert spec.network.labels["dlbox.owner"] == "ann" and spec.limits.memory == 2 * 1024**3
    assert spec.labels["dlbox.kind"] == "deployment" and spec.labels["dlbox.versions"] == "1,2"
    assert "--batch-max" not in spec.command  # batching is off unless asked for


def test_batching_no_grpc_and_another_host(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    spec = make(grpc_port=None, host="0.0.0.0", batch_max=32, batch_timeout_ms=1.5)
    assert spec.ports == {8501: ("0.0.0.0", 18501)}
    assert spec.command[spec.command.index("--grpc-port") + 1] == "0"
    assert spec.command[spec.command.index("--batch-max"):][:4] == ["--batch-max", "32", "--batch-timeout-ms", "1.5"]


@pytest.mark.parametrize("over", [
    {"versions": {}}, {"versions": {-1: Path("/m")}}, {"versions": {1: Path("rel")}},
    {"labels": {"stable": 3}}, {"labels": {"bad label": 1}}, {"model_name": "a/b"}, {"serve": [7]},
    {"name": "Bad Name"},
])
def test_bad_inputs_are_refused(over, monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    with pytest.raises(UsageError):
        make(**over)


def test_the_label_config_names_labels_and_kept_versions():
    assert label_config({"b": 2, "a": 1}, [2, 2]) == {"labels": {"a": 1, "b": 2}, "versions": [2]}


def test_only_the_wheels_protos_are_taken():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in ("tensorflow_serving/apis/predict_pb2.py", "tensorflow_serving/../evil.py", "/etc/x.py",
                     "tensorflow_serving/apis/data.bin", "other/x.py"):
            z.writestr(name, "")
    with zipfile.ZipFile(buf) as z:
        assert lib._members(z) == ["tensorflow_serving/apis/predict_pb2.py"]


def test_a_wheel_that_is_not_the_pinned_one_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / lib.WHEEL
    fake.write_bytes(b"not it")
    monkeypatch.setenv("DLBOX_SERVING_API_WHEEL", str(fake))
    with pytest.raises(Exception, match="not the pinned"):
        lib.wheel()


def test_the_program_is_package_data():
    from importlib import resources

    text = resources.files("dlbox.serving").joinpath("files/dlbox_serving.py").read_text()
    assert "def main(" in text and json.dumps  # shipped with dlbox, mounted read-only into the container


def test_a_models_folder_is_one_read_only_mount_so_versions_can_be_added_later(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    spec = make(models_dir=Path("/h/deployments/web/models"))
    mounts = {m.target: (m.source, m.read_only) for m in spec.mounts}
    assert mounts["/models"] == ("/h/deployments/web/models", True)
    assert not any(t.startswith("/models/") for t in mounts)
    assert spec.labels["dlbox.layout"] == "folder" and make().labels["dlbox.layout"] == "mounts"


def test_link_versions_makes_whole_version_folders_of_links_and_skips_links(monkeypatch, tmp_path):
    import os

    from dlbox.serving import deploy

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "home"))
    src = tmp_path / "obj"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    (src / "variables" / "v.index").write_bytes(b"ix")
    os.symlink("/etc/passwd", src / "leak")
    folder = deploy.link_versions("web", {3: src})
    assert (folder / "3" / "saved_model.pb").read_bytes() == b"pb"
    assert (folder / "3" / "variables" / "v.index").stat().st_ino == (src / "variables" / "v.index").stat().st_ino
    assert not os.path.lexists(folder / "3" / "leak")  # a link in the source is never taken
    assert deploy.linked_versions("web") == [3]
    deploy.link_versions("web", {3: tmp_path / "nowhere", 4: src})  # 3 is kept as it is
    assert deploy.linked_versions("web") == [3, 4] and not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_replica_publishes_nothing_and_is_named_by_generation_and_index(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    spec = make(replica=(3, 1), models_dir=Path("/h/deployments/web/g3/models"),
                config_dir=Path("/h/deployments/web/g3/config"))
    assert spec.name == "dlbox-replica-web-g3-r1" and spec.ports == {}
    assert (spec.labels["dlbox.kind"], spec.labels["dlbox.generation"], spec.labels["dlbox.replica"]) == (
        "deployment-replica", "3", "1")
    assert {m.target: m.read_only for m in spec.mounts} == {
        "/models": True, "/opt/dlbox/serving": True, "/dlbox/serving/config": True}
    assert spec.read_only and spec.healthcheck and spec.restart["Name"] == "on-failure" and spec.user == "1000:1000"


def test_the_front_holds_the_ports_and_reads_the_replicas_file_read_only(monkeypatch, tmp_path):
    from dlbox.serving.plan import FRONT_MEMORY, backends, front

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    spec = front("web", "ann", "sha256:" + "a" * 64, "digits", 18501, None, "127.0.0.1",
                 lib_dir=Path("/h/lib/serving-x"), front_dir=Path("/h/deployments/web/front"),
                 image_labels=IMAGE_LABELS)
    assert spec.name == "dlbox-deploy-web" and spec.ports == {8501: ("127.0.0.1", 18501)}
    assert spec.command[spec.command.index("--front") + 1] == "/dlbox/serving/front/backends.json"
    assert spec.command[spec.command.index("--grpc-port") + 1] == "0"
    assert {m.target: m.read_only for m in spec.mounts} == {"/opt/dlbox/serving": True, "/dlbox/serving/front": True}
    assert spec.read_only and spec.user == "1000:1000" and spec.limits.memory == FRONT_MEMORY
    assert spec.labels["dlbox.role"] == "front" and spec.network.labels["dlbox.owner"] == "ann"
    with pytest.raises(UsageError):
        front("web", "ann", "sha256:x", "bad name", 1, None, lib_dir=Path("/l"), front_dir=Path("/f"))
    made = backends(2, "sha256:b", ["dlbox-replica-web-g2-r0"], True, {"generation": 1})
    assert made["backends"] == [{"host": "dlbox-replica-web-g2-r0", "rest": 8501, "grpc": 8500}]
    assert (made["generation"], made["previous"]) == (2, {"generation": 1})
