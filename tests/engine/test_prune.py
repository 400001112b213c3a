"""`dlbox images prune` on the real engine and service: five images of one test name, each newer than
the last; a stopped workspace uses the oldest, a queued job the second, a model version (a row in the
service's store) the third; the fourth is old and unused, the fifth the newest. --keep 1 removes only
the fourth, unforced, and says why each other one stays. Always with --name: the engine is shared."""

from __future__ import annotations

import time

import pytest


def wait_for(check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None and found is not False:
            return found
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.fixture
def generations(docker_client, small_image, run_id):
    """Five images of name t<run>-prune, a second apart (the engine lists creation times in seconds)."""
    name = f"t{run_id}-prune"
    api = docker_client.api
    made = []
    for n in range(5):
        container = api.create_container(small_image["id"], command=["true"], labels={"dlbox.test-run": run_id})
        try:
            made.append(api.commit(container["Id"], repository=f"dlbox/{name}", tag=f"v{n}",
                                   changes=f'LABEL dlbox.name="{name}" dlbox.test-run="{run_id}"')["Id"])
        finally:
            api.remove_container(container["Id"], force=True)
        time.sleep(1.1)
    yield name, made
    for image_id in made:
        try:
            api.remove_image(image_id, force=True)
        except Exception:  # noqa: BLE001 - the one prune removed is gone already
            pass


def test_prune_keeps_every_image_in_use_and_removes_an_old_unused_one(dlbox, generations, small_image, run_id,
                                                                     test_env, docker_client):
    from dlbox.store.db import Store

    name, made = generations
    workspace = f"t{run_id}-prunews"
    dlbox("up", workspace, "--image", f"dlbox/{name}:v0", "--no-jupyter")
    dlbox("stop", workspace)
    blockers = [dlbox.json("run", "--image", small_image["image"], "--cpus", "1", "--", "sleep", "300")["id"]
                for _ in range(2)]  # the test capacity is two CPUs: the next job waits
    queued = dlbox.json("run", "--image", f"dlbox/{name}:v1", "--cpus", "1", "--", "true")["id"]
    try:
        states = lambda: {j["id"]: j["state"] for j in dlbox.json("jobs", "--all")}  # noqa: E731
        wait_for(lambda: all(states()[b] == "running" for b in blockers))
        assert states()[queued] == "queued"
        store = Store(f"sqlite:///{test_env['DLBOX_HOME']}/dlbox.db")
        store.add_model_version("local", f"prune-{run_id}", files_hash="f" * 64, files_bytes=1, path="model",
                                run_id=queued, image_id=made[2], registered_by="local", registered_at=time.time())

        dry = dlbox.json("images", "prune", "--keep", "1", "--name", name, "--dry-run")
        assert [r["id"] for r in dry["remove"]] == [made[3]] and dry["remove"][0]["removed"] is False
        docker_client.images.get(made[3])  # a dry run removes nothing
        reasons = {k["id"]: k["reasons"] for k in dry["kept"]}
        assert set(reasons) == {made[0], made[1], made[2], made[4]}
        assert reasons[made[4]][0] == f"one of the newest 1 of {name}"
        assert f"workspace {workspace} (exited) uses it" in reasons[made[0]]
        assert f"job {queued} is queued" in reasons[made[1]]
        assert f"model local/prune-{run_id}:1 was trained in it" in reasons[made[2]]

        text = dlbox("images", "prune", "--keep", "1", "--name", name).stdout
        assert f"removed dlbox/{name}:v3" in text and "1 removed, 4 kept" in text
        left = {i.id for i in docker_client.images.list(filters={"label": f"dlbox.name={name}"})}
        assert left == {made[0], made[1], made[2], made[4]}
        again = dlbox.json("images", "prune", "--keep", "1", "--name", name)
        assert again["remove"] == [] and again["failed"] == 0
    finally:
        for job_id in [*blockers, queued]:
            dlbox("cancel", job_id, check=False)
        dlbox("rm", workspace, "--purge-data", check=False)
