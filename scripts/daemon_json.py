#!/usr/bin/env python3
"""Merge dlbox's dockerd settings into daemon.json (scripts/host-setup.sh runs it before it starts dockerd).

    python3 scripts/daemon_json.py [PATH]      default /etc/docker/daemon.json

What it adds, only where the file does not already say otherwise (an admin's own choice wins):
  log-driver json-file, log-opts max-size 50m / max-file 5: a container's log can no longer fill the disk
  live-restore true: containers keep running while dockerd restarts, so workspaces stay up and a
                     running job is still running afterwards (not a failure with exit code 137)
A file that is not a JSON object is left alone (exit 1). The file is replaced atomically, mode 0644.
Prints what changed, or nothing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

LOG_OPTS = {"max-size": "50m", "max-file": "5"}
ROTATING_DRIVERS = ("json-file", "local")  # the drivers that keep logs on this disk and take these options


def merged(current: dict) -> dict:
    """`current` with dlbox's settings added where it has none; pure."""
    out = dict(current)
    out.setdefault("log-driver", "json-file")
    if out["log-driver"] in ROTATING_DRIVERS:
        out["log-opts"] = {**LOG_OPTS, **(out.get("log-opts") or {})}
    out.setdefault("live-restore", True)
    return out


def write(path: Path) -> list[str]:
    """Merge into the file at `path` (made if missing); returns the keys that changed."""
    current = {}
    if path.exists():
        text = path.read_text()
        try:
            current = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise SystemExit(f"error: {path} is not valid JSON ({exc}); fix it by hand, nothing was changed")
        if not isinstance(current, dict):
            raise SystemExit(f"error: {path} is not a JSON object; fix it by hand, nothing was changed")
    wanted = merged(current)
    changed = sorted(k for k in wanted if wanted[k] != current.get(k))
    if not changed:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=".daemon.json.")
    with os.fdopen(handle, "w") as out:
        json.dump(wanted, out, indent=2, sort_keys=True)
        out.write("\n")
    os.chmod(partial, 0o644)
    os.replace(partial, path)
    return changed


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "/etc/docker/daemon.json")
    changed = write(path)
    if changed:
        print(f"> {path}: set {', '.join(changed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
