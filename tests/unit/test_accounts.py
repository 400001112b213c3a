"""Tokens, quotas and the mount policy: the pure parts of the team server's security."""

from __future__ import annotations

import os

import pytest

from dlbox.containers import mount_policy
from dlbox.server import accounts
from dlbox.errors import DlboxError, UsageError
from dlbox.store.db import Store


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_a_token_is_shown_once_and_only_its_hash_is_kept(store):
    accounts.add_user(store, "alice")
    row, token = accounts.create_token(store, "alice")
    assert token.startswith("dlb_") and len(token) > 50
    secret = token[len("dlb_") + 13:]  # the secret itself may hold "_"
    stored = store.get_token(row.id)
    assert secret not in stored.digest and stored.digest == accounts.digest(secret)
    assert accounts.authenticate(store, token) == accounts.Caller("alice", "user")


@pytest.mark.parametrize("bad", [None, "", "dlb_", "Bearer x", "dlb_000000000000_" + "a" * 43])
def test_malformed_or_unknown_tokens_are_refused(store, bad):
    with pytest.raises(accounts.Unauthorized):
        accounts.authenticate(store, bad)


def test_a_token_with_one_character_changed_is_refused(store):
    accounts.add_user(store, "alice")
    _, token = accounts.create_token(store, "alice")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(accounts.Unauthorized):
        accounts.authenticate(store, flipped)


def test_revoked_and_expired_tokens_stop_working(store):
    accounts.add_user(store, "alice")
    revoked, token = accounts.create_token(store, "alice")
    store.revoke_token(revoked.id)
    with pytest.raises(accounts.Unauthorized):
        accounts.authenticate(store, token)
    expired, token2 = accounts.create_token(store, "alice", expires="1m")
    row = store.get_token(expired.id)
    row.expires_at = 1.0  # long past
    with store.session() as s:
        s.merge(row)
    with pytest.raises(accounts.Unauthorized):
        accounts.authenticate(store, token2)
    assert accounts.token_json(store.get_token(expired.id))["state"] == "expired"


def test_removing_a_user_ends_their_tokens(store):
    accounts.add_user(store, "bob")
    _, token = accounts.create_token(store, "bob")
    store.remove_user("bob")
    with pytest.raises(accounts.Unauthorized):
        accounts.authenticate(store, token)


def test_user_names_and_durations_are_checked():
    for bad in ("Alice", "1x", "a b", "x" * 40, ""):
        with pytest.raises(UsageError):
            accounts.check_user_name(bad)
    assert accounts.parse_expiry("never") is None
    assert accounts.parse_expiry("2h", now=100.0) == 100.0 + 7200
    for bad in ("0d", "5y", "-1d", "soon"):
        with pytest.raises(UsageError, match="--expires"):
            accounts.parse_expiry(bad)


def test_quota_names_the_limit_it_would_pass():
    quota = accounts.parse_quota({"workspaces": "2", "cpus": "4", "memory": "8g", "gpus": None})
    assert quota == {"workspaces": 2, "cpus": 4.0, "memory": 8 * 1024**3}
    accounts.check_quota("al", quota, {"workspaces": 1, "cpus": 2}, {"workspaces": 1, "cpus": 2})
    with pytest.raises(accounts.Forbidden, match="quota workspaces: al may hold 2, holds 2"):
        accounts.check_quota("al", quota, {"workspaces": 2}, {"workspaces": 1})
    with pytest.raises(accounts.Forbidden, match="quota memory") as caught:
        accounts.check_quota("al", quota, {"memory": 6 * 1024**3}, {"memory": 4 * 1024**3})
    assert caught.value.code == "quota_exceeded"
    accounts.check_quota("al", quota, {"gpus": 8}, {"gpus": 8})  # no GPU quota: no limit
    with pytest.raises(UsageError, match="quota: 'disk'"):
        accounts.parse_quota({"disk": "1"})


