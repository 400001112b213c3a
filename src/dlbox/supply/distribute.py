"""`dlbox push` and `dlbox pull`: images to and from an OCI registry, by digest, with immutable tags
and signatures (supply/signing.py).

A push names the target HOST:PORT[/PROJECT]; the image keeps its own repository path under it
(dlbox/tensorflow-2.9:latest -> HOST:PORT/PROJECT/dlbox/tensorflow-2.9:latest). Tags are immutable:
when the registry's tag already holds another image (its config digest, which is the engine's
image ID, differs) the push is refused unless --force. A pull takes only REF@sha256:DIGEST, so
what arrives is exactly what was pushed; with --verify the signature is checked before anything
is pulled. DLBOX_VERIFY_KEY (`dlbox server --verify-key`) makes that check a policy for every pull.
"""

from __future__ import annotations

from pathlib import Path

from dlbox import config
from dlbox.engine import api as engine
from dlbox.engine import registry as engine_registry
from dlbox.errors import DlboxError, UsageError
from dlbox.progress import Progress
from dlbox.supply import signing
from dlbox.supply.registry import NAME, Client, Ref, config_digest, parse


def registry_target(registry: str) -> tuple[str, str]:
    """--registry HOST:PORT[/PROJECT] checked: (host, project, "" for none); a UsageError naming the flag."""
    host, _, project = registry.partition("/")
    try:
        engine_registry.check_host(host)
    except DlboxError as exc:
        raise UsageError(f"--registry: {exc.message}") from None
    if project and not NAME.fullmatch(project):
        raise UsageError(f"--registry: {project!r} is not a project path (lower-case letters, digits, '.', '_', "
                         "'-', '/')")
    return host, project


def target(image: str, attrs: dict, registry: str) -> Ref:
    """Where IMAGE goes under --registry HOST:PORT[/PROJECT]."""
    host, project = registry_target(registry)
    name, tag = _local_name(image, attrs)
    return Ref(host, f"{project}/{name}" if project else name, tag)


def _local_name(image: str, attrs: dict) -> tuple[str, str]:
    """(repository path, tag) of the local IMAGE: as given, or the image's first tag for an ID."""
    given = image
    if image.startswith("sha256:") or attrs["Id"].startswith("sha256:" + image):  # an ID names no repository
        tags = attrs.get("RepoTags") or []
        if not tags:
            raise DlboxError(f"{image[:40]} has no name to push it under; give NAME:TAG", code="invalid")
        given = tags[0]
    name, _, tag = given.rpartition(":") if ":" in given.rsplit("/", 1)[-1] else (given, "", "latest")
    if "/" in name and ("." in name.split("/")[0] or ":" in name.split("/")[0]):
        name = name.split("/", 1)[1]  # a name that is itself a registry's: its path only
    if not NAME.fullmatch(name):
        raise DlboxError(f"{given!r} cannot be a registry repository (lower-case names only)", code="invalid")
    return name, tag or "latest"


def push(image: str, registry: str, *, force: bool = False, sign_key: Path | None = None,
         progress: Progress | None = None) -> dict:
    progress = progress or Progress(quiet=True)
    attrs = engine.image_attrs(image)
    ref = target(image, attrs, registry)
    with Client(ref.host) as client:
        there = client.manifest(ref.name, ref.tag)
        moved_from = None
        if there is not None and config_digest(there[1]) != attrs["Id"]:
            if not force:
                raise DlboxError(f"{ref} already points at another image ({there[0][:19]}); tags are immutable, "
                                 "push under a new tag or give --force to move it", code="tag_taken")
            moved_from = there[0]
        progress.step(f"pushing {attrs['Id'][:19]} to {ref}")
        digest = engine_registry.push(attrs["Id"], ref.repository, ref.tag, on_line=progress.line)
        signed = None
        if sign_key is not None:
            signed = signing.sign(client, ref, digest, sign_key)
            progress.step(f"signed {digest[:19]} ({signed['signature_tag']})")
    return {"image": image, "id": attrs["Id"], "repository": ref.repository, "tag": ref.tag, "digest": digest,
            "ref": f"{ref.repository}@{digest}", "moved_from": moved_from, "signed": signed}


def pull(reference: str, *, verify_key: Path | None = None, progress: Progress | None = None) -> dict:
    progress = progress or Progress(quiet=True)
    ref = parse(reference)
    if not ref.digest:
        raise DlboxError(f"REF: {reference[:200]!r} has no digest; pull by REF@sha256:DIGEST (`dlbox push` "
                         "prints it)", code="invalid")
    verified = None
    flag = "--verify"
    if verify_key is None and (verify_key := config.verify_key()) is not None:
        flag = "DLBOX_VERIFY_KEY"  # the policy: every pull, the service's (serve) and the CLI's (reproduce)
    if verify_key is not None:
        with Client(ref.host) as client:
            verified = signing.verify(client, ref, ref.digest, verify_key, flag=flag)
        progress.step(f"signature of {ref.digest[:19]} verified with {verify_key}")
    attrs = engine_registry.pull(ref.repository, ref.digest, on_line=progress.line)
    return {"ref": f"{ref.repository}@{ref.digest}", "id": attrs["Id"], "repo_digests": attrs.get("RepoDigests") or [],
            "verified": verified}


def ensure(image_id: str, repo_digests: list[str] | None, progress: Progress, what: str) -> str | None:
    """The image `image_id` in the engine: there already, or pulled by one of its recorded repository
    digests (which must bring exactly that image). None when none can be pulled."""
    if engine.image_exists(image_id):
        return image_id
    if repo_digests and (policy := config.verify_key()) is not None:
        signing.check_public_key(policy, "DLBOX_VERIFY_KEY")  # a broken policy is an error, never a fallback
    failures = []
    refused = None
    for repo_digest in repo_digests or []:
        progress.step(f"{what}: image {image_id[:19]} is not in the engine; pulling {repo_digest}")
        try:
            pulled = pull(repo_digest, progress=progress)
        except DlboxError as exc:  # gone from the registry, refused, unreachable: the next digest, or none
            failures.append(exc.message)
            if exc.code == "signature_refused":
                refused = refused or exc
            continue
        if pulled["id"] != image_id:  # the digest pins the content: this is never expected
            raise DlboxError(f"{what}: {repo_digest} brought {pulled['id'][:19]}, not {image_id[:19]}",
                             code="lock_mismatch")
        return image_id
    if refused is not None:  # the signature policy refused it: never fall back to anything else
        raise DlboxError(f"{what}: {refused.message}", code="signature_refused")
    if failures:
        progress.step(f"{what}: could not pull it ({failures[-1]})")
    return None
