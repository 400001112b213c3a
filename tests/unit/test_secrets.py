"""Secrets at rest: token lifetimes, what the store keeps of a finished job, and who can read the files.

The file tests read as a real unprivileged host user (nobody, through setpriv), so they need root.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from dlbox import config
from dlbox.server import accounts
from dlbox.errors import DlboxError
from dlbox.jobs.state import JobState
from dlbox.store.db import Job, Store, User

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root (setpriv)")


def as_nobody(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *command], capture_output=True, text=True, timeout=30)


# --- a token cannot make one that outlives it ----------------------------------------------------


def test_a_token_cannot_make_one_that_outlives_it(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    accounts.add_user(store, "alice")
    now = time.time()
    limit = now + 10 * 86400  # the calling token expires in 10 days
    for asked in ("11d", "never", "3650d", "241h"):
        with pytest.raises(accounts.Forbidden) as refused:
            accounts.create_token(store, "alice", expires=asked, limit=limit)
        message = refused.value.message
        assert message.startswith(f"--expires: {asked} would outlive the token you are using")
        assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(limit)) in message and "9d or less" in message
    assert store.tokens(user="alice") == []  # nothing half-made
    row, _ = accounts.create_token(store, "alice", expires="9d", limit=limit)
    assert row.expires_at <= limit
    inherited, _ = accounts.create_token(store, "alice", limit=limit)  # nothing asked: the creator's expiry
    assert inherited.expires_at == limit


def test_without_a_token_or_with_one_that_never_expires_there_is_no_limit(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    accounts.add_user(store, "alice")
    assert accounts.create_token(store, "alice", expires="never", limit=None)[0].expires_at is None
    assert accounts.create_token(store, "alice", expires="3650d", limit=None)[0].expires_at > time.time() + 3000 * 86400
    with pytest.raises(accounts.Forbidden, match="ask for 4m or less"):
        accounts.token_expiry("1h", limit=time.time() + 300)


# --- what the store keeps ------------------------------------------------------------------------


def test_a_finished_job_keeps_no_secret_params(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    params = {"DB_PASSWORD": "pw-marker-1", "DATABASE_URL": "postgresql://u:pw-marker-2@h/db", "epochs": "3"}
    store.add_job(Job(id="abcdef123456", user="alice", state="queued", command=["x", "s3://k:pw-marker-3@b"],
                      params=params, env={}, image_ref="i", image_id="sha256:x", git_dirty=False, mounts=[],
                      volumes={}, cpus=1.0, cancel_requested=False, submitted_at=time.time()))
    queued = store.get_job("abcdef123456")
    assert queued.params == params  # a queued job needs them to start
    store.transition("abcdef123456", JobState.STARTING)
    store.transition("abcdef123456", JobState.RUNNING, container_id="c")
    assert store.get_job("abcdef123456").params == params
    done = store.transition("abcdef123456", JobState.SUCCEEDED, exit_code=0)
    assert done.params == {"DB_PASSWORD": "***", "DATABASE_URL": "postgresql://u:***@h/db", "epochs": "3"}
    assert done.command == ["x", "s3://k:***@b"]
    store.engine.dispose()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        dump = "\n".join(db.iterdump())
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite*"))
    for marker in ("pw-marker-1", "pw-marker-2", "pw-marker-3"):
        assert marker not in dump
        assert marker.encode() not in raw  # nor an old copy in the files, once checkpointed


# --- who can read the files ------------------------------------------------------------------------


@pytest.fixture
def open_parent():
    """A directory every local user may enter (pytest's own tmp dirs are 0700, which would make the
    checks below pass for the wrong reason)."""
    import shutil
    import tempfile

    parent = Path(tempfile.mkdtemp(prefix="dlbox-modes-", dir="/tmp"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent)


@needs_root
def test_home_and_database_are_not_readable_by_another_local_user(open_parent, monkeypatch):
    home = open_parent / "home"
    home.mkdir(mode=0o755)
    (home / "runs" / "abc").mkdir(parents=True)
    (home / "runs" / "abc" / "params.json").write_text('{"DB_PASSWORD": "x"}')
    (home / "runs" / "abc" / "params.json").chmod(0o644)
    assert as_nobody("cat", str(home / "runs" / "abc" / "params.json")).returncode == 0  # the hole, before
    monkeypatch.setenv("DLBOX_HOME", str(home))
    monkeypatch.delenv("DLBOX_DATABASE_URL", raising=False)
    config._PRIVATE.discard(str(home))
    store = Store()  # an existing home, too loose: tightened
    store.add_user(User(name="alice", role="user", quota={}, created_at=time.time()))
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    files = [home / "dlbox.db", home / "dlbox.db-wal", home / "dlbox.db-shm"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert as_nobody("ls", str(open_parent)).returncode == 0  # nobody gets this far...
    for command in (["ls", str(home)], ["cat", str(files[0])], ["cat", str(files[1])],
                    ["ls", str(home / "runs" / "abc")], ["cat", str(home / "runs" / "abc" / "params.json")]):
        refused = as_nobody(*command)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, command  # ...and no further


@needs_root
def test_a_new_home_is_made_0700_and_a_loose_database_is_tightened(open_parent, monkeypatch):
    home = open_parent / "fresh" / "dlbox"
    monkeypatch.setenv("DLBOX_HOME", str(home))
    assert config.home() == home and stat.S_IMODE(home.stat().st_mode) == 0o700
    elsewhere = open_parent / "db"
    elsewhere.mkdir()
    (elsewhere / "x.db").write_bytes(b"")
    (elsewhere / "x.db").chmod(0o644)
    Store(f"sqlite:///{elsewhere / 'x.db'}").users()
    assert stat.S_IMODE((elsewhere / "x.db").stat().st_mode) == 0o600
    assert as_nobody("cat", str(elsewhere / "x.db")).returncode != 0


def test_a_shared_directory_is_never_taken_as_a_home(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("DLBOX_HOME", str(shared))
    with pytest.raises(DlboxError, match="DLBOX_HOME: .* is a shared directory"):
        config.home()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # left as it was
