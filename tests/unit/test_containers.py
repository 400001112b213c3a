import os

import pytest

from dlbox.containers import mount_policy
from dlbox.containers import policy as containers
from dlbox.engine import gpus
from dlbox.containers import workspace_files as services
from dlbox.workspaces import vault
from dlbox.errors import DlboxError, UsageError
from dlbox.spec.model import Resources

MACHINE = {"cpus": 2, "memory": 8 * 1024**3}


def test_mount_parsing(tmp_path):
    m = mount_policy.parse_mount(f"{tmp_path}:/data:ro")
    assert (m.source, m.target, m.read_only) == (str(tmp_path), "/data", True)
    assert mount_policy.parse_mount(f"{tmp_path}:/data").read_only is False


def test_relative_mount_resolves_against_base(tmp_path):
    (tmp_path / "d").mkdir()
    assert mount_policy.parse_mount("d:/x", base=tmp_path).source == str(tmp_path / "d")


@pytest.mark.parametrize("text, message", [
    ("/nope-does-not-exist:/data", "does not exist"),
    ("/tmp", "is not SRC:DST"),
    ("/tmp:/data:rx", "mode must be ro or rw"),
    ("/tmp:data", "must be an absolute path"),
    ("/tmp:/a/../etc", "must be an absolute path"),
    ("/:/host", "may not be mounted"),
    ("/etc:/e", "may not be mounted"),
    ("/proc/self:/p", "may not be mounted"),
])
def test_bad_mounts(text, message):
    with pytest.raises(UsageError, match=message):
        mount_policy.parse_mount(text)


