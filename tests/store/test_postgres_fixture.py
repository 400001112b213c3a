"""The throwaway PostgreSQL server of conftest.py itself."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import sqlalchemy as sa


def store_conftest(request):
    here = Path(__file__).parent / "conftest.py"
    for plugin in request.config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__) == here:
            return plugin
    raise LookupError(here)


def test_server_is_a_fast_throwaway_on_localhost(postgres_url):
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT current_database()")).scalar_one() == "dlbox"
            assert c.execute(sa.text("SHOW fsync")).scalar_one() == "off"
            assert c.execute(sa.text("SHOW server_encoding")).scalar_one() == "UTF8"
    finally:
        engine.dispose()


def test_missing_postgresql_fails_with_the_way_to_install_it(request, monkeypatch):
    conftest = store_conftest(request)
    monkeypatch.setattr(conftest, "glob", types.SimpleNamespace(glob=lambda pattern: []))
    with pytest.raises(pytest.fail.Exception, match=r"scripts/host-setup.sh packages"):
        conftest._pg_bin()
