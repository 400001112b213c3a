"""Attacks on the floor every dlbox container stands on: a non-root uid *and* gid, no capabilities,
no way to gain privileges, bounded pids and memory; and jobs run only images dlbox built.

Each test performs the attack from inside a real job or helper on the real engine and asserts
the damage did not happen.
"""

from __future__ import annotations

import json
import time

import pytest

# One job tries everything a process that wants root would try, and reports what it got.
ESCALATE = r"""
import os, subprocess
print("ids", os.getuid(), os.geteuid(), os.getgid(), os.getegid(), *sorted(os.getgroups()))
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print("caps", status["CapEff"].strip(), status["CapPrm"].strip(), status["CapBnd"].strip(), status["CapAmb"].strip())
print("nnp", status["NoNewPrivs"].strip())
for path in ("/pwned", "/etc/pwned", "/usr/local/bin/pwned", "/etc/passwd"):
    try:
        with open(path, "a") as handle:
            handle.write("root2::0:0::/:/bin/sh\n")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, exc.errno)
for path in ("/tmp/scratch", os.path.expanduser("~/scratch"), "/dlbox/run/scratch"):
    try:
        with open(path, "w") as handle:
            handle.write("ok")
        print("writable", path)
    except OSError as exc:
        print("unwritable", path, exc.errno)
for name, call in (("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)),
                   ("setgroups", lambda: os.setgroups([0])), ("chown", lambda: os.chown("/tmp", 0, 0))):
    try:
        call()
        print("escalated", name)
    except OSError as exc:
        print("denied", name, exc.errno)
# a user namespace would hand out a "root" with capabilities inside it
userns = subprocess.run(["unshare", "--user", "--map-root-user", "id", "-u"], capture_output=True, text=True)
print("unshare", userns.returncode, userns.stdout.strip() or "-")
# a setuid-root program runs without gaining root (no-new-privileges)
su = subprocess.run(["sh", "-c", "ls -l /bin/mount; /bin/mount -t tmpfs none /mnt"], capture_output=True, text=True)
print("mount", su.returncode)
"""

FORK_BOMB = r"""
import os, signal, time
born = 0
try:
    while born < 100000:
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        born += 1
except OSError as exc:
    print("fork refused after", born, "errno", exc.errno, flush=True)
os.killpg(0, signal.SIGKILL)
"""


def run_job(dlbox, *args: str, timeout: str = "300", env: dict | None = None) -> tuple[dict, str]:
    submitted = dlbox.json("run", *args, extra_env=env)
    waited = json.loads(dlbox("wait", submitted["id"], "--json", "--timeout", timeout, check=False,
                              extra_env=env).stdout)
    output = dlbox("logs", submitted["id"], extra_env=env).stdout
    return waited, output


@pytest.fixture(scope="module")
def escalation(dlbox, small_image):
    return run_job(dlbox, "--image", small_image["image"], "--", "python", "-c", ESCALATE)


def lines(output: str, key: str) -> list[list[str]]:
    return [line.split()[1:] for line in output.splitlines() if line.split()[:1] == [key]]


def test_a_job_runs_as_a_non_root_uid_and_gid(escalation):
    waited, output = escalation
    assert waited["state"] == "succeeded", output
    (ids,) = lines(output, "ids")
    assert ids[:4] == ["1000", "1000", "1000", "1000"], output  # gid too: not the root group
    assert "0" not in ids[4:], output  # no supplementary root group either


def test_a_job_holds_no_capabilities_and_cannot_gain_any(escalation):
    _, output = escalation
    (caps,) = lines(output, "caps")
    assert caps == ["0000000000000000"] * 4, output
    assert lines(output, "nnp") == [["1"]]
    assert not lines(output, "escalated"), output
    assert {d[0] for d in lines(output, "denied")} == {"setuid", "setgid", "setgroups", "chown"}
    (userns,) = lines(output, "unshare")
    assert userns[0] != "0", output  # no user namespace with a root of its own
    (mount,) = lines(output, "mount")
    assert mount[0] != "0", output


def test_a_job_cannot_write_the_image(escalation):
    _, output = escalation
    assert not lines(output, "wrote"), output
    refused = {r[0]: r[1] for r in lines(output, "refused")}
    assert set(refused) == {"/pwned", "/etc/pwned", "/usr/local/bin/pwned", "/etc/passwd"}, output
    # EROFS for new files: the root filesystem is read-only, not merely not ours (an existing root file
    # answers EACCES first: the kernel checks its mode before the mount's read-only flag)
    assert refused["/pwned"] == refused["/etc/pwned"] == refused["/usr/local/bin/pwned"] == "30", output
    assert refused["/etc/passwd"] in ("13", "30"), output