def test_symlink_to_a_forbidden_place_is_refused(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    with pytest.raises(UsageError, match="may not be mounted"):
        mount_policy.parse_mount(f"{link}:/data")


def test_engine_socket_is_never_mountable(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.touch()
    with pytest.raises(UsageError, match="may not be mounted"):
        mount_policy.parse_mount(f"{sock}:/var/run/docker.sock")


def test_limits_flags_override_spec_defaults():
    defaults = Resources(memory="4g", cpus=1, shm_size="2g")
    got = containers.limits(defaults, memory="1g", cpus=None, shm_size=None, pids=None, capacity=MACHINE)
    assert got == containers.Limits(memory=1024**3, cpus=1, shm_size=2 * 1024**3, pids=4096)


def test_limits_have_sane_shm_and_pid_defaults():
    got = containers.limits(Resources(), memory=None, cpus=None, shm_size=None, pids=None, capacity=MACHINE)
    assert got.shm_size == 1024**3 and got.pids == 4096 and got.memory is None


def test_flags_beyond_the_machine_are_refused_defaults_shrink():
    with pytest.raises(UsageError, match="--memory: 16g is more than this machine has"):
        containers.limits(Resources(), memory="16g", cpus=None, shm_size=None, pids=None, capacity=MACHINE)
    with pytest.raises(UsageError, match="--cpus: 4 is more than this machine has"):
        containers.limits(Resources(), memory=None, cpus=4, shm_size=None, pids=None, capacity=MACHINE)
    shrunk = containers.limits(Resources(memory="16g", cpus=8), memory=None, cpus=None, shm_size=None, pids=None,
                               capacity=MACHINE)
    assert shrunk.cpus == 2 and shrunk.memory == MACHINE["memory"]
    fits = containers.limits(Resources(memory="6g", cpus=1), memory=None, cpus=None, shm_size=None, pids=None,
                             capacity=MACHINE)
    assert fits.cpus == 1 and fits.memory == 6 * 1024**3  # a default that fits is kept as it is


@pytest.mark.parametrize("kw, message", [
    ({"memory": "lots"}, "--memory: 'lots' is not a size"),
    ({"memory": "1k"}, "--memory: at least 6m"),
    ({"cpus": 0}, "--cpus: must be more than 0"),
    ({"shm_size": "x"}, "--shm-size"),
    ({"pids": 3}, "--pids: at least 16"),
])
def test_bad_limit_flags(kw, message):
    args = {"memory": None, "cpus": None, "shm_size": None, "pids": None, **kw}
    with pytest.raises(UsageError, match=message):
        containers.limits(Resources(), capacity=MACHINE, **args)


def test_names():
    assert containers.check_name("alice-tf") == "alice-tf"
    for bad in ("Alice", "a b", "-x", "x" * 42, ""):
        with pytest.raises(UsageError):
            containers.check_name(bad)


# --- GPUs -------------------------------------------------------------------------------------


def test_gpu_flag_parsing():
    assert gpus.parse("all") == "all"
    assert gpus.parse("2") == 2
    assert gpus.parse("0,3") == ["0", "3"]
    assert gpus.parse("GPU-1a2b,GPU-3c4d") == ["GPU-1a2b", "GPU-3c4d"]
    for bad in ("0", "0;1", "a b"):
        with pytest.raises(UsageError):
            gpus.parse(bad)


def test_gpu_allocation_hands_out_free_devices_only():
    held = {"alice": ["0"]}
    assert gpus.allocate(1, available=["0", "1", "2"], held=held) == ["1"]
    assert gpus.allocate(["2"], available=["0", "1", "2"], held=held) == ["2"]
    with pytest.raises(DlboxError, match="0 held by alice; use --share-gpus"):
        gpus.allocate(["0"], available=["0", "1"], held=held)
    with pytest.raises(DlboxError, match="0 held by alice"):
        gpus.allocate("all", available=["0", "1"], held=held)
    with pytest.raises(DlboxError, match="2 asked, 1 free"):
        gpus.allocate(2, available=["0", "1"], held=held)
    assert gpus.allocate(["0"], available=["0", "1"], held=held, share=True) == ["0"]
    assert gpus.allocate("all", available=["0", "1"], held={}) == ["0", "1"]


def test_gpu_allocation_errors_for_unknown_or_absent_gpus():
    with pytest.raises(UsageError, match="no GPU 7"):
        gpus.allocate(["7"], available=["0"], held={})
    with pytest.raises(UsageError, match="3 asked, this host has 1"):
        gpus.allocate(3, available=["0"], held={})
    with pytest.raises(DlboxError, match="no GPUs that dlbox knows of"):
        gpus.allocate(1, available=[], held={})


def test_gpu_device_request_shape():
    assert gpus.device_request(["0", "1"]) == {
        "Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "1"], "Capabilities": [["gpu"]], "Options": {}}


def test_gpu_inventory_can_be_declared(monkeypatch):
    monkeypatch.setenv("DLBOX_GPUS", "0, 1")
    assert gpus.inventory() == ["0", "1"]


# --- service files and secrets ------------------------------------------------------------------


def test_sshd_config_is_key_only_for_the_user_and_carries_the_image_env():
    text = services.sshd_config("dl", {"PATH": "/opt/venv/bin:/usr/bin", "HOME": "/root"})
    lines = text.splitlines()
    for line in ("PermitRootLogin no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "AuthenticationMethods publickey", "AllowUsers dl", "Port 2222"):
        assert line in lines
    assert 'SetEnv PATH="/opt/venv/bin:/usr/bin"' in lines and "HOME" not in text.split("SetEnv")[1]


def test_service_files_hold_the_token_only_in_its_own_file():
    files = {path: (data, mode, uid) for path, data, mode, uid in
             services.files(user="dl", uid=1000, token="s3cret", host_key=None, authorized_keys=None)}
    assert files[services.TOKEN_FILE] == (b"s3cret", 0o400, 1000)
    assert all(b"s3cret" not in data for path, (data, _, _) in files.items() if path != services.TOKEN_FILE)
    assert f"{services.DIR}/ssh/sshd_config" not in files


def test_vault_writes_owner_only_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    vault.save("ws", {"token": "t"})
    assert vault.load("ws") == {"token": "t"}
    directory = vault.directory("ws")
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "secrets.json").stat().st_mode & 0o777 == 0o600
    vault.forget("ws")
    assert not directory.exists() and vault.load("ws") == {}


def test_tokens_are_long_and_random():
    a, b = vault.new_token(), vault.new_token()
    assert a != b and len(a) >= 43  # 32 bytes, url-safe base64


@pytest.mark.parametrize("source", ["/run", "/var/run", "/var", "/var/lib/docker"])
def test_folders_holding_the_engine_are_refused(source):
    if not os.path.exists(source):
        pytest.skip(f"{source} is not on this machine")
    with pytest.raises(UsageError, match="may not be mounted"):
        mount_policy.parse_mount(f"{source}:/data")


def test_dlbox_home_and_its_parents_are_refused(tmp_path, monkeypatch):
    home = tmp_path / "home" / "dlbox"
    home.mkdir(parents=True)
    monkeypatch.setenv("DLBOX_HOME", str(home))
    for source in (home, home.parent, tmp_path):
        with pytest.raises(UsageError, match="may not be mounted"):
            mount_policy.parse_mount(f"{source}:/data")
    (tmp_path / "data").mkdir()
    assert mount_policy.parse_mount(f"{tmp_path / 'data'}:/data").source == str(tmp_path / "data")


@pytest.mark.parametrize("target", ["/etc/dlbox", "/etc/dlbox-ws", "/etc/dlbox/ssh", "/opt/dlbox/lib", "/dlbox/run", "/tmp/dlbox"])
def test_dlbox_own_targets_are_reserved(tmp_path, target):
    with pytest.raises(UsageError, match="is dlbox's own"):
        mount_policy.parse_mount(f"{tmp_path}:{target}")


def test_a_mount_source_swapped_for_a_symlink_after_the_check_is_refused(tmp_path):
    """A queued job or a stopped workspace starts later: its checked sources are checked again."""
    from dlbox.errors import UsageError

    data = tmp_path / "data"
    data.mkdir()
    mount = mount_policy.parse_mount(f"{data}:/data")
    mount_policy.recheck([mount])
    data.rmdir()
    (tmp_path / "elsewhere").mkdir()
    data.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="changed since it was checked"):
        mount_policy.recheck([mount])


def test_a_mount_source_that_is_gone_is_refused_not_recreated(tmp_path):
    from dlbox.errors import DlboxError, UsageError

    data = tmp_path / "data"
    data.mkdir()
    mount = mount_policy.parse_mount(f"{data}:/data:ro")
    data.rmdir()
    with pytest.raises(DlboxError, match="no longer exists") as caught:
        mount_policy.recheck([mount])
    assert not isinstance(caught.value, UsageError) and not data.exists()


# --- the container floor: who a container runs as, its default memory, its scratch space ---------


def test_run_as_is_numeric_and_never_root():
    from dlbox.containers.policy import non_root, run_as

    assert run_as({"dlbox.uid": "1000"}) == "1000:1000"
    assert run_as({"dlbox.uid": "1234", "dlbox.gid": "2000"}) == "1234:2000"
    for hostile in ({}, None, {"dlbox.uid": "0"}, {"dlbox.uid": "root"}, {"dlbox.uid": "-1"}, {"dlbox.uid": ""}):
        assert run_as(hostile) == "1000:1000"
    assert run_as({"dlbox.uid": "1000", "dlbox.gid": "0"}) == "1000:1000"
    assert [u for u in ("1000:1000", "0:1000", "1000:0", "dl", "1000", "root:root", "", None, "1000:x")
            if non_root(u)] == ["1000:1000"]


def test_default_memory_is_4g_or_half_the_machine(monkeypatch):
    from dlbox.containers.policy import DEFAULT_MEMORY, default_memory
    from dlbox.errors import DlboxError

    monkeypatch.delenv("DLBOX_DEFAULT_MEMORY", raising=False)
    assert default_memory(64 * 1024**3) == DEFAULT_MEMORY == 4 * 1024**3
    assert default_memory(2 * 1024**3) == 1024**3
    assert default_memory(None) == DEFAULT_MEMORY
    monkeypatch.setenv("DLBOX_DEFAULT_MEMORY", "200m")
    assert default_memory(64 * 1024**3) == 200 * 1024**2
    monkeypatch.setenv("DLBOX_DEFAULT_MEMORY", "lots")
    with pytest.raises(DlboxError, match="DLBOX_DEFAULT_MEMORY: 'lots' is not a size"):
        default_memory(64 * 1024**3)


def test_scratch_space_is_tmp_and_the_users_home_only():
    from dlbox.containers.policy import image_home, scratch

    assert image_home({"dlbox.user": "dl"}) == "/home/dl"
    assert image_home({"dlbox.user": "../etc"}) is None and image_home({}) is None
    assert scratch("1000:1000", "/home/dl") == {"/tmp": "rw,exec,nosuid,nodev,mode=1777",
                                                "/home/dl": "rw,exec,nosuid,nodev,mode=0700,uid=1000,gid=1000"}
    assert set(scratch("1000:1000", None)) == set(scratch("1000:1000", "/")) == {"/tmp"}


def test_foreign_images_need_the_admins_setting(monkeypatch):
    from dlbox.containers.policy import foreign_images_allowed

    monkeypatch.delenv("DLBOX_ALLOW_FOREIGN_IMAGES", raising=False)
    assert not foreign_images_allowed()
    for value, allowed in (("1", True), ("yes", True), ("0", False), ("", False), ("no", False)):
        monkeypatch.setenv("DLBOX_ALLOW_FOREIGN_IMAGES", value)
        assert foreign_images_allowed() is allowed


def test_a_guarded_mount_is_checked_again_before_start(tmp_path):
    """A server user's mount: its parents must still be root's alone when the container is made or started."""
    from dlbox.errors import DlboxError

    parent = tmp_path / "alice"
    (parent / "data").mkdir(parents=True)
    mount = mount_policy.parse_mount(f"{parent / 'data'}:/data", guarded=True)
    assert mount.to_json()["guarded"] is True and "guarded" not in mount_policy.Mount("/a", "/b").to_json()
    assert mount_policy.Mount(**mount.to_json()) == mount  # labels and job rows keep it
    mount_policy.recheck([mount])
    os.chmod(parent, 0o777)  # opened up after the check: someone could swap data now
    with pytest.raises(DlboxError, match="can be written by everyone") as caught:
        mount_policy.recheck([mount])
    assert caught.value.code == "mount_refused"
    mount_policy.recheck([mount_policy.Mount(**(mount.to_json() | {"guarded": False}))])  # an admin's: not this rule
    os.chmod(parent, 0o755)
    (parent / "data").rename(parent / "real")
    os.symlink("/", parent / "data")  # swapped for a symlink to the host's /
    with pytest.raises(DlboxError):
        mount_policy.recheck([mount])


@pytest.mark.parametrize("host_header, expected", [
    ("gpu-box:8700", "gpu-box"), ("10.1.2.3:8700", "10.1.2.3"), ("[fd00::2]:8700", "[fd00::2]"), ("GPU-Box", "gpu-box"),
])
def test_a_0000_workspace_url_uses_the_host_the_client_reached(host_header, expected):
    from starlette.requests import Request

    from dlbox.server import workspace_actions
    from dlbox.server import app as service

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"host", host_header.encode())]})
    assert workspace_actions.url_host(service.Context(store=None, loop=None, workspace_host="0.0.0.0"),
                                      request) == expected
    assert workspace_actions.url_host(service.Context(store=None, loop=None, workspace_host="127.0.0.1"),
                                      request) is None  # a fixed address is the URL's host already