ADMIN, ALICE, BOB = accounts.Caller("admin", "admin"), accounts.Caller("alice", "user"), accounts.Caller("bob", "user")


def test_mounts_must_stay_below_an_allowed_root(tmp_path):
    root = tmp_path / "data"
    (root / "alice" / "project").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    os.symlink(outside, root / "alice" / "link-out")
    os.symlink(root / "alice" / "project", root / "alice" / "link-in")
    roots = mount_policy.mount_roots([str(root)])
    mount_policy.check_mount_roots(f"{root}/alice/project:/data:ro", roots, who=ALICE)
    mount_policy.check_mount_roots(f"{root}/alice/link-in:/data", roots, who=ALICE)  # a symlink that stays inside is fine
    for trick in (f"{root}/alice/link-out:/x", f"{root}/../secret:/x", f"{root}/alice/project/../../secret:/x",
                  "/etc:/x", "/var/run/docker.sock:/x", "relative/path:/x", f"{tmp_path}/data-evil:/x"):
        with pytest.raises(accounts.Forbidden) as caught:
            mount_policy.check_mount_roots(trick, roots, who=ALICE)
        assert caught.value.code == "mount_refused"
    with pytest.raises(accounts.Forbidden, match="allows no mounts"):
        mount_policy.check_mount_roots(f"{root}/alice/project:/x", [], who=ALICE)
    for bad_root in ("/", "/etc", "relative"):
        with pytest.raises(UsageError, match="--mount-root"):
            mount_policy.mount_roots([bad_root])


def test_mount_roots_are_per_user_and_admins_see_all(tmp_path):
    root = tmp_path / "data"
    for user in ("alice", "bob"):
        (root / user / "project").mkdir(parents=True)
    roots = mount_policy.mount_roots([str(root)])
    with pytest.raises(accounts.Forbidden, match=f"outside your mount roots: {root}/bob$") as caught:
        mount_policy.check_mount_roots(f"{root}/alice/project:/x", roots, who=BOB)
    assert caught.value.code == "mount_refused"
    with pytest.raises(accounts.Forbidden, match="outside your mount roots"):
        mount_policy.check_mount_roots(f"{root}:/x", roots, who=BOB)  # the shared root itself is no one user's
    mount_policy.check_mount_roots(f"{root}/bob/project:/x", roots, who=BOB)
    for source in (root, root / "alice" / "project", root / "bob"):
        mount_policy.check_mount_roots(f"{source}:/x", roots, who=ADMIN)
    assert mount_policy.user_mount_roots(roots, BOB) == [root / "bob"]


def test_a_source_below_a_user_writable_folder_is_refused(tmp_path):
    """Whoever can write in a parent can swap the source for a symlink between the check and the mount."""
    root = tmp_path / "data"
    shared = root / "alice" / "shared"
    (shared / "sub").mkdir(parents=True)
    os.chown(shared, 1000, 1000)  # what a workspace (uid 1000) with the folder mounted rw could make
    roots = mount_policy.mount_roots([str(root)])
    mount_policy.check_mount_roots(f"{shared}:/x", roots, who=ALICE)  # its parent is root's alone: fine
    with pytest.raises(DlboxError, match=r"could be swapped .*shared can be written by its owner \(uid 1000\)") \
            as caught:
        mount_policy.check_mount_roots(f"{shared}/sub:/x", roots, who=ALICE)
    assert caught.value.code == "mount_refused"
    mount_policy.check_mount_roots(f"{shared}/sub:/x", roots, who=ADMIN)  # admins are trusted with their own folders
    os.chown(shared, 0, 0)
    os.chmod(shared, 0o777)
    with pytest.raises(DlboxError, match="can be written by everyone"):
        mount_policy.check_mount_roots(f"{shared}/sub:/x", roots, who=ALICE)
    os.chown(shared, 0, 1000)
    os.chmod(shared, 0o775)
    with pytest.raises(DlboxError, match=r"can be written by its group \(gid 1000\)"):
        mount_policy.check_mount_roots(f"{shared}/sub:/x", roots, who=ALICE)
    os.chown(shared, 0, 0)  # group-writable, but the group is root's
    mount_policy.check_mount_roots(f"{shared}/sub:/x", roots, who=ALICE)
    os.chmod(shared, 0o1777)
    os.chown(shared / "sub", 1000, 1000)  # sticky, but the entry is not root's: its owner may rename it
    with pytest.raises(DlboxError, match="everyone"):
        mount_policy.check_mount_roots(f"{shared}/sub:/x", roots, who=ALICE)
    os.chown(shared / "sub", 0, 0)  # sticky and root's entry (like /tmp/pytest-of-root): only root may move it
    mount_policy.check_mount_roots(f"{shared}/sub:/x", roots, who=ALICE)


