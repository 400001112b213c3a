"""Shared test setup.

Engine tests (tests/engine) run against the real Docker Engine at DOCKER_HOST. Every object
they create carries the label dlbox.test-run=<id> (through DLBOX_LABELS) and is removed at the
end of the session, pass or fail; bases go to their own repository so yours are never replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Dlbox:
    """Runs the real `dlbox` command line in a subprocess with the test environment."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True, extra_env=None,
                 timeout: float = 1200) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "dlbox", *args], cwd=cwd, env={**self.env, **(extra_env or {})},
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"dlbox {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def json(self, *args: str, **kw):
        """The command's --json output (the flag goes before a `--` that starts a job's command)."""
        args = list(args)
        args.insert(args.index("--") if "--" in args else len(args), "--json")
        return json.loads(self(*args, **kw).stdout)


def _git_project(root: Path) -> Path:
    """Make `root` a git repository with everything in it committed."""
    git = ["git", "-C", str(root), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return root


@pytest.fixture(scope="session")
def git_project():
    return _git_project


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def test_env(tmp_path_factory, run_id) -> dict[str, str]:
    home = tmp_path_factory.mktemp("dlbox-home")
    return {
        **os.environ,
        "DLBOX_HOME": str(home),
        # .debs are worth keeping between local runs; CI starts empty anyway
        "DLBOX_CACHE_DIR": os.environ.get("DLBOX_TEST_CACHE_DIR", str(Path.home() / ".cache" / "dlbox-tests")),
        "DLBOX_LABELS": f"dlbox.test-run={run_id}",
        "DLBOX_BASE_REPO": f"dlbox-test-{run_id}",
        "PYTHONPATH": str(ROOT / "src"),
        "DLBOX_CAPACITY": "cpus=2",  # the queue tests count on room for exactly two 1-CPU jobs
        "NO_COLOR": "1",
    }


@pytest.fixture(scope="session")
def dlbox(test_env) -> Dlbox:
    return Dlbox(test_env)


@pytest.fixture(scope="session")
def tf_image(dlbox, tmp_path_factory, run_id) -> dict:
    """The tensorflow-2.9 preset, built under a test name so your own tags are never moved."""
    from dlbox.spec import presets

    project = tmp_path_factory.mktemp("tf-project")
    spec = presets.text("tensorflow-2.9").replace("name: tensorflow-2.9\n", f"name: t{run_id}-tf\n", 1)
    (project / "dlbox.yaml").write_text(spec)
    return dlbox.json("build", cwd=project)


# The advisory answer key (tests/data/advisories) was made for the tensorflow-2.9 preset before its
# Jupyter start was trimmed (issue 16): jsonschema 4.25.1 became 4.23.0, and rfc3987-syntax and lark,
# which only 4.25's extra pulled in, went. The key names no advisory for any of them, and the
# snapshot holds no record of jsonschema at all.
TRIMMED_PINS = {"jsonschema==4.25.1": "jsonschema==4.23.0", "lark==1.3.1": None, "rfc3987-syntax==1.1.0": None}


@pytest.fixture(scope="session")
def answer_key() -> dict[str, list[str]]:
    """"NAME==VERSION" of every pin of the tensorflow-2.9 preset -> the advisory ids that affect it."""
    given = json.loads((ROOT / "tests" / "data" / "advisories" / "expected-tensorflow-2.9.json").read_text())
    assert all(given[old] == [] for old in TRIMMED_PINS), "the trimmed pins had advisories: the key changed"
    return {k: v for k, v in given.items() if k not in TRIMMED_PINS} | {new: [] for new in TRIMMED_PINS.values()
                                                                          if new}