@pytest.mark.parametrize("bad", ["a b", "evil/x", "x\r\nSet-Cookie: y", "", "-x", "a" * 300, "host?q"])
def test_a_hostile_host_never_reaches_a_label(bad):
    import socket

    from starlette.requests import Request

    from dlbox.server import workspace_actions
    from dlbox.server import app as service
    from dlbox.workspaces import manage as workspaces

    with pytest.raises(UsageError):
        workspaces.check_url_host(bad)
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"host", bad.encode())]})
    ctx = service.Context(store=None, loop=None, workspace_host="0.0.0.0")
    assert workspace_actions.url_host(ctx, request) == socket.gethostname()


def test_service_files_all_lie_in_their_own_volume_not_the_images_etc_dlbox():
    """put_files writes them through the volume at DIR (a read-only root refuses any other place),
    and /etc/dlbox, where the image keeps its CA bundle, is left as the image has it."""
    from pathlib import PurePosixPath

    from dlbox.engine import api as engine

    files = services.files(user="dl", uid=1000, token="t", host_key=b"k", authorized_keys="ssh-ed25519 AAAA")
    root = PurePosixPath(services.DIR)
    assert all(PurePosixPath(path).is_relative_to(root) for path, *_ in files) and services.DIR != "/etc/dlbox"
    assert services.TOKEN_FILE.startswith(services.DIR + "/")
    assert engine._parents(f"{services.DIR}/ssh/sshd_config", root) == ["ssh"]
    assert engine._parents("/etc/dlbox/lock", PurePosixPath("/")) == ["etc/dlbox"]  # the image relabel's, as before
    env = services.state_env("/home/dl", {"PATH": "/opt/venv/bin:/usr/bin", "PYTHONPATH": "/opt/lib"})
    assert env["PYTHONPATH"] == f"{services.PYTHON_DIR}:/opt/lib" and env["PATH"].endswith(":/home/dl/.local/bin")
