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
    """{"commit": sha or None, "dirty": bool, "diff": text of uncommitted changes}."""
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": False, "diff": ""}
    status = _git(directory, "status", "--porcelain") or ""
    diff = _git(directory, "diff", "HEAD") or "" if status else ""
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "diff": diff}