def test_a_job_still_writes_its_run_directory_tmp_and_home(escalation):
    _, output = escalation
    assert not lines(output, "unwritable"), output
    assert [w[0] for w in lines(output, "writable")] == ["/tmp/scratch", "/home/dl/scratch", "/dlbox/run/scratch"]


def test_a_fork_bomb_stops_at_the_pids_limit(dlbox, small_image):
    from dlbox.containers import policy as containers

    started = time.monotonic()
    waited, output = run_job(dlbox, "--image", small_image["image"], "--", "python", "-c", FORK_BOMB)
    (refused,) = lines(output, "fork")
    born = int(refused[2])
    assert 16 < born < containers.DEFAULT_PIDS, output  # the container's own limit stopped it
    assert refused[4] == "11", output  # EAGAIN: the pids cgroup, not the host's process table
    assert time.monotonic() - started < 240
    assert waited["state"] in ("failed", "succeeded")  # the bomb's own ending; the host forks on (we ran)


@pytest.fixture(scope="module")
def admin_home(tmp_path_factory, test_env, stop_service):
    """A second dlbox home whose service allows foreign images and has a small default memory limit
    (the same settings an admin gives `dlbox server`), so the default is tested without using 4 GiB."""
    home = tmp_path_factory.mktemp("admin-home")
    env = {"DLBOX_HOME": str(home), "DLBOX_ALLOW_FOREIGN_IMAGES": "1", "DLBOX_DEFAULT_MEMORY": "200m"}
    yield env
    stop_service(home)


def test_past_the_default_memory_limit_a_job_is_oom_killed_inside(dlbox, small_image, admin_home):
    waited, output = run_job(dlbox, "--image", small_image["image"], "--", "python", "-c",
                             "x = bytearray(600 * 1024 * 1024); print('survived')", env=admin_home)
    assert waited["state"] == "oom-killed", (waited, output)
    assert "survived" not in output


@pytest.fixture(scope="module")
def foreign_image(docker_client, small_image, run_id):
    """The small image re-committed as a stranger's: no lock, no dlbox uid, USER root, and none of the
    labels that would let dlbox list it or pick it for the small image's spec. Removed after the
    module: as a child of the small image it would keep that image alive when a test deletes it."""
    api = docker_client.api
    container = api.create_container(small_image["id"], labels={"dlbox.test-run": run_id})
    try:
        image = api.commit(container["Id"], repository=f"t{run_id}-foreign", tag="1", changes=[
            'LABEL dlbox.lock-hash="" dlbox.uid="" dlbox.managed="false" dlbox.name="" dlbox.spec-hash="" '
            f'dlbox.test-run="{run_id}"', "USER root"])
    finally:
        api.remove_container(container["Id"], force=True)
    yield f"t{run_id}-foreign:1"
    api.remove_image(image["Id"], force=True)


def test_a_job_of_an_image_dlbox_did_not_build_is_refused(dlbox, foreign_image):
    refused = dlbox("run", "--image", foreign_image, "--", "id", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"error: --image: {foreign_image} was not built by dlbox"), refused.stderr
    assert "Traceback" not in refused.stderr
    assert not [j for j in dlbox.json("jobs", "--all") if j.get("image") == foreign_image]


def test_an_admin_allowed_foreign_image_still_runs_as_non_root(dlbox, foreign_image, admin_home):
    waited, output = run_job(dlbox, "--image", foreign_image, "--", "sh", "-c", "id -u; id -g", env=admin_home)
    assert waited["state"] == "succeeded", output
    assert output.split()[:2] == ["1000", "1000"]  # the image says root; the container is not


def test_helpers_run_non_root_with_limits(small_image, monkeypatch, run_id):
    """`images verify` and the lock's package listing run a helper container: probe it the same way."""
    from dlbox.containers import policy as containers
    from dlbox.engine import api as engine

    monkeypatch.setenv("DLBOX_LABELS", f"dlbox.test-run={run_id}")

    code, out, err = engine.run_once(small_image["id"], ["-c", "import os; print(os.getuid(), os.getgid());"
                                     "print(open('/proc/self/status').read())"], entrypoint=["python"])
    assert code == 0, err
    first, *rest = out.splitlines()
    assert first == "1000 1000"
    status = dict(line.split(":\t", 1) for line in rest if ":\t" in line)
    assert status["CapEff"].strip() == "0000000000000000" and status["NoNewPrivs"].strip() == "1"
    # and its limits, from the engine: a helper that is only created (read_files) gets the same
    created = engine.client().api.create_container(small_image["id"], labels=engine.labels(),
                                                   host_config=engine.helper_host_config())
    try:
        host = engine.client().api.inspect_container(created["Id"])["HostConfig"]
    finally:
        engine.client().api.remove_container(created["Id"], force=True)
    assert host["Memory"] == containers.HELPER_MEMORY and host["PidsLimit"] == containers.HELPER_PIDS
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"] and host["ReadonlyRootfs"]
