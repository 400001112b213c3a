"""`dlbox reproduce`: the same command and params on the exact image: pulled by its recorded repository
digest if the engine lacks it, else rebuilt from its lock."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dlbox import config, redact
from dlbox.build import images
from dlbox.build import lock as locks
from dlbox.spec import model as specs
from dlbox.errors import DlboxError
from dlbox.progress import Progress
from dlbox.supply import distribute


def image_for(record: dict, progress: Progress) -> str:
    """The recorded image ID if the engine still has it, else the same image pulled by a recorded repository
    digest, else a rebuild whose lock hash must match."""
    if distribute.ensure(record["image_id"], record.get("repo_digests"), progress, f"run {record['id']}"):
        return record["image_id"]
    if not (record.get("lock") and record.get("spec")):
        raise DlboxError(f"run {record['id']}: its image {record['image_id'][:19]} is gone and the run kept no "
                         "lock and spec to rebuild it from", code="not_found")
    lock = locks.parse_text(record["lock"], source=f"run {record['id']}'s lock")
    if lock.hash != record["lock_hash"]:  # the kept lock is not the one the run's image was labelled with
        raise DlboxError(f"run {record['id']}: its kept lock hashes to {lock.hash[:12]}, not the recorded "
                         f"{(record['lock_hash'] or '-')[:12]}; refusing to rebuild from it", code="lock_mismatch")
    spec = specs.parse(record["spec"], source=f"run {record['id']}'s spec")
    progress.step(f"image {record['image_id'][:19]} is gone; rebuilding it from the run's lock {lock.hash[:12]}")
    project = Path(record.get("project_dir") or ".")
    if spec.code and not (project / spec.code.src).is_dir():
        progress.step("the run's code directory is gone; rebuilding without it")
        spec = specs.Spec.model_validate({**spec.model_dump(mode="json"), "code": None})
    with tempfile.TemporaryDirectory(prefix="dlbox-reproduce-") as tmp:
        lock_file = Path(tmp) / "dlbox.lock"
        pinned = lock.model_copy(update={"spec_hash": spec.environment_hash()})
        locks.write(pinned, lock_file)
        try:
            result = images.build(spec, project_dir=project, lock_file=lock_file, require_lock=True,
                                  ca_bundle=config.default_ca_bundle(), progress=progress)
        except DlboxError as exc:
            if exc.code != "lock_mismatch":
                raise
            detail = exc.message.partition("(")[2].partition(")")[0]
            raise DlboxError(f"run {record['id']}: the rebuilt image does not match the run's lock "
                             f"{lock.hash[:12]} ({detail}); refusing to run it", code="lock_mismatch") from None
    if result.lock.hash != lock.hash:  # build() enforces this; the job must never run on another set
        raise DlboxError(f"run {record['id']}: the rebuilt lock {result.lock.hash[:12]} is not the run's "
                         f"{lock.hash[:12]}; refusing to run it", code="lock_mismatch")
    progress.step(f"rebuilt {result.id[:19]}; its lock hash matches the run's ({lock.hash[:12]})")
    return result.id


def request_for(record: dict, progress: Progress, code_kept=None) -> dict:
    """The job request that runs `record` again, with the recorded code snapshot (never the folder's
    current state). code_kept(hash) -> bool says whether the service still has it."""
    held_back = [k for k, v in record["params"].items() if redact.MARK in str(v)] + \
        [w for w in record["command"] if f"{redact.MARK}@" in str(w)]
    if held_back:  # records never show secrets, and a finished job's are not kept: the user gives them again
        raise DlboxError(f"run {record['id']}: its secrets are not kept ({', '.join(held_back)}); "
                         "submit it again with `dlbox run`, giving them", code="not_reproducible")
    code = record.get("code")
    if code and code_kept is not None and not code_kept(code["hash"]):
        raise DlboxError(f"run {record['id']}: its code snapshot {code['hash'][:12]} was deleted (dlbox gc removes "
                         "only unreferenced ones); it cannot be run again with the same code", code="not_reproducible")
    mounts = [f"{m['source']}:{m['target']}{':ro' if m['read_only'] else ''}" for m in record["mounts"]]
    memory = record["resources"]["memory"]
    gpus = record["resources"]["gpus"]
    return {
        "image": image_for(record, progress), "command": record["command"], "params": record["params"],
        "name": f"reproduce-{record['id']}", "mounts": mounts, "cpus": record["resources"]["cpus"],
        "memory": str(memory) if memory else None, "project_dir": record.get("project_dir"),
        "git_commit": record.get("git_commit"), "git_dirty": record.get("git_dirty", False),
        "git_diff": record.get("git_diff"), "reproduces": record["id"],
        "gpus": ",".join(gpus) if gpus else None, "workspace": record.get("workspace"),
        "workdir": record.get("workdir"),
        "code_hash": code["hash"] if code else None, "code_dest": code["dest"] if code else None,
    }


def reproduce(where, run_id: str, progress: Progress) -> tuple[dict, dict]:
    """Submit run `run_id` again through `where` (a CLI backend): (the record, the new job)."""
    from dlbox.errors import NotFound

    def kept(snapshot_hash: str) -> bool:
        try:
            where.code_manifest(snapshot_hash)
            return True
        except NotFound:
            return False

    record = where.run(run_id)
    body = request_for(record, progress, code_kept=kept)
    return record, where.submit(body)
