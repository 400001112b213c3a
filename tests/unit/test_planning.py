"""Planning a workspace or a job is pure: facts in, a ContainerSpec out, no engine asked.

DOCKER_HOST points at a socket that does not exist (and the engine client is made afresh), so a
plan that reached for the engine would fail here with engine_unavailable."""

from __future__ import annotations

import json

import pytest

from dlbox import config
from dlbox.containers import networks
from dlbox.containers import policy as containers
from dlbox.containers import workspace_files as services
from dlbox.containers.mount_policy import Mount
from dlbox.engine import api as engine
from dlbox.errors import DlboxError, UsageError
from dlbox.jobs import runner
from dlbox.spec.model import Resources
from dlbox.store.db import Job
from dlbox.workspaces import manage
from dlbox.workspaces.manage import UpFacts, UpRequest

GIB = 1024**3
IMAGE = {"id": "sha256:" + "ab" * 32, "ref": "dlbox/torch:1", "services": ["jupyter", "ssh"], "user": "dl",
         "uid": "1234", "gid": "1234", "env": ["PATH=/opt/venv/bin:/usr/bin", "LANG=C.UTF-8"]}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample alice@laptop"


@pytest.fixture(autouse=True)
def engine_absent(no_engine):
    yield
    with pytest.raises(DlboxError) as err:  # the proof: there was no engine to ask
        engine.client()
    assert err.value.code == "engine_unavailable"


def facts(**changes) -> UpFacts:
    base = dict(image=IMAGE, capacity={"cpus": 16, "memory": 64 * GIB, "runtimes": ["nvidia", "runc"]},
                free_ports={services.JUPYTER_PORT: 40001, services.SSH_PORT: 40002}, token="tok",
                authorized_key=KEY, gpu_inventory=["0", "1", "2", "3"], held_gpus={"other": ["1"]})
    return UpFacts(**(base | changes))


def test_a_workspace_plan_is_the_whole_container(tmp_path):
    data = Mount(str(tmp_path), "/data", read_only=True)
    req = UpRequest(name="ws1", ssh=True, memory="8g", cpus=2.5, gpus="0,2", pids=512, shm_size="2g",
                    owner="alice", jupyter_port=8899)
    plan = manage.plan(req, facts(mounts=[data], default_mounts=[Mount(str(tmp_path), "/data"),
                                                                 Mount(str(tmp_path), "/extra")]))
    spec = plan.spec
    assert spec.name == "dlbox-ws-ws1" and spec.image == IMAGE["id"] and spec.command == []
    assert spec.user == "1234:1234" and containers.non_root(spec.user)
    # CIS 5.13: a read-only root; the user's writable places are /workspace, HOME (volumes kept by
    # `rm`) and /tmp; the service files get an anonymous volume of their own, removed with the container
    assert spec.read_only and spec.tmpfs == {"/tmp": "rw,exec,nosuid,nodev,mode=1777"}
    assert spec.own_volumes == (services.DIR,) and services.DIR != "/etc/dlbox"  # the image's CA bundle stays seen
    assert spec.limits == containers.Limits(memory=8 * GIB, cpus=2.5, shm_size=2 * GIB, pids=512)
    assert spec.gpu_ids == ["0", "2"]
    # the flag's /data wins over the spec's; the spec's /extra is added
    assert spec.mounts == [data, Mount(str(tmp_path), "/extra")]
    assert spec.volumes == {"dlbox-ws-ws1-data": manage.WORKDIR, "dlbox-ws-ws1-home": "/home/dl"}
    assert spec.workdir == manage.WORKDIR
    # the user's pip installs go to HOME, found after the venv's packages by the service files' sitecustomize
    assert spec.env["HOME"] == "/home/dl" and spec.env["PIP_PREFIX"] == spec.env["PYTHONUSERBASE"] == "/home/dl/.local"
    assert spec.env["PYTHONPATH"] == services.PYTHON_DIR
    assert spec.env["PATH"] == "/opt/venv/bin:/usr/bin:/home/dl/.local/bin"
    assert spec.ports == {services.JUPYTER_PORT: ("127.0.0.1", 8899), services.SSH_PORT: ("127.0.0.1", 40002)}
    assert spec.network == networks.for_owner("alice") and spec.network.labels["dlbox.owner"] == "alice"
    assert spec.healthcheck == services.HEALTHCHECK and spec.restart == services.RESTART
    labels = spec.labels
    assert labels["dlbox.kind"] == "workspace" and labels["dlbox.workspace"] == "ws1"
    assert labels["dlbox.owner"] == "alice" and labels["dlbox.home"] == config.home_id()
    assert labels["dlbox.gpus"] == "0,2" and labels["dlbox.image"] == IMAGE["ref"]
    assert labels[f"dlbox.port.{services.JUPYTER_PORT}"] == "8899"
    assert labels[f"dlbox.port.{services.SSH_PORT}"] == "40002"
    assert json.loads(labels["dlbox.mounts"]) == [m.to_json() for m in spec.mounts]
    # the volume records its owner; the files carry the token and the key
    assert plan.volume == "dlbox-ws-ws1-data" and plan.home_volume == "dlbox-ws-ws1-home" and plan.owner == "alice"
    assert plan.volume_labels == {"dlbox.kind": "workspace", "dlbox.workspace": "ws1", "dlbox.owner": "alice",
                                  "dlbox.home": config.home_id()}
    assert plan.files["token"] == "tok" and plan.files["authorized_keys"] == KEY and plan.files["uid"] == 1234
    assert plan.files["env"]["PATH"] == spec.env["PATH"] and plan.files["env"]["LANG"] == "C.UTF-8"  # sshd's SetEnv
    assert plan.ssh and plan.token == "tok" and plan.fixed_ports


