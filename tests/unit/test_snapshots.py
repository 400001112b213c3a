"""Code snapshots: which files, their hash, the limits, and storing uploads without trusting them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import stat
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlbox import snapshots
from dlbox.errors import NotFound, UsageError
from dlbox.runs import diff as rundiff


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.email=t@e", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


def paths(snap) -> list[str]:
    return sorted(e.path for e in snap.entries)


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def member(name: str, data: bytes = b"x", *, kind=tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info, data


# --- which files -------------------------------------------------------------------------------------


def test_git_tracked_and_untracked_not_ignored(tmp_path):
    write(tmp_path, {"train.py": "1", ".gitignore": "data/\n*.log\n", "data/big.bin": "x", "run.log": "x",
                     "lib/util.py": "2"})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "train.py", ".gitignore")
    git(tmp_path, "commit", "-qm", "i")
    git(tmp_path, "config", "status.showUntrackedFiles", "no")  # the user's setting changes nothing
    write(tmp_path, {"new.py": "3"})
    assert paths(snapshots.take(tmp_path)) == [".gitignore", "lib/util.py", "new.py", "train.py"]


def test_a_deleted_tracked_file_is_not_in_the_snapshot(tmp_path):
    write(tmp_path, {"a.py": "1", "b.py": "2"})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "i")
    (tmp_path / "b.py").unlink()
    assert paths(snapshots.take(tmp_path)) == ["a.py"]


def test_outside_git_dlboxignore_applies(tmp_path):
    write(tmp_path, {"train.py": "1", ".dlboxignore": "# data\ndata/\n*.ckpt\n!keep.ckpt\n/top.txt\n",
                     "data/x": "x", "sub/data/y": "y", "m.ckpt": "x", "keep.ckpt": "k", "top.txt": "t",
                     "sub/top.txt": "t", ".git/config": "not a repository, but never code"})
    assert paths(snapshots.take(tmp_path)) == [".dlboxignore", "keep.ckpt", "sub/top.txt", "train.py"]


@pytest.mark.parametrize(("pattern", "path", "is_dir", "ignored"), [
    ("*.pyc", "a/b/c.pyc", False, True),
    ("/build", "build", True, True),
    ("/build", "src/build", True, False),
    ("logs/", "logs", False, False),          # folders only
    ("docs/**/*.md", "docs/a/b/c.md", False, True),
    ("docs/**/*.md", "docs/c.md", False, True),
    ("**/cache", "x/y/cache", True, True),
    ("[ab].txt", "a.txt", False, True),
    ("[!ab].txt", "a.txt", False, False),
    ("a?c", "abc", False, True),
    ("a?c", "a/c", False, False),
])
def test_ignore_patterns(pattern, path, is_dir, ignored):
    assert snapshots.Ignore(pattern).ignored(path, is_dir) is ignored


def test_links_inside_are_kept_and_links_outside_refused_by_name(tmp_path):
    write(tmp_path, {"a.py": "1"})
    (tmp_path / "inside").symlink_to("a.py")
    snap = snapshots.take(tmp_path)
    assert {e.path: e.mode for e in snap.entries} == {"a.py": "644", "inside": "link"}
    (tmp_path / "etc").symlink_to("/etc")
    with pytest.raises(UsageError, match=r"outside the project.*etc -> /etc"):
        snapshots.take(tmp_path)


def test_special_files_are_skipped_and_listed(tmp_path):
    write(tmp_path, {"a.py": "1"})
    os.mkfifo(tmp_path / "pipe")
    snap = snapshots.take(tmp_path)
    assert paths(snap) == ["a.py"] and snap.skipped == ["pipe"]


def test_over_the_size_limit_names_the_largest_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOX_CODE_LIMIT", "1m")
    write(tmp_path, {"train.py": "1", "small/x": "x"})
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "big.bin", "wb") as f:  # sparse: costs nothing, counts its size
        f.truncate(3 * 1024**2)
    with pytest.raises(UsageError) as refused:
        snapshots.take(tmp_path)
    assert "3.0 MB is over the limit of 1.0 MB" in refused.value.message
    assert "largest folders: data/ (3.0 MB, 1 files)" in refused.value.message


def test_over_the_file_count_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOX_CODE_FILES", "2")
    write(tmp_path, {"a": "1", "b": "2", "c/d": "3"})
    with pytest.raises(UsageError, match="3 files are over the limit of 2"):
        snapshots.take(tmp_path)


# --- the hash ------------------------------------------------------------------------------------------


def test_hash_covers_paths_modes_and_contents(tmp_path):
    write(tmp_path, {"a.py": "1"})
    first = snapshots.take(tmp_path).hash
    (tmp_path / "a.py").chmod(0o755)
    moded = snapshots.take(tmp_path).hash
    (tmp_path / "a.py").write_text("2")
    changed = snapshots.take(tmp_path).hash
    (tmp_path / "a.py").rename(tmp_path / "b.py")
    moved = snapshots.take(tmp_path).hash
    assert len({first, moded, changed, moved}) == 4


def test_the_content_cache_notices_a_change_of_the_same_size(tmp_path):
    write(tmp_path, {"a.py": "1"})
    first = snapshots.take(tmp_path).hash
    assert snapshots.take(tmp_path).hash == first  # from the cache
    (tmp_path / "a.py").write_text("2")
    os.utime(tmp_path / "a.py", ns=(1, 1))
    assert snapshots.take(tmp_path).hash != first


def cache_of(root: Path) -> dict:
    return json.loads(snapshots._cache_file(root.resolve()).read_text())


def forge_cache(root: Path, name: str, digest: str, at: int) -> None:
    """A cache entry for `name` matching its current stat exactly, with the content hash `digest`."""
    key = snapshots._stat_key(os.lstat(root / name))
    snapshots._cache_file(root.resolve()).write_text(json.dumps({"at": at, "files": {name: key + [digest]}}))


def test_a_racily_new_file_is_never_cached_nor_trusted(tmp_path):
    write(tmp_path, {"a.py": "1"})
    first = snapshots.take(tmp_path).hash
    assert cache_of(tmp_path)["files"] == {}  # changed within the last 2 s: not cached
    before = os.lstat(tmp_path / "a.py")
    (tmp_path / "a.py").write_text("2")  # the same size, and the same mtime as before
    os.utime(tmp_path / "a.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert snapshots.take(tmp_path).hash != first
    # a rewrite within the file system's clock tick keeps even the ctime: an entry written then,
    # matching the stat in every field, is still not trusted, and the file is read again
    forge_cache(tmp_path, "a.py", "0" * 64, at=time.time_ns())
    snap = snapshots.take(tmp_path)
    assert snap.entries[0].sha256 == hashlib.sha256(b"2").hexdigest()


def test_an_old_unchanged_file_comes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshots, "RACY_NS", 50_000_000)
    write(tmp_path, {"a.py": "1"})
    time.sleep(0.1)
    snapshots.take(tmp_path)
    assert list(cache_of(tmp_path)["files"]) == ["a.py"]
    forge_cache(tmp_path, "a.py", "f" * 64, at=time.time_ns())
    assert snapshots.take(tmp_path).entries[0].sha256 == "f" * 64  # not read: the cache's word
    os.chmod(tmp_path / "a.py", 0o600)  # same content, size and mtime; the mode and ctime moved
    assert snapshots.take(tmp_path).entries[0].sha256 == hashlib.sha256(b"1").hexdigest()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"at": "x", "files": {}}', '{"at": 1, "files": []}',
                                  '{"at": 1, "files": {"a.py": 7}}', '{"at": 1, "files": {"a.py": [1, 2]}}',
                                  '{"at": 1, "files": {"a.py": [1, 1, 1, 1, 1, "../../x"]}}'])
def test_a_corrupt_cache_is_ignored_and_replaced(tmp_path, monkeypatch, text):
    monkeypatch.setattr(snapshots, "RACY_NS", 0)
    write(tmp_path, {"a.py": "1"})
    cache = snapshots._cache_file(tmp_path.resolve())
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(text)
    assert snapshots.take(tmp_path).entries[0].sha256 == hashlib.sha256(b"1").hexdigest()
    assert cache_of(tmp_path)["files"]["a.py"][5] == hashlib.sha256(b"1").hexdigest()
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # written by a rename: no leftovers


def test_the_cache_keeps_a_bounded_number_of_projects(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshots, "CACHE_PROJECTS", 2)
    for i in range(4):
        snapshots.take(write(tmp_path / f"p{i}", {"a.py": str(i)}))
        time.sleep(0.01)
    kept = sorted(p.name for p in snapshots._cache_file(tmp_path).parent.iterdir())
    assert kept == sorted(snapshots._cache_file((tmp_path / f"p{i}").resolve()).name for i in (2, 3))


ENTRY = st.builds(snapshots.Entry, path=st.text("ab/.c", min_size=1, max_size=6),
                  mode=st.sampled_from(["644", "755"]), size=st.integers(0, 9),
                  sha256=st.text("0123456789abcdef", min_size=64, max_size=64))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ENTRY, unique_by=lambda e: e.path, max_size=12), st.randoms())
def test_the_hash_does_not_depend_on_walk_order(entries, rng):
    shuffled = list(entries)
    rng.shuffle(shuffled)
    assert snapshots.tree_hash(shuffled) == snapshots.tree_hash(entries)


# --- the store -------------------------------------------------------------------------------------------


def test_stored_once_read_only(tmp_path):
    write(tmp_path, {"a.py": "1", "bin/run": "#!/bin/sh\n"})
    (tmp_path / "bin" / "run").chmod(0o755)
    snap = snapshots.take(tmp_path)
    assert snapshots.store(snap) is True
    assert snapshots.store(snapshots.take(tmp_path)) is False  # the same tree again: nothing new
    tree = snapshots.tree(snap.hash)
    assert oct((tree / "a.py").stat().st_mode & 0o777) == "0o444"
    assert oct((tree / "bin" / "run").stat().st_mode & 0o777) == "0o555"
    assert oct((tree / "bin").stat().st_mode & 0o777) == "0o555"
    assert snapshots.manifest(snap.hash)["files"] == 2
    assert [h for h, _, _ in snapshots.stored()] == [snap.hash]


def test_an_upload_round_trips_and_must_hash_to_its_name(tmp_path):
    write(tmp_path / "p", {"a.py": "1", "d/b.txt": "2"})
    (tmp_path / "p" / "l").symlink_to("d/b.txt")
    snap = snapshots.take(tmp_path / "p")
    data = snapshots.to_tar(snap=snap)
    with pytest.raises(UsageError, match="hashes to"):
        snapshots.unpack(data, "0" * 64)
    assert list(snapshots.store_root().iterdir()) == []  # what was written while reading is gone
    stored, new = snapshots.unpack(data, snap.hash)
    assert sorted(p.name for p in snapshots.store_root().iterdir()) == [snap.hash]
    assert stat.S_IMODE((snapshots.tree(snap.hash) / "d" / "b.txt").stat().st_mode) == 0o444
    assert new and stored.hash == snap.hash
    assert snapshots.unpack(data, snap.hash)[1] is False
    assert snapshots.export(snap.hash, None, tmp_path / "out") == 3
    assert (tmp_path / "out" / "d" / "b.txt").read_text() == "2" and os.readlink(tmp_path / "out" / "l") == "d/b.txt"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "a//b", "./", "a/./b", "a\nb"])
def test_paths_that_leave_the_tree_are_refused(bad):
    with pytest.raises(UsageError):
        snapshots.check_path(bad)


@pytest.mark.parametrize("members", [
    [member("../escape")],
    [member("/abs")],
    [member("a/../../escape")],
    [member("link", kind=tarfile.SYMTYPE, link="/etc")],
    [member("link", kind=tarfile.SYMTYPE, link="../../etc")],
    [member("d/link", kind=tarfile.SYMTYPE, link="../../x")],
    [member("link", kind=tarfile.SYMTYPE, link="sub"), member("link/passwd")],  # a file through a link
    [member("a"), member("a/b")],
    [member("a/b"), member("a")],  # the other order: refused before `a` is written over a folder
    [member("s/f"), member("s", kind=tarfile.SYMTYPE, link="t")],
    [member("a"), member("a")],
    [member("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")],
    [member("dev", kind=tarfile.CHRTYPE)],
    [member("fifo", kind=tarfile.FIFOTYPE)],
    [member("dir", kind=tarfile.DIRTYPE)],
])
def test_hostile_archives_are_refused_and_nothing_is_written(members, tmp_path):
    data = tar_of(members)
    entries = []
    with pytest.raises(UsageError):
        entries = snapshots._members(data, 10**9, 100)
    assert entries == []
    with pytest.raises(UsageError):
        snapshots.unpack(data, "a" * 64)
    root = snapshots.store_root()
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("members", [[member("x/a"), member("x/a/b")], [member("x/a/b"), member("x/a")],
                                     [member("x/a/b/c"), member("x/a", kind=tarfile.SYMTYPE, link="b")]])
def test_a_name_below_a_file_or_link_is_named_in_either_order(members):
    with pytest.raises(UsageError, match=r"'x/a/b(/c)?' lies below a file or link"):
        snapshots.unpack(tar_of(members), "a" * 64)
    root = snapshots.store_root()
    assert not root.exists() or list(root.iterdir()) == []


def test_not_a_tar_is_a_clear_refusal():
    with pytest.raises(UsageError, match="tar"):
        snapshots.unpack(b"not a tar at all" * 100, "a" * 64)


@pytest.mark.parametrize("bad", ["", "A" * 64, "a" * 63, "../" + "a" * 61, "a" * 64 + "\n", "g" * 64])
def test_hashes_are_checked_before_they_name_a_path(bad):
    with pytest.raises(UsageError):
        snapshots.path_of(bad)


def test_a_missing_snapshot_is_not_found():
    with pytest.raises(NotFound):
        snapshots.tree("a" * 64)


def test_gc_removes_only_unreferenced_old_snapshots(tmp_path):
    kept = snapshots.take(write(tmp_path / "a", {"x": "1"}))
    gone = snapshots.take(write(tmp_path / "b", {"x": "22"}))
    young = snapshots.take(write(tmp_path / "c", {"x": "333"}))
    for snap in (kept, gone, young):
        snapshots.store(snap)
    for snap in (kept, gone):
        os.utime(snapshots.path_of(snap.hash), (1, 1))
    freed = snapshots.collect_garbage({kept.hash})
    assert freed == {"removed": [gone.hash], "freed_bytes": 2}
    assert snapshots.exists(kept.hash) and snapshots.exists(young.hash) and not snapshots.exists(gone.hash)


def test_file_changes_and_unified_diff():
    a = {"entries": [{"path": "a.py", "mode": "644", "sha256": "1"}, {"path": "gone", "mode": "644", "sha256": "2"},
                     {"path": "x", "mode": "644", "sha256": "3"}]}
    b = {"entries": [{"path": "a.py", "mode": "644", "sha256": "9"}, {"path": "new", "mode": "644", "sha256": "2"},
                     {"path": "x", "mode": "755", "sha256": "3"}]}
    assert rundiff.file_changes(a, b) == [
        {"path": "a.py", "change": "modified"}, {"path": "gone", "change": "removed"},
        {"path": "new", "change": "added"}, {"path": "x", "change": "mode 644 -> 755"}]
    text = rundiff.unified("a.py", b"lr = 0.1\n", b"lr = 0.2\n")
    assert "-lr = 0.1" in text and "+lr = 0.2" in text and "a/a.py" in text
    assert rundiff.unified("m.bin", b"\0\1", b"\0\2") is None


# --- the server's routes ----------------------------------------------------------------------------


@pytest.fixture
def team(tmp_path, app_of, no_engine):
    """A server-mode app with users ann (storage quota 1 KiB), bob and admin root-ish `boss`."""
    from fastapi.testclient import TestClient

    from dlbox.server import accounts
    from dlbox.store.db import Store

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    accounts.add_user(store, "ann", quota={"storage": 1024})
    accounts.add_user(store, "bob")
    accounts.add_user(store, "boss", admin=True)
    client = TestClient(app_of(store, mode="server"))
    heads = {name: {"Authorization": f"Bearer {accounts.create_token(store, name)[1]}"} for name in ("ann", "bob", "boss")}
    return client, heads, store


def upload(client, head, snap, data=None):
    return client.put(f"/api/snapshots/{snap.hash}", content=data if data is not None else snapshots.to_tar(snap=snap),
                      headers={**head, "Content-Type": "application/x-tar"})


def test_someone_elses_snapshot_does_not_exist(team, tmp_path):
    client, heads, store = team
    snap = snapshots.take(write(tmp_path / "p", {"train.py": "print(1)"}))
    assert client.get(f"/api/snapshots/{snap.hash}", headers=heads["ann"]).status_code == 404
    sent = upload(client, heads["ann"], snap)
    assert sent.status_code == 200 and sent.json()["new"] is True
    assert client.get(f"/api/snapshots/{snap.hash}", headers=heads["ann"]).json()["files"] == 1
    assert client.get(f"/api/snapshots/{snap.hash}", headers=heads["bob"]).status_code == 404
    assert client.get(f"/api/snapshots/{snap.hash}/tar", headers=heads["bob"]).status_code == 404
    assert client.get(f"/api/snapshots/{snap.hash}/tar", headers=heads["ann"]).content == snapshots.to_tar(snap.hash)
    refused = client.post("/api/jobs", headers=heads["bob"], json={"image": "x", "command": ["true"],
                                                                    "code_hash": snap.hash})
    assert refused.status_code == 404 and "snapshot" in refused.json()["error"]["message"]
    again = upload(client, heads["bob"], snap)  # bob may hold the same content by sending it himself
    assert again.status_code == 200 and again.json()["new"] is False
    assert client.get(f"/api/snapshots/{snap.hash}", headers=heads["bob"]).status_code == 200


def test_an_upload_that_lies_about_its_hash_or_escapes_is_refused(team, tmp_path):
    client, heads, _ = team
    snap = snapshots.take(write(tmp_path / "p", {"train.py": "1"}))
    other = snapshots.take(write(tmp_path / "q", {"train.py": "2"}))
    lie = upload(client, heads["bob"], snap, snapshots.to_tar(snap=other))
    assert lie.status_code == 400 and "hashes to" in lie.json()["error"]["message"]
    escape = upload(client, heads["bob"], snap, tar_of([member("../../../../tmp/pwned")]))
    assert escape.status_code == 400
    assert not Path("/tmp/pwned").exists()
    bad = client.put("/api/snapshots/..%2F..%2Fetc", content=b"x", headers=heads["bob"])
    assert bad.status_code in (404, 422)


def test_uploads_count_against_the_storage_quota(team, tmp_path):
    client, heads, store = team
    snap = snapshots.take(write(tmp_path / "p", {"big.bin": "x" * 2048}))
    refused = upload(client, heads["ann"], snap)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota_exceeded"
    assert not snapshots.exists(snap.hash)  # nobody holds it: not kept
    small = snapshots.take(write(tmp_path / "q", {"a": "x" * 100}))
    assert upload(client, heads["ann"], small).status_code == 200 and store.snapshot_bytes("ann") == 100


def test_an_upload_body_is_bounded(team, tmp_path, monkeypatch):
    client, heads, _ = team
    monkeypatch.setenv("DLBOX_CODE_LIMIT", "1k")
    monkeypatch.setenv("DLBOX_CODE_FILES", "1")
    over = client.put("/api/snapshots/" + "a" * 64, content=b"\0" * (1024 + 1536 + 1024**2 + 1), headers=heads["bob"])
    assert over.status_code == 413


def test_gc_is_for_admins(team):
    client, heads, _ = team
    assert client.post("/api/gc", headers=heads["bob"]).status_code == 403
    assert client.post("/api/gc", headers=heads["boss"]).json() == {"removed": [], "freed_bytes": 0}


def test_the_dlbox_home_inside_a_project_is_never_code(tmp_path, monkeypatch):
    write(tmp_path, {"train.py": "1", "state/dlbox.db": "secret", "state/vault/x": "secret"})
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path / "state"))
    assert paths(snapshots.take(tmp_path)) == ["train.py"]


def test_an_unreadable_file_is_a_one_line_refusal(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshots, "HELD_BYTES", 0)  # nothing kept from the hashing read: storing reads again
    write(tmp_path, {"a.py": "1"})
    (tmp_path / "b.py").symlink_to("a.py")
    (tmp_path / "fifo-like").mkdir()
    snap = snapshots.take(tmp_path)
    assert snap.held == {}
    (tmp_path / "a.py").unlink()
    (tmp_path / "a.py").symlink_to("/etc/passwd")  # swapped for a link after the listing
    with pytest.raises(UsageError, match="cannot read a.py"):
        snapshots.store(snap)
    assert [h for h, _, _ in snapshots.stored()] == []


def test_a_file_swapped_after_hashing_stores_what_was_hashed(tmp_path):
    write(tmp_path, {"a.py": "1"})
    snap = snapshots.take(tmp_path)
    assert snap.held == {"a.py": b"1"}  # read once: hashed and kept
    (tmp_path / "a.py").unlink()
    (tmp_path / "a.py").symlink_to("/etc/passwd")
    assert snapshots.store(snap)
    assert (snapshots.tree(snap.hash) / "a.py").read_bytes() == b"1"  # never the link's target
    with tarfile.open(fileobj=io.BytesIO(snapshots.to_tar(snap=snap))) as tar:
        assert tar.extractfile("a.py").read() == b"1"


# --- runs: diff and reproduce through a backend ----------------------------------------------------------


class FakeBackend:
    """The three calls runs_diff and reproduce make, over snapshots stored in this home."""

    def __init__(self, records: dict):
        self.records = records
        self.submitted = []

    def run(self, run_id):
        return self.records[run_id]

    def code_manifest(self, snapshot_hash):
        return snapshots.manifest(snapshot_hash)

    def code_tar(self, snapshot_hash):
        return snapshots.to_tar(snapshot_hash)

    def submit(self, body):
        self.submitted.append(body)
        return {"id": "new", **body}


def record(run_id: str, snap) -> dict:
    return {"id": run_id, "image": "i", "image_id": "sha256:" + "0" * 64, "lock_hash": None, "params": {},
            "command": ["python", "train.py"], "metrics": {}, "mounts": [], "workdir": "/workspace/code",
            "resources": {"cpus": 1.0, "memory": None, "gpus": None},
            "code": {"hash": snap.hash, "files": snap.files, "bytes": snap.bytes, "dest": "/workspace/code"}}


def test_runs_diff_names_the_files_and_shows_text_changes(tmp_path):
    a = snapshots.take(write(tmp_path / "a", {"train.py": "lr = 0.1\n", "same.py": "x\n"}))
    b = snapshots.take(write(tmp_path / "b", {"train.py": "lr = 0.2\n", "same.py": "x\n", "new.py": ""}))
    snapshots.store(a)
    snapshots.store(b)
    where = FakeBackend({"A": record("A", a), "B": record("B", b)})
    result = rundiff.runs_diff(where, "A", "B", code=True)
    assert result["files"] == [{"path": "new.py", "change": "added"}, {"path": "train.py", "change": "modified"}]
    assert any("-lr = 0.1\n+lr = 0.2" in text for text in result["unified"])
    snapshots.remove(snapshots.path_of(a.hash))
    assert rundiff.runs_diff(where, "A", "B")["files"] == [{"path": "-", "change": "run A's code snapshot was deleted"}]


def test_reproduce_submits_the_recorded_snapshot_and_refuses_a_deleted_one(tmp_path, monkeypatch):
    from dlbox.errors import DlboxError
    from dlbox.runs import reproduce

    snap = snapshots.take(write(tmp_path / "p", {"train.py": "1"}))
    snapshots.store(snap)
    monkeypatch.setattr(reproduce, "image_for", lambda record, progress: record["image_id"])
    where = FakeBackend({"A": record("A", snap)})
    _, job = reproduce.reproduce(where, "A", progress=None)
    assert job["code_hash"] == snap.hash and job["code_dest"] == "/workspace/code" and job["reproduces"] == "A"
    snapshots.remove(snapshots.path_of(snap.hash))
    with pytest.raises(DlboxError) as refused:
        reproduce.reproduce(where, "A", progress=None)
    assert refused.value.code == "not_reproducible" and "was deleted" in refused.value.message
    assert len(where.submitted) == 1


def test_the_cli_submits_in_one_request_and_sends_a_missing_snapshot_then_asks_again(team, tmp_path, monkeypatch):
    """Against a real HTTP server: the job request carries the hash; the server answers snapshot_missing
    (404) until the caller sent it; the CLI then uploads and asks again, and next time asks once."""
    import socket
    import threading

    import uvicorn

    from dlbox.cli.backend import ServiceBackend
    from dlbox.errors import DlboxError

    client, heads, store = team
    seen: list[tuple[str, str]] = []
    app = client.app

    async def recorded(scope, receive, send):
        if scope["type"] == "http":
            seen.append((scope["method"], scope["path"]))
        await app(scope, receive, send)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(recorded, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        monkeypatch.setenv("DLBOX_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("DLBOX_TOKEN", heads["bob"]["Authorization"].split()[1])
        snap = snapshots.take(write(tmp_path / "p", {"train.py": "print(1)"}))
        body = {"image": "x", "command": ["true"]}
        direct = client.post("/api/jobs", headers=heads["bob"], json={**body, "code_hash": snap.hash})
        assert direct.status_code == 404 and direct.json()["error"]["code"] == "snapshot_missing"
        seen.clear()
        with pytest.raises(DlboxError) as failed:  # no engine here: the job gets past its snapshot, no further
            ServiceBackend().submit_with_code(body, snap)
        assert failed.value.code == "engine_unavailable"
        assert seen == [("POST", "/api/jobs"), ("PUT", f"/api/snapshots/{snap.hash}"), ("POST", "/api/jobs")]
        assert store.has_snapshot("bob", snap.hash)
        seen.clear()
        with pytest.raises(DlboxError):
            ServiceBackend().submit_with_code(body, snap)
        assert seen == [("POST", "/api/jobs")]  # the server holds it: one request, nothing sent
        with pytest.raises(NotFound) as other:  # any other 404 is not answered by an upload
            ServiceBackend().submit_with_code({**body, "workspace": "nope"}, snap)
        assert other.value.code == "not_found"
    finally:
        server.should_exit = True
        thread.join(10)
