"""Unit tests never depend on the caller's dlbox home.

Each test gets a DLBOX_HOME of its own, outside /tmp: the home is a forbidden mount source (and so
is any folder holding it), and the tests mount folders below pytest's tmp_path in /tmp. A test that
wants another home sets it with monkeypatch, which wins over this one.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def _unit_homes():
    parent = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path.home()
    root = Path(tempfile.mkdtemp(prefix="dlbox-unit-homes-", dir=parent))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_home(_unit_homes, monkeypatch):
    home = _unit_homes / uuid.uuid4().hex[:8]
    monkeypatch.setenv("DLBOX_HOME", str(home))
    monkeypatch.delenv("DLBOX_URL", raising=False)
    monkeypatch.delenv("DLBOX_TOKEN", raising=False)
    monkeypatch.delenv("DLBOX_DATABASE_URL", raising=False)
    return home


@pytest.fixture
def app_of():
    """service.create_app over `store` with a fixed 2-CPU capacity (no engine asked): app_of(store, **kwargs)."""
    from dlbox.jobs import runner as jobs
    from dlbox.server import app as service

    def make(store, **kwargs):
        return service.create_app(store, service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None, gpus=[])),
                                  **kwargs)

    return make


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    """DOCKER_HOST at a socket nobody listens on, the engine client made anew before and after: the
    real Docker SDK with no engine to answer. Gives the DOCKER_HOST it set."""
    from dlbox.engine import api as engine

    host = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    engine.client.cache_clear()
    yield host
    engine.client.cache_clear()  # before monkeypatch restores DOCKER_HOST: the next test asks the real one