def test_a_local_workspace_plan_without_limits_or_gpus():
    plan = manage.plan(UpRequest(name="plain", jupyter=False, ssh=False), facts(capacity={}))
    spec = plan.spec
    assert spec.ports == {} and spec.gpu_ids is None and "dlbox.gpus" not in spec.labels
    assert spec.limits == containers.Limits()  # the engine gives every container a memory floor
    assert "dlbox.owner" not in spec.labels and plan.owner == manage.LOCAL_OWNER
    assert spec.network == networks.for_owner(None)
    assert plan.token is None and not plan.ssh and not plan.fixed_ports


def test_spec_defaults_shrink_to_the_machine_and_ask_for_gpus():
    defaults = Resources(memory="128g", cpus=64, gpus=2)
    plan = manage.plan(UpRequest(name="big"), facts(defaults=defaults))
    assert plan.spec.limits.memory == 64 * GIB and plan.spec.limits.cpus == 16.0
    assert plan.spec.gpu_ids == ["0", "2"]  # two free ones: "1" is held


@pytest.mark.parametrize("req, changes, message", [
    (UpRequest(name="Bad Name"), {}, "NAME: 'Bad Name' must be lowercase letters"),
    (UpRequest(name="ws", host="example.org"), {}, "--host: 'example.org' is not an IP address"),
    (UpRequest(name="ws"), {"mounts": [Mount("/a", "/x"), Mount("/b", "/x")]}, "--mount: each target must be unique"),
    (UpRequest(name="ws"), {"mounts": [Mount("/a", "/workspace")]}, "--mount: each target must be unique and not /workspace"),
    (UpRequest(name="ws", gpus="0;1"), {}, "--gpus: '0;1' is not 'all', a count"),
    (UpRequest(name="ws"), {"container_exists": True}, "workspace ws already exists; `dlbox start ws`"),
    (UpRequest(name="ws", owner="bob"), {"volume_exists": True, "volume_owner": "alice"},
     "workspace name ws is taken: its kept volume dlbox-ws-ws-data belongs to another user"),
    (UpRequest(name="ws", owner="bob"), {"volume_exists": True}, "workspace name ws is taken: its kept volume dlbox-ws-ws-data records no owner"),
    (UpRequest(name="ws", owner="bob"), {"home_exists": True, "home_owner": "alice"},
     "workspace name ws is taken: its kept volume dlbox-ws-ws-home belongs to another user"),
    (UpRequest(name="ws"), {"mounts": [Mount("/a", "/home/dl")]}, "--mount: each target must be unique and not"),
    (UpRequest(name="ws"), {"default_mounts": [Mount("/a", "/tmp")]}, "--mount: each target must be unique and not"),
    (UpRequest(name="ws", jupyter_port=70000), {}, "--jupyter-port: 70000 is not a port (1-65535)"),
    (UpRequest(name="ws", memory="100g"), {}, "--memory: 100g is more than this machine has (64.0g)"),
    (UpRequest(name="ws", cpus=0), {}, "--cpus: must be more than 0"),
    (UpRequest(name="ws", jupyter=True), {"image": IMAGE | {"services": []}}, "--jupyter: image dlbox/torch:1 has no Jupyter"),
    (UpRequest(name="ws", ssh=True), {"image": IMAGE | {"services": ["jupyter"]}}, "--ssh: image dlbox/torch:1 has no SSH server"),
    (UpRequest(name="ws", ssh=True), {"authorized_key": None}, "--ssh needs a public key"),
    (UpRequest(name="ws", gpus="1"), {"capacity": {"cpus": 4, "memory": GIB, "runtimes": ["runc"]}},
     "--gpus: the engine has no GPU runtime"),
    (UpRequest(name="ws", gpus="1,2"), {}, "--gpus: 1 held by other; use --share-gpus to share"),
    (UpRequest(name="ws", gpus="4"), {}, "--gpus: 4 asked, 3 free (1 held by other); use --share-gpus to share"),
    (UpRequest(name="ws", gpus="7,8"), {}, "--gpus: no GPU 7, 8 on this host (has 0, 1, 2, 3)"),
    (UpRequest(name="ws", host="0.0.0.0", url_host="bad host/x"), {}, "host: 'bad host/x' is not a host name"),
])
def test_a_bad_request_is_refused_with_its_one_line(req, changes, message):
    with pytest.raises(DlboxError) as err:
        manage.plan(req, facts(**changes))
    assert str(err.value).startswith(message), err.value
    assert "\n" not in str(err.value)


