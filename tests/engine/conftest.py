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
    from pathlib import Path

    from dlbox.engine import api as engine

    end_service(Path(test_env["DLBOX_HOME"]))  # the session's dlbox service, started by the CLI

    engine.client.cache_clear()
    engine.remove_labelled(f"dlbox.test-run={run_id}")


def end_service(home) -> None:
    """SIGTERM the dlbox service of this home, if one runs (the CLI starts one in the background)."""
    import os
    import signal
    from pathlib import Path

    pid_file = Path(home) / "service" / "pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture(scope="session")
def stop_service():
    """end_service, for test modules that give the CLI a dlbox home of their own."""
    return end_service


@pytest.fixture(scope="session")
def labelled(run_id) -> dict[str, str]:
    return {"dlbox.managed": "true", "dlbox.test-run": run_id}



@pytest.fixture(scope="session")
def small_image(dlbox, tmp_path_factory, run_id):
    """A small image for jobs: bullseye's Python with six. No test removes or rebuilds it."""
    project = tmp_path_factory.mktemp("jobs-small")
    (project / "dlbox.yaml").write_text(f"name: t{run_id}-jobs\nbase:\n  debian: bullseye\npip:\n  - six==1.16.0\n")
    return dlbox.json("build", cwd=project)


@pytest.fixture(scope="session")
def jupyter_image(dlbox, tmp_path_factory, run_id):
    """The smallest image with both services: bullseye, jupyter_server, openssh-server. Shared: a build costs minutes."""
    project = tmp_path_factory.mktemp("cis")
    (project / "dlbox.yaml").write_text(f"name: t{run_id}-cis\nbase:\n  debian: bullseye\n"
                                        "pip:\n  - jupyter_server==2.14.2\nservices: [jupyter, ssh]\n")
    return dlbox.json("build", cwd=project)


@pytest.hookimpl(tryfirst=True)  # marked before `-m "not engine"` deselects
def pytest_collection_modifyitems(items):
    """Every test here is marked `engine`. Engine tests run after the others, test_images first among
    them: it checks what the session's first build does (bootstrapping the base); test_engine_restart
    last, since it restarts dockerd. The sort is stable."""
    for item in items:
        if item.path.parent.name == "engine":
            item.add_marker(pytest.mark.engine)

    def rank(item) -> int:
        if item.path.parent.name != "engine":
            return 0
        return {"test_images.py": 1, "test_engine_restart.py": 3}.get(item.path.name, 2)

    items.sort(key=rank)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answers(url: str, proc, log, timeout: float, what: str) -> None:
    """Poll `url` until it answers; fail with the end of `log` if `proc` exits or `timeout` passes."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{what} did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def await_http():
    """wait_until_answers, for test modules (conftest is not importable from them)."""
    return wait_until_answers


@pytest.fixture(scope="session")
def start_server():
    """A context manager: `dlbox server` on a free port in `env`'s home, yielding its URL. Its log is
    printed at the end, so a failing test shows it."""
    import contextlib
    import subprocess
    import sys
    from pathlib import Path

    @contextlib.contextmanager
    def start(env: dict, *args: str):
        home = Path(env["DLBOX_HOME"])
        port = free_port()
        log = home / "server.log"
        proc = subprocess.Popen([sys.executable, "-m", "dlbox", "server", "--port", str(port), *args], env=env,
                                stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/api/health", proc, log, 90, "dlbox server")  # 30 s was short at load ~20
        try:
            yield url
        finally:
            print(log.read_text()[-4000:])
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    return start