@pytest.mark.parametrize("name", ["local", "root"])
def test_reserved_names_are_refused(store, name):
    with pytest.raises(UsageError, match=f"NAME: '{name}' is reserved"):
        accounts.add_user(store, name)
    assert store.get_user(name) is None


@pytest.mark.parametrize("name", ["alice\n", "alice\nbob", "Alice", "a" * 33, "-a", "a b"])
def test_malformed_names_are_refused(store, name):
    with pytest.raises(UsageError, match="NAME: .* must start with a lowercase letter"):
        accounts.add_user(store, name)


def test_users_add_refuses_reserved_and_retired_names_over_the_api(store):
    """The route `dlbox users add` calls: one clear line, nothing made."""
    from fastapi.testclient import TestClient

    from dlbox.jobs import runner as jobs
    from dlbox.server import app as service

    client = TestClient(service.create_app(store, service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None,
                                                                                             gpus=[]))))
    assert client.post("/api/users", json={"name": "dave"}).status_code == 201
    assert client.delete("/api/users/dave").status_code == 200
    again = client.post("/api/users", json={"name": "dave"})
    assert again.status_code == 409 and "retired" in again.json()["error"]["message"]
    reserved = client.post("/api/users", json={"name": "local"})
    assert reserved.status_code == 400 and reserved.json()["error"]["message"].startswith("NAME: 'local' is reserved")
    assert [u.name for u in store.users()] == [] and store.tokens(user="dave") == []


def test_every_state_of_a_flipped_source_is_refused_and_the_checked_path_is_what_is_kept(tmp_path):
    """The race a workspace can run on a folder it owns: x is a folder, then gone, then a symlink out.
    Each state on its own must be refused; the missing one was once let through to a second resolve."""
    root = tmp_path / "data"
    race = root / "alice" / "race"
    (race / "x").mkdir(parents=True)
    outside = tmp_path / "host-side"
    outside.mkdir()
    os.chown(race, 1000, 1000)
    roots = mount_policy.mount_roots([str(root)])
    with pytest.raises(DlboxError, match="could be swapped"):
        mount_policy.check_mount_roots(f"{race}/x:/data:ro", roots, who=ALICE)  # a real folder
    os.rename(race / "x", race / "x.real")
    with pytest.raises(accounts.Forbidden, match="does not exist on the server"):
        mount_policy.check_mount_roots(f"{race}/x:/data:ro", roots, who=ALICE)  # gone for a moment
    os.symlink(outside, race / "x")
    with pytest.raises(accounts.Forbidden, match="outside your mount roots"):
        mount_policy.check_mount_roots(f"{race}/x:/data:ro", roots, who=ALICE)  # a symlink to the host side
    (root / "alice" / "real").mkdir()
    os.symlink(root / "alice" / "real", root / "alice" / "inside")
    kept = mount_policy.check_mount_roots(f"{root}/alice/inside:/data:ro", roots, who=ALICE)
    assert kept == f"{root}/alice/real:/data:ro"  # later steps use the resolved path, never the text again
