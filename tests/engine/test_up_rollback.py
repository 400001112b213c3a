"""`apply` makes a workspace's volume and container, and on a failure after either takes back
exactly what it made: no container or volume of the workspace's name stays, a kept volume does."""

from __future__ import annotations

import dataclasses

import pytest

from dlbox.build import images
from dlbox.containers import workspace_files as services
from dlbox.engine import api as engine
from dlbox.errors import DlboxError
from dlbox.progress import Progress
from dlbox.workspaces import manage, vault
from dlbox.workspaces.manage import UpFacts, UpRequest


@pytest.fixture
def in_session_home(test_env, monkeypatch):
    """This process acts in the session's home, its containers labelled for the session's cleanup."""
    for key in ("DLBOX_HOME", "DLBOX_LABELS"):
        monkeypatch.setenv(key, test_env[key])


@pytest.fixture
def image(small_image, in_session_home) -> dict:
    attrs = engine.image_attrs(small_image["id"])
    return images.summary(attrs) | {"ref": small_image["image"], "env": attrs["Config"].get("Env") or []}


def left_behind(name: str) -> list[str]:
    found = []
    if engine.container_attrs(manage.container_name(name)) is not None:
        found.append("container")
    if engine.volume_exists(manage.volume_name(name)):
        found.append("volume")
    if engine.volume_exists(manage.home_volume_name(name)):
        found.append("home")
    if vault.directory(name).exists():
        found.append("vault")
    return found


def test_a_failure_after_the_container_is_made_takes_it_and_the_volume_back(image, run_id, monkeypatch):
    name = f"t{run_id}-rb-files"
    plan = manage.plan(UpRequest(name=name, jupyter=False), UpFacts(image=image))
    made = []

    def failing_put(container_id, files, **_):
        made.append(engine.container_attrs(container_id) is not None)
        raise DlboxError("forced: putting the files failed")

    monkeypatch.setattr(engine, "put_files", failing_put)
    with pytest.raises(DlboxError, match="forced: putting the files failed"):
        manage.apply(plan, Progress(quiet=True))
    assert made == [True]  # the failure came after the container and the volume were there
    assert left_behind(name) == []


def test_a_kept_volume_stays_when_up_fails(image, run_id, monkeypatch):
    name = f"t{run_id}-rb-kept"
    plan = manage.plan(UpRequest(name=name, jupyter=False), UpFacts(image=image))
    assert engine.ensure_volume(plan.volume, plan.volume_labels)  # volumes kept from an earlier workspace
    assert engine.ensure_volume(plan.home_volume, plan.volume_labels)
    try:
        monkeypatch.setattr(engine, "put_files", lambda *_, **__: (_ for _ in ()).throw(DlboxError("forced")))
        with pytest.raises(DlboxError, match="forced"):
            manage.apply(plan, Progress(quiet=True))
        assert left_behind(name) == ["volume", "home"]  # not this call's to remove: they hold someone's data
    finally:
        engine.remove_volume(plan.volume)
        engine.remove_volume(plan.home_volume)


def test_a_container_that_dies_while_starting_is_taken_back(image, run_id, free_port_for_test):
    name = f"t{run_id}-rb-dies"
    plan = manage.plan(UpRequest(name=name, jupyter=True),
                       UpFacts(image=image | {"services": ["jupyter"]}, token="t" * 32,
                               free_ports={services.JUPYTER_PORT: free_port_for_test}))
    plan = dataclasses.replace(plan, entrypoint=("/bin/sh", "-c", "echo broken on purpose; exit 3"),
                               spec=dataclasses.replace(plan.spec, restart=None))
    with pytest.raises(DlboxError, match="stopped while starting: broken on purpose"):
        manage.apply(plan, Progress(quiet=True))
    assert left_behind(name) == []


@pytest.fixture
def free_port_for_test() -> int:
    return manage._free_port("127.0.0.1")
