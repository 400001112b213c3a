from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as exc:  # the suite needs the real engine; say so instead of skipping
        pytest.fail(f"engine tests need a Docker Engine (run `make engine`): {exc}", pytrace=False)
    return client


@pytest.fixture(scope="session", autouse=True)
def cleanup(docker_client, run_id, test_env):
    """Remove everything this session created, found by its label, even when tests fail."""
    yield
    import os
    import signal
    from pathlib import Path

    from dlbox import engine

    pid_file = Path(test_env["DLBOX_HOME"]) / "service" / "pid"
    if pid_file.exists():  # the session's dlbox service, started by the CLI
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass

    engine.client.cache_clear()
    engine.remove_labelled(f"dlbox.test-run={run_id}")


@pytest.fixture(scope="session")
def labelled(run_id) -> dict[str, str]:
    return {"dlbox.managed": "true", "dlbox.test-run": run_id}



@pytest.fixture(scope="session")
def small_image(dlbox, tmp_path_factory, run_id):
    """A small image for jobs: bullseye's Python with six. Use its tag: a test rebuilds it."""
    project = tmp_path_factory.mktemp("jobs-small")
    (project / "dlbox.yaml").write_text(f"name: t{run_id}-jobs\nbase:\n  debian: bullseye\npip:\n  - six==1.16.0\n")
    return dlbox.json("build", cwd=project)


def pytest_collection_modifyitems(items):
    """Engine tests after the others, test_images first among them: it checks what the session's first
    build does (bootstrapping the base). The sort is stable: the rest keep their order."""
    def rank(item) -> int:
        if item.path.parent.name != "engine":
            return 0
        return 1 if item.path.name == "test_images.py" else 2

    items.sort(key=rank)
