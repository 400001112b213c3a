"""A commit as a pipeline's input: `git archive REF` turned into a code snapshot, and who made the commit.

Only what the commit holds is used, never the working tree: uncommitted changes do not reach a pipeline.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dlbox import snapshots
from dlbox.errors import UsageError

REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@{}^~+-]{0,254}")  # a branch, tag, SHA, HEAD~1 ...; never an option


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    message: str  # the subject line


def check_ref(ref: str) -> str:
    if not isinstance(ref, str) or not REF.fullmatch(ref) or ".." in ref:
        raise UsageError(f"--ref: {str(ref)[:80]!r} is not a git reference (a branch, tag or commit)")
    return ref


def _git(repo: Path, *args: str, timeout: float = 120) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise UsageError("git is not installed; a pipeline takes its code from a git commit") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"git {args[0]} took over {timeout:.0f} s") from None
    if done.returncode != 0:
        why = (done.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        raise UsageError(f"git {args[0]}: {why[:300]}")
    return done.stdout


def commit(repo: Path, ref: str) -> Commit:
    sha = _git(repo, "rev-parse", "--verify", "--end-of-options", f"{check_ref(ref)}^{{commit}}").decode().strip()
    fields = _git(repo, "show", "-s", "--format=%an <%ae>%x00%s", sha).decode(errors="replace").split("\0")
    author, message = (fields + [""])[:2]
    return Commit(sha=sha, author=author.strip()[:256], message=message.strip()[:1000])


def snapshot(repo: Path, ref: str, dest: Path) -> tuple[snapshots.Snapshot, Commit]:
    """The commit's snapshot, written out below the new folder `dest` (the caller stores or sends it)."""
    found = commit(repo, ref)
    data = _git(repo, "archive", "--format=tar", found.sha, timeout=600)
    return snapshots.from_archive(data, dest), found


def spec_of(pipeline):
    """The commit's dlbox.yaml (from its snapshot), parsed; it must have a pipeline: section."""
    from dlbox.errors import DlboxError
    from dlbox.spec import model as specs

    text = snapshots.file_text(pipeline.code_hash, "dlbox.yaml")
    if text is None:
        raise DlboxError("the commit has no dlbox.yaml", code="invalid")
    spec = specs.parse(text.decode(errors="replace"), source="dlbox.yaml")
    if spec.pipeline is None:
        raise DlboxError("the commit's dlbox.yaml has no pipeline: section", code="invalid")
    return spec


def model_name(spec) -> str:
    return spec.pipeline.register_.model or spec.name
