"""Workspace rows in the store follow their containers: the engine is the truth about them."""

from __future__ import annotations

import time

from dlbox import config
from dlbox.store.db import Store, Workspace
from dlbox.workspaces import manage as workspaces


def record(store: Store, attrs: dict, owner: str | None = None) -> Workspace:
    """Write what the engine says about a workspace container into its row."""
    info = workspaces.describe(attrs, fresh=True)
    labels = attrs["Config"]["Labels"] or {}
    known = store.get_workspace(info["name"])
    host = attrs["HostConfig"]
    now = time.time()
    return store.put_workspace(Workspace(
        name=info["name"], owner=owner or labels.get("dlbox.owner") or (known.owner if known else "local"),
        state=info["state"], cpus=(host.get("NanoCpus") or 0) / 1e9 or None, memory=host.get("Memory") or None,
        gpus=len(info["resources"]["gpus"] or []), info=info,
        created_at=known.created_at if known else now, updated_at=now))


def sync(store: Store) -> None:
    """Rows follow their containers; workspaces made by the local CLI are adopted.

    One listing call per pass; a container is inspected only when its state or ID changed.
    """
    engine = workspaces.engine
    found = {c["Labels"].get("dlbox.workspace"): c for c in engine.container_summaries(
        [engine.MANAGED, f"dlbox.kind={workspaces.KIND}", f"dlbox.home={config.home_id()}"])}
    for row in store.workspaces():
        seen = found.pop(row.name, None)
        if seen is None:
            store.remove_workspace(row.name)
        elif seen["State"] != row.state or seen["Id"] != row.info.get("container_id"):
            attrs = engine.container_attrs(seen["Id"])
            if attrs is not None:
                record(store, attrs)
    for name, seen in found.items():
        attrs = engine.container_attrs(seen["Id"]) if name else None
        if attrs is not None:
            record(store, attrs)
