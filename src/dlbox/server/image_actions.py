"""`images prune` on the service: what needs each image (the engine's containers and the store's
records), then supply/retention's plan carried out on the engine.

Needs are gathered fresh for each prune, from every container on the engine (dlbox's or not, any
state: a stopped workspace still needs its image) and from this home's store: active jobs, every
model version (reproduce and serve use its image), unfinished pipelines, and deployments. In a
registry the same needs hold, and so do the REPO@sha256:... digests those records keep.
"""

from __future__ import annotations

from collections import defaultdict

from dlbox.jobs.state import ACTIVE
from dlbox.store.db import Store
from dlbox.supply import retention


def _container_reason(c: dict) -> str:
    labels = c["Labels"]
    state = c["State"]
    if labels.get("dlbox.workspace"):
        return f"workspace {labels['dlbox.workspace']} ({state}) uses it"
    if labels.get("dlbox.deployment"):
        return f"deployment {labels['dlbox.deployment']}'s container ({state}) uses it"
    if labels.get("dlbox.job"):
        return f"job {labels['dlbox.job']}'s container ({state}) uses it"
    return f"container {c['Name']} ({state}) uses it"


def references(store: Store) -> dict[str, list[str]]:
    """Image ID (or a prefix of one) -> why it must stay."""
    from dlbox.engine import api as engine

    needs: dict[str, list[str]] = defaultdict(list)
    for c in engine.container_images():
        if c["ImageID"]:
            needs[c["ImageID"]].append(_container_reason(c))
    for row in store.workspaces():
        if (row.info or {}).get("image_id"):
            needs[row.info["image_id"]].append(f"workspace {row.name} ({row.state}) was made from it")
    for job in store.jobs(states=set(ACTIVE)):
        needs[job.image_id].append(f"job {job.id} is {job.state}")
    versions_by_model: dict[int, list] = {}
    models = store.models()
    for model in models:
        versions_by_model[model.id] = store.model_versions(model.id)
        for v in versions_by_model[model.id]:
            needs[v.image_id].append(f"model {model.owner}/{model.name}:{v.version} was trained in it")
    for pipeline in store.pipelines():
        if pipeline.image_id and pipeline.state in ("queued", "running"):
            needs[pipeline.image_id].append(f"pipeline {pipeline.id} is {pipeline.state}")
    model_ids = {(m.owner, m.name): m.id for m in models}
    for dep in store.deployments():
        if dep.desired != "running":
            continue
        for v in versions_by_model.get(model_ids.get((dep.model_owner, dep.model_name)), []):
            if dep.alias or v.version in (dep.versions or []):  # an alias may move to any version
                needs[v.image_id].append(f"deployment {dep.name} serves {dep.model_name}:{v.version}"
                                         + (f" (or may: it follows @{dep.alias})" if dep.alias else ""))
    return dict(needs)


def recorded_digests(store: Store) -> dict[str, list[str]]:
    """REPO@sha256:... -> why it must stay in its registry: the digests that active jobs, model versions
    and live deployments recorded (reproduce and serve pull by them when the engine lacks the image)."""
    needs: dict[str, list[str]] = defaultdict(list)
    for job in store.jobs(states=set(ACTIVE)):
        for digest in job.repo_digests or []:
            needs[digest].append(f"job {job.id} is {job.state}")
    for model in store.models():
        for v in store.model_versions(model.id):
            for digest in v.repo_digests or []:
                needs[digest].append(f"model {model.owner}/{model.name}:{v.version} records it")
    for dep in store.deployments():
        if dep.desired == "running":
            for digest in dep.repo_digests or []:
                needs[digest].append(f"deployment {dep.name} records it")
    return dict(needs)


def prune(store: Store, *, keep: int, name: str | None, dry_run: bool, registry: str | None = None) -> dict:
    """The engine's images, or with `registry` (HOST:PORT[/PROJECT]) those in that registry; an image's
    copy in a registry is kept for the same needs as in the engine, and for the digests records name."""
    if registry is None:
        from dlbox.build import images

        found = retention.plan(images.list_images(include_untagged=True), references(store), keep, name=name)
        return retention.apply(found, [retention.EngineDeleter()], dry_run=dry_run) | {"registry": None}
    from dlbox.supply.distribute import registry_target
    from dlbox.supply.registry import Client

    host, project = registry_target(registry)
    needs = references(store) | recorded_digests(store)
    with Client(host) as client:
        found = retention.plan(retention.registry_images(client, project), needs, keep, name=name)
        return retention.apply(found, [retention.RegistryDeleter(client)], dry_run=dry_run) | {"registry": registry}
