"""Retention (`dlbox images prune`): which built images to keep and which may go.

`plan` is pure: the images (summaries as `images.list_images` gives them), what needs each one
(image ID -> reasons, gathered by the caller from the engine and the store) and N. Per image name it
keeps the newest N and every image something needs; the rest may go. `apply` hands each removal to
Deleters: the engine's, or a registry's (`--registry`), whose images `registry_images` lists.

In a registry an "image" is one manifest of one repository: every tag on that digest counts as one
image, its ID is the config digest (the engine's image ID, so the same needs match it), and what
needs it may also name it by the REPO@sha256:... that runs, model versions and deployments record.
Signature tags (sha256-<hex>.sig) are not images of their own: they go with the digest they sign.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

from dlbox.errors import DlboxError, NotFound, UsageError

MOST = 10_000
MOST_CONFIG = 8 << 20  # an image config's bytes: its history grows with every layer


@dataclass(frozen=True)
class Decision:
    image: dict
    reasons: tuple[str, ...]

    def to_json(self) -> dict:
        i = self.image
        return {"id": i["id"], "ref": i.get("ref") or i["id"], "name": name_of(i), "created": i.get("created"),
                "tags": list(i.get("tags") or []), "reasons": list(self.reasons)} | (
                    {"digest": i["digest"]} if i.get("digest") else {})


@dataclass(frozen=True)
class Plan:
    keep: int
    name: str | None
    kept: tuple[Decision, ...]
    remove: tuple[Decision, ...]


def name_of(image: dict) -> str:
    """The name an image is counted under: its spec's name, else its repository, else its ID."""
    if image.get("name"):
        return image["name"]
    ref = image.get("ref") or ""
    repo = ref.rpartition(":")[0] if ":" in ref.rpartition("/")[2] else ref
    return repo.removeprefix("dlbox/") if repo and not repo.startswith("sha256") else image["id"]


def _hex(image_id: str) -> str:
    return image_id.removeprefix("sha256:").lower()


def needs_of(image_id: str, references: dict[str, list[str]]) -> list[str]:
    """What needs this image: references by its full ID or by a prefix of 12+ hex digits (a short ID)."""
    full = _hex(image_id)
    found: list[str] = []
    for ref_id, reasons in references.items():
        short = _hex(ref_id)
        if short == full or (len(short) >= 12 and full.startswith(short)):
            found.extend(r for r in reasons if r not in found)
    return found


def plan(images: list[dict], references: dict[str, list[str]], keep: int, *, name: str | None = None) -> Plan:
    """Keep the newest `keep` of each name and whatever something needs; the rest may go. With `name`,
    only that name's images are looked at."""
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= MOST:
        raise UsageError(f"--keep: {keep!r}; give a whole number from 0 to {MOST}")
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for image in images:
        if name is None or name_of(image) == name:
            groups[name_of(image)].setdefault(image.get("digest") or image["id"], image)  # listed twice: once
    kept: list[Decision] = []
    remove: list[Decision] = []
    for group, members in sorted(groups.items()):
        newest_first = sorted(members.values(), key=lambda i: (i.get("created") or "", i.get("digest") or i["id"]),
                              reverse=True)
        for rank, image in enumerate(newest_first):
            reasons = needs_of(image["id"], references) if image["id"] else []
            reasons += [r for r in references.get(image.get("ref") or "", []) if r not in reasons]
            if rank < keep:
                reasons.insert(0, f"one of the newest {keep} of {group}")
            if not image["id"]:
                reasons.append("an index of several platforms: not judged, kept")
            if reasons:
                kept.append(Decision(image, tuple(reasons)))
            else:
                remove.append(Decision(image, (f"older than the newest {keep} of {group}, and nothing uses it",)))
    return Plan(keep=keep, name=name, kept=tuple(kept), remove=tuple(remove))


class Deleter(Protocol):
    """One place images are removed from (the engine here; a registry later)."""

    where: str

    def remove(self, image: dict) -> None:
        """Remove it, never forced; a DlboxError when the place refuses."""


class EngineDeleter:
    where = "engine"

    def remove(self, image: dict) -> None:
        from dlbox.engine import api as engine

        # by ID and unforced: the engine itself refuses an image any container (even a stopped one) uses
        engine.remove_image(image["id"], force=False)


class RegistryDeleter:
    """Deletes a manifest (with its tags and its signature) from a registry; never an index."""

    def __init__(self, client):
        self.client = client
        self.where = f"registry {client.host}"

    def remove(self, image: dict) -> None:
        from dlbox.supply.signing import signature_tag

        self.client.delete_manifest(image["repository"], image["digest"])
        signature = self.client.manifest(image["repository"], signature_tag(image["digest"]))
        if signature is not None:
            self.client.delete_manifest(image["repository"], signature[0])


def registry_images(client, project: str) -> list[dict]:
    """Every image under PROJECT in the registry, as `plan` takes them: repository, digest, tags, ID
    (the config digest) and created (the config's own time). An index (several platforms) has no one
    config: its ID is None, and it is always kept."""
    import json

    from dlbox.supply.registry import config_digest
    from dlbox.supply.signing import is_signature_tag

    prefix = f"{project}/" if project else ""
    found: list[dict] = []
    for repository in client.repositories():
        if not repository.startswith(prefix):
            continue
        by_digest: dict[str, dict] = {}
        for tag in client.tags(repository):
            if is_signature_tag(tag):
                continue
            there = client.manifest(repository, tag)
            if there is None:
                continue  # deleted between the listing and now
            digest, body, _media = there
            if digest in by_digest:
                by_digest[digest]["tags"].append(tag)
                continue
            image_id = config_digest(body)
            created = None
            if image_id:
                try:
                    created = json.loads(client.blob(repository, image_id, most=MOST_CONFIG)).get("created")
                except ValueError:
                    pass
            name = repository.removeprefix(prefix)
            by_digest[digest] = {"id": image_id, "digest": digest, "repository": repository, "tags": [tag],
                                 "ref": f"{client.host}/{repository}@{digest}", "created": created,
                                 "name": name.removeprefix("dlbox/")}
        found.extend(by_digest.values())
    return found


def apply(found: Plan, deleters: list[Deleter], *, dry_run: bool) -> dict:
    """The plan carried out (or only shown, with `dry_run`): the answer `images prune` prints."""
    removed = []
    for decision in found.remove:
        row = decision.to_json() | {"removed": False, "errors": []}
        for deleter in [] if dry_run else deleters:
            try:
                deleter.remove(decision.image)
            except NotFound:
                pass  # already gone: what was wanted
            except DlboxError as exc:
                row["errors"].append(f"{deleter.where}: {exc.message}")
        row["removed"] = not dry_run and not row["errors"]
        removed.append(row)
    return {"keep": found.keep, "name": found.name, "dry_run": dry_run,
            "kept": [d.to_json() for d in found.kept], "remove": removed,
            "failed": sum(1 for r in removed if r["errors"])}
