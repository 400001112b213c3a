"""The run record's git facts, read with the real git from real repositories."""

import subprocess

from dlbox import gitinfo


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_outside_a_repository(tmp_path):
    assert gitinfo.describe(tmp_path) == {"commit": None, "dirty": False, "diff": ""}


def test_repository_without_commits(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    assert gitinfo.describe(tmp_path) == {"commit": None, "dirty": False, "diff": ""}


def test_clean_then_modified_then_untracked(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert gitinfo.describe(tmp_path) == {"commit": head, "dirty": False, "diff": ""}

    (tmp_path / "a.py").write_text("x = 2\n")
    got = gitinfo.describe(tmp_path)
    assert got["commit"] == head and got["dirty"]
    assert "-x = 1" in got["diff"] and "+x = 2" in got["diff"]

    git(tmp_path, "checkout", "-q", "a.py")
    (tmp_path / "new.py").write_text("y = 1\n")  # untracked: dirty, though `git diff` shows nothing
    got = gitinfo.describe(tmp_path)
    assert got["commit"] == head and got["dirty"]


def test_subdirectory_of_a_repository(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("b\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    assert gitinfo.describe(tmp_path / "sub")["commit"] is not None