def test_the_local_owner_adopts_a_volume_without_an_owner_and_a_shared_gpu_is_given():
    plan = manage.plan(UpRequest(name="ws", gpus="1,2", share_gpus=True), facts(volume_exists=True))
    assert plan.spec.gpu_ids == ["1", "2"] and plan.owner == manage.LOCAL_OWNER


def test_usage_errors_stay_usage_errors():
    with pytest.raises(UsageError):
        manage.plan(UpRequest(name="ws", pids=3), facts())


def make_job(**changes) -> Job:
    base = dict(id="abc123", user="alice", state="queued", command=["python", "train.py"], params={"lr": "0.1"},
                env={}, image_ref="dlbox/torch:1", image_id=IMAGE["id"], mounts=[{"source": "/srv/d", "target": "/d",
                                                                                  "read_only": True}],
                volumes={}, cpus=2.0, memory=4 * GIB, shm_size=None, gpu_ids=["1"], submitted_at=0.0,
                workdir="/work")
    return Job(**(base | changes))


JOB_IMAGE = {"Id": IMAGE["id"], "Config": {"Labels": {"dlbox.uid": "1234", "dlbox.user": "dl"},
                                           "Env": ["PYTHONPATH=/app", "HF_TOKEN=hf_secretsecretsecret"]}}


def test_a_job_plan_is_read_only_with_scratch_its_run_dir_labels_and_limits():
    planned = runner.plan(make_job(), JOB_IMAGE)
    spec = planned.spec
    assert spec.name == "dlbox-job-abc123" and spec.command == ["python", "train.py"] and spec.workdir == "/work"
    assert spec.user == "1234:1234" and (planned.uid, planned.gid) == (1234, 1234)
    assert spec.read_only
    assert spec.tmpfs == {"/tmp": "rw,exec,nosuid,nodev,mode=1777",
                          "/home/dl": "rw,exec,nosuid,nodev,mode=0700,uid=1234,gid=1234"}
    assert spec.mounts == [Mount("/srv/d", "/d", True), Mount(str(runner.job_dir("abc123")), runner.RUN_DIR),
                           Mount(str(runner.helper_path()), runner.LIB_DIR, True)]
    assert spec.labels == {"dlbox.kind": "job", "dlbox.job": "abc123", "dlbox.owner": "alice",
                           "dlbox.home": config.home_id(), "dlbox.gpus": "1"}
    assert spec.limits == containers.Limits(memory=4 * GIB, cpus=2.0, shm_size=containers.DEFAULT_SHM)
    assert spec.gpu_ids == ["1"] and spec.network == networks.for_owner("alice")
    assert spec.healthcheck == {"test": ["NONE"]}
    assert spec.env == {"DLBOX_RUN_DIR": runner.RUN_DIR, "DLBOX_JOB_ID": "abc123",
                        "PYTHONPATH": f"{runner.LIB_DIR}:/app", "DLBOX_PARAM_LR": "0.1"}
    assert planned.env["HF_TOKEN"] != "hf_secretsecretsecret"  # recorded redacted
    # planning made nothing on the host
    assert not runner.run_dir("abc123").exists() and not runner.helper_path().exists()


def test_a_foreign_image_job_runs_as_the_default_uid_without_a_home():
    planned = runner.plan(make_job(gpu_ids=None, mounts=[]), {"Id": "x", "Config": {"Labels": None, "Env": None}})
    assert planned.spec.user == f"{containers.DEFAULT_UID}:{containers.DEFAULT_UID}"
    assert set(planned.spec.tmpfs) == {"/tmp"} and "dlbox.gpus" not in planned.spec.labels
    assert planned.spec.env["PYTHONPATH"] == runner.LIB_DIR
