"""The git commit of a project directory, and whether it has uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def describe(directory: Path) -> dict:
    """{"commit": sha or None, "dirty": bool, "diff": text of uncommitted changes}.

    One `git status` gives both the commit and the changes (every `dlbox run` waits on this);
    the diff is asked for only when there is one.
    """
    status = _git(directory, "status", "--porcelain=v2", "--branch")  # honours status.showUntrackedFiles
    lines = (status or "").splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    if commit is None or commit == "(initial)":  # not a repository, or nothing committed yet
        return {"commit": None, "dirty": False, "diff": ""}
    dirty = any(not line.startswith("#") for line in lines)
    diff = (_git(directory, "diff", "HEAD") or "") if dirty else ""
    return {"commit": commit, "dirty": dirty, "diff": diff}
