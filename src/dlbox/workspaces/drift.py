"""A workspace's own packages: what its user installed into HOME, beyond the image's lock.

The image's venv is read-only in a workspace, so everything a user's `pip install` added is in
the user site of the HOME volume (workspace_files.state_env). This reads it inside the running
container, as the workspace user, and names the locked version where the image has one.
"""

from __future__ import annotations

import json

from dlbox.build import lock as locks
from dlbox.build.images import LOCK_PATH
from dlbox.containers import policy as containers
from dlbox.engine import api as engine
from dlbox.errors import DlboxError
from dlbox.workspaces import manage

# Run by the workspace's own python: the user site's distributions, and the image's lock if it has one.
LISTING = f"""\
import importlib.metadata as m, json, os, site
d = site.getusersitepackages()
found = sorted({{(x.metadata["Name"] or "?", x.version) for x in m.distributions(path=[d])}})
lock = open({LOCK_PATH!r}).read() if os.path.exists({LOCK_PATH!r}) else None
print(json.dumps({{"dir": d, "packages": found, "lock": lock}}))
"""


def verify(name: str) -> dict:
    """{ok, workspace, image, lock_hash, dir, packages: [{name, version, locked}]}; ok when the user added none."""
    container = manage.container_of(containers.check_name(name, "--workspace"))
    labels = engine.container_attrs(container)["Config"]["Labels"] or {}
    # -I: no cwd (/workspace) or PYTHON* variables on the path; the user site is then the default ~/.local
    code, out = engine.exec_capture(container, ["python", "-I", "-c", LISTING])
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        listing = json.loads(lines[-1]) if code == 0 and lines else None
    except ValueError:
        listing = None
    if not isinstance(listing, dict):
        raise DlboxError(f"cannot list workspace {name}'s packages: {lines[-1][:200] if lines else 'no output'}")
    lock = locks.parse_text(listing["lock"], source=f"{name}'s image lock") if listing.get("lock") else None
    locked = {locks.normalize(p.name): p.version for p in lock.python.packages} if lock else {}
    packages = [{"name": n, "version": v, "locked": locked.get(locks.normalize(n))} for n, v in listing["packages"]]
    return {"ok": not packages, "workspace": name, "image": labels.get("dlbox.image"),
            "lock_hash": lock.hash if lock else None, "dir": listing["dir"], "packages": packages}
