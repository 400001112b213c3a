"""What the CLI's commands act on: one interface, two implementations.

`ServiceBackend` speaks the HTTP API, to the team server at DLBOX_URL or to this machine's
background service over its Unix socket (cli/client.py chooses). `LocalBackend` is the same
interface on the engine's own machine: image and workspace operations run here, in the CLI
process, through the same domain functions the server's routes call (so builds and workspace
starts show their progress on this terminal); everything else still goes through the service.

A command calls `backend()` once for its operation and prints the answer; it never asks
where it runs. The answers are the API's JSON documents, alike from both.

Imports stay inside methods: `dlbox --help` loads this module's users but must not pay for
the Docker SDK, pydantic or Rich.
"""

from __future__ import annotations

import re
from pathlib import Path

from dlbox.errors import DlboxError, UsageError

JOB_ENDED = ("succeeded", "failed", "cancelled", "oom-killed", "lost")


def backend() -> ServiceBackend:
    """The team server's API when DLBOX_URL is set, else this machine."""
    from dlbox import config

    return ServiceBackend() if config.remote_url() else LocalBackend()


def build_inputs(spec_file: Path | None, preset: str | None, tag: str, ca_bundle: str | None):
    """(spec, project directory, lock file, CA bundle path) of a local build, the flags checked."""
    from dlbox import config
    from dlbox.build.images import load_source

    spec, project_dir, lock_file = load_source(spec_file, preset)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise UsageError(f"--tag: {tag!r} is not a valid tag (letters, digits, '_', '.', '-')")
    if ca_bundle == "none":
        ca_path = None
    elif ca_bundle:
        ca_path = Path(ca_bundle)
        if not ca_path.is_file():
            raise UsageError(f"--ca-bundle: no file at {ca_bundle} (or 'none')")
    else:
        ca_path = config.default_ca_bundle()
    return spec, project_dir, lock_file, ca_path


def _path_part(text: str) -> str:
    """An id as one URL path segment: nothing that would make it another route."""
    if not re.fullmatch(r"[A-Za-z0-9]{1,32}", text or ""):
        raise UsageError(f"{str(text)[:40]!r} is not a pipeline id (see `dlbox pipeline ls`)")
    return text


class ServiceBackend:
    """The dlbox HTTP API (the team server's, or the local service's)."""

    remote = True  # paths in answers (a lock file, say) are the server's, not this machine's

    def _call(self, method: str, path: str, **kwargs):
        from dlbox.cli import client

        return client.call(method, path, **kwargs)

    def _stream(self, path: str, params: dict):
        from dlbox.cli import client

        yield from client.stream(path, params)

    def _local_only(self, what: str):
        raise UsageError(f"{what} works on the engine's own machine only; unset DLBOX_URL (or use the dashboard)")

    # --- images

    def build(self, spec_file: Path | None, preset: str | None, *, update_lock: bool, no_cache: bool,
              ca_bundle: str | None, tag: str) -> dict:
        if spec_file or not preset:
            raise UsageError("against a server (DLBOX_URL), build a --preset; spec files build locally")
        return self._call("POST", "/api/images", json={"preset": preset, "tag": tag})

    def images(self, *, show_all: bool, limit: int = 100, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/images", params={"all": show_all, "limit": limit, "offset": offset})

    def inspect(self, image: str) -> dict:
        return self._call("GET", f"/api/images/{image}")

    def verify(self, image: str) -> dict:
        return self._call("GET", f"/api/images/{image}/verify")

    def verify_workspace(self, name: str) -> dict:
        """Packages the workspace's user installed beyond its image's lock."""
        return self._call("GET", f"/api/workspaces/{name}/verify")

    def rmi(self, image: str, *, force: bool) -> dict:
        return self._call("DELETE", f"/api/images/{image}", params={"force": force})

    def prune_images(self, *, keep: int, name: str | None, dry_run: bool, registry: str | None = None) -> dict:
        """Here too through the service: what needs an image is in its store (and a registry is pruned with
        the service's own credentials, the ones its pulls by digest use)."""
        return self._call("POST", "/api/images/prune",
                          json={"keep": keep, "name": name, "dry_run": dry_run, "registry": registry})

    def scan(self, image: str | None, *, sbom: Path | None, advisories: str | None, fail_on: str | None) -> dict:
        if sbom is not None:  # the file is on this machine: read and scanned here
            from dlbox.supply import scan

            return scan.scan(sbom=sbom, advisories=advisories, fail_on=fail_on)
        if image is None:
            raise UsageError("give either an IMAGE or --sbom FILE")
        return self._call("POST", f"/api/images/{image}/scan", json={"advisories": advisories, "fail_on": fail_on})

    def sbom(self, image: str, *, fmt: str) -> str:
        return self._call("GET", f"/api/images/{image}/sbom", params={"format": fmt})["document"]

    def login(self, registry: str, *, username: str, password: str) -> dict:
        self._local_only("login")

    def push(self, image: str, registry: str, *, force: bool, sign_key: Path | None) -> dict:
        self._local_only("push")

    def pull(self, ref: str, *, verify_key: Path | None) -> dict:
        self._local_only("pull")

    # --- workspaces

    def up(self, name: str, *, spec_file, preset, image, jupyter, ssh, ssh_key, mounts, memory, cpus, gpus,
           share_gpus, shm_size, pids, host, jupyter_port, ssh_port, idle_stop=None) -> dict:
        if spec_file or host != "127.0.0.1":
            raise UsageError("against a server (DLBOX_URL), use --preset or --image; the server chooses the host")
        key = None
        if ssh:
            from dlbox.workspaces.manage import UpRequest, public_key

            key = public_key(UpRequest(name=name, ssh_key=ssh_key))[0]
        return self._call("POST", "/api/workspaces", json={
            "name": name, "preset": preset, "image": image, "jupyter": jupyter, "ssh": ssh, "ssh_public_key": key,
            "mounts": list(mounts), "memory": memory, "cpus": cpus, "gpus": gpus, "shm_size": shm_size, "pids": pids,
            "idle_stop": idle_stop})

    def workspaces(self, *, limit: int = 1000, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/workspaces", params={"limit": limit, "offset": offset})

    def lifecycle(self, action: str, name: str) -> dict:
        """stop, start or restart."""
        return self._call("POST", f"/api/workspaces/{name}/{action}")

    def rm(self, name: str, *, purge_data: bool) -> dict:
        return self._call("DELETE", f"/api/workspaces/{name}", params={"purge_data": purge_data})

    def logs(self, target: str, *, follow: bool, tail: str):
        """A workspace's or a job's output, as chunks of bytes (a server has jobs' logs only)."""
        return self._stream(f"/api/jobs/{target}/logs", {"follow": follow})

    def jupyter(self, name: str) -> dict | None:
        """Workspace NAME's Jupyter server, with its token and URL; None when it runs none."""
        return self._call("GET", f"/api/workspaces/{name}/token")

    def token(self, name: str, *, rotate: bool) -> dict:
        """{name, token, url, rotated}."""
        return self._call("POST" if rotate else "GET", f"/api/workspaces/{name}/token")

    def exec(self, name: str, command: list[str]) -> int:
        self._local_only("exec")

    def ssh_target(self, name: str) -> dict:
        """The ssh_config written for SSH workspaces, checked to have NAME."""
        self._local_only("ssh")

    def ssh_config(self) -> dict:
        self._local_only("ssh-config")

    # --- jobs and runs

    def jobs(self, *, show_all: bool, limit: int, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/jobs", params={"all": show_all, "limit": limit, "offset": offset})

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/api/jobs/{job_id}")

    def wait(self, job_id: str, *, timeout: float | None) -> dict:
        """The job once it has ended; DlboxError after `timeout` seconds."""
        import time

        deadline = time.monotonic() + timeout if timeout is not None else None
        while True:
            job = self.job(job_id)
            if job["state"] in JOB_ENDED:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise DlboxError(f"job {job_id} is still {job['state']} after {timeout:g}s")
            time.sleep(0.2)

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/api/jobs/{job_id}/cancel")

    def job_image(self, spec_file: Path | None, preset: str | None, image: str | None, workspace: str | None):
        """(image ref, project dir, the spec's job defaults or None) for `dlbox run`: on a server, the
        image must be there already."""
        if workspace:
            return self._call("GET", f"/api/workspaces/{workspace}")["image_id"], Path.cwd(), None, None
        if image or preset:
            return image or f"dlbox/{preset}:latest", Path.cwd(), None, None
        raise UsageError("against a server (DLBOX_URL), give --preset, --image or --workspace")

    def submit(self, body: dict) -> dict:
        return self._call("POST", "/api/jobs", json=body)

    def submit_with_code(self, body: dict, snap) -> tuple[dict, dict]:
        """Queue `body` running snapshot `snap`: (the job, what put_code answers). One request when
        the server holds the snapshot already; when it answers snapshot_missing, the tar is sent and
        the job asked for again."""
        body = {**body, "code_hash": snap.hash}
        try:
            return self.submit(body), {"hash": snap.hash, "files": snap.files, "bytes": snap.bytes, "sent": 0}
        except DlboxError as exc:
            if exc.code != "snapshot_missing":
                raise
        sent = self.upload_code(snap)
        return self.submit(body), sent

    # --- code snapshots

    def put_code(self, snap) -> dict:
        """Make sure the service has snapshot `snap` (a dlbox.snapshots.Snapshot): sent as a tar only
        when it answers that it lacks that hash. {"hash", "files", "bytes", "sent": bytes sent}."""
        from dlbox.errors import NotFound

        try:
            self._call("GET", f"/api/snapshots/{snap.hash}")
            return {"hash": snap.hash, "files": snap.files, "bytes": snap.bytes, "sent": 0}
        except NotFound:
            return self.upload_code(snap)

    def upload_code(self, snap) -> dict:
        from dlbox import snapshots

        data = snapshots.to_tar(snap=snap)
        self._call("PUT", f"/api/snapshots/{snap.hash}", data=data, content_type="application/x-tar")
        return {"hash": snap.hash, "files": snap.files, "bytes": snap.bytes, "sent": len(data)}

    def code_manifest(self, snapshot_hash: str) -> dict:
        return self._call("GET", f"/api/snapshots/{snapshot_hash}")

    def code_tar(self, snapshot_hash: str) -> bytes:
        return self._call("GET", f"/api/snapshots/{snapshot_hash}/tar", raw=True)

    def gc(self) -> dict:
        return self._call("POST", "/api/gc")

    def export_code(self, run_id: str, dest: Path) -> dict:
        """Write the code snapshot run `run_id` ran into `dest`, checked as an upload is."""
        from dlbox import snapshots

        code = self.run(run_id).get("code")
        if not code:
            raise DlboxError(f"run {run_id} has no code snapshot (it ran with --no-code, or before snapshots)",
                             code="not_found")
        files = snapshots.export(code["hash"], self.code_tar(code["hash"]), dest)
        return {"run": run_id, "hash": code["hash"], "files": files, "directory": str(dest)}

    def runs(self, *, limit: int, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/runs", params={"limit": limit, "offset": offset})

    def run(self, run_id: str) -> dict:
        return self._call("GET", f"/api/runs/{run_id}")

    # --- the model registry (the service does it all: it holds the runs' artifacts and the files)

    def models(self, *, limit: int, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/models", params={"limit": limit, "offset": offset})

    def register_model(self, name: str, *, run: str, path: str) -> dict:
        return self._call("POST", f"/api/models/{name}/versions", json={"run": run, "path": path})

    def model(self, ref) -> dict:
        """A version (NAME:V, NAME@ALIAS), or the model with all its versions (NAME); `ref` a models.refs.Ref."""
        params = {"owner": ref.owner} if ref.owner else None
        if ref.version is not None:
            return self._call("GET", f"/api/models/{ref.name}/versions/{ref.version}", params=params)
        if ref.alias is not None:
            return self._call("GET", f"/api/models/{ref.name}/aliases/{ref.alias}", params=params)
        return self._call("GET", f"/api/models/{ref.name}", params=params)

    def set_alias(self, name: str, alias: str, version: int | None, *, owner: str | None) -> dict:
        params = {"owner": owner} if owner else None
        if version is None:
            return self._call("DELETE", f"/api/models/{name}/aliases/{alias}", params=params)
        return self._call("PUT", f"/api/models/{name}/aliases/{alias}", json={"version": version}, params=params)

    def model_history(self, name: str, *, owner: str | None, limit: int = 100, offset: int = 0) -> list[dict]:
        params = {"limit": limit, "offset": offset} | ({"owner": owner} if owner else {})
        return self._call("GET", f"/api/models/{name}/history", params=params)

    def remove_model_version(self, name: str, version: int, *, owner: str | None) -> dict:
        return self._call("DELETE", f"/api/models/{name}/versions/{version}",
                          params={"owner": owner} if owner else None)

    def share_model(self, name: str, *, owner: str | None, shared: bool) -> dict:
        return self._call("PUT", f"/api/models/{name}/share", json={"shared": shared},
                          params={"owner": owner} if owner else None)

    # --- pipelines

    def submit_pipeline(self, project: Path, ref: str, *, trigger: str = "cli") -> dict:
        """`git archive REF` of the project as a code snapshot (never the working tree), sent to the service
        (only if it lacks it), and the pipeline's intent recorded. The answer is the pipeline."""
        import tempfile

        from dlbox.pipelines import source

        with tempfile.TemporaryDirectory(prefix="dlbox-pipeline-") as work:
            snap, commit = source.snapshot(project, ref, Path(work) / "tree")
            self.put_code(snap)
        return self._call("POST", "/api/pipelines", json={
            "code_hash": snap.hash, "ref": ref, "git_commit": commit.sha, "author": commit.author,
            "message": commit.message, "trigger": trigger})

    def pipelines(self, *, limit: int, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/pipelines", params={"limit": limit, "offset": offset})

    def pipeline(self, pipeline_id: str) -> dict:
        return self._call("GET", f"/api/pipelines/{_path_part(pipeline_id)}")

    def cancel_pipeline(self, pipeline_id: str) -> dict:
        return self._call("POST", f"/api/pipelines/{_path_part(pipeline_id)}/cancel")

    def pipeline_logs(self, pipeline_id: str, *, stage: str | None) -> bytes:
        params = {"stage": stage} if stage else {}
        return self._call("GET", f"/api/pipelines/{_path_part(pipeline_id)}/logs", params=params, raw=True)

    def pipeline_report(self, pipeline_id: str, dest: Path | None) -> dict:
        """The report's files: on this machine, where the service wrote them; from a server, fetched into
        `dest` (default ./dlbox-report-ID). {"folder", "html", "md", "files"}."""
        found = self.pipeline(pipeline_id)
        if not found["report"]:
            raise DlboxError(f"pipeline {found['id']} has no report yet (state {found['state']})", code="not_finished")
        report_stage = next(s for s in found["stages"] if s["name"] == "report")
        names = (report_stage.get("result") or {}).get("files") or ["report.html", "report.md"]
        folder = dest or Path(f"dlbox-report-{found['id']}")
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if name in ("report.html", "report.md", "curves.png", "confusion.png"):
                data = self._call("GET", f"/api/pipelines/{found['id']}/report/{name}", raw=True)
                (folder / name).write_bytes(data)
        return {"id": found["id"], "folder": str(folder.resolve()), "html": str((folder / "report.html").resolve()),
                "md": str((folder / "report.md").resolve()), "files": sorted(names)}

    def add_hook_project(self, name: str, *, repo: str, owner: str | None) -> dict:
        return self._call("POST", "/api/hooks/projects", json={"name": name, "repo": repo, "owner": owner})

    # --- deployments (the service runs them: it reconciles them and holds the models' files)

    def serve(self, body: dict) -> dict:
        return self._call("POST", "/api/deployments", json=body)

    def deployments(self, *, limit: int = 100, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/deployments", params={"limit": limit, "offset": offset})

    def deployment(self, name: str) -> dict:
        return self._call("GET", f"/api/deployments/{name}")

    def remove_deployment(self, name: str) -> dict:
        return self._call("DELETE", f"/api/deployments/{name}")

    def deployment_logs(self, name: str, *, tail: int) -> str:
        return self._call("GET", f"/api/deployments/{name}/logs", params={"tail": tail}, raw=True).decode(
            "utf-8", errors="replace")

    # --- users and tokens

    def add_user(self, name: str, *, admin: bool, quota: dict) -> dict:
        return self._call("POST", "/api/users", json={"name": name, "admin": admin, "quota": quota})

    def users(self, *, limit: int, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/users", params={"limit": limit, "offset": offset})

    def set_quota(self, name: str, quota: dict) -> dict:
        return self._call("PUT", f"/api/users/{name}/quota", json=quota)

    def remove_user(self, name: str) -> dict:
        return self._call("DELETE", f"/api/users/{name}")

    def create_token(self, *, name: str | None, expires: str, user: str | None) -> dict:
        return self._call("POST", "/api/tokens", json={"name": name, "expires": expires, "user": user})

    def tokens(self, *, show_all: bool, limit: int, offset: int = 0) -> list[dict]:
        return self._call("GET", "/api/tokens", params={"all": show_all, "limit": limit, "offset": offset})

    def revoke_token(self, token_id: str) -> dict:
        return self._call("DELETE", f"/api/tokens/{token_id}")


class LocalBackend(ServiceBackend):
    """This machine: images and workspaces in this process (with progress on the terminal), the
    rest through the local service."""

    remote = False

    # --- images

    def build(self, spec_file, preset, *, update_lock, no_cache, ca_bundle, tag) -> dict:
        spec, project_dir, lock_file, ca_path = build_inputs(spec_file, preset, tag, ca_bundle)
        from dlbox.build import images
        from dlbox.engine import api as engine
        from dlbox.progress import Progress

        engine.client()  # fail fast, before any work, when no engine answers
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with Progress() as progress:
            result = images.build(spec, project_dir=project_dir, lock_file=lock_file, use_lock=not update_lock,
                                  nocache=no_cache, ca_bundle=ca_path, tag=tag, progress=progress)
        return result.to_json()

    def images(self, *, show_all, limit=100, offset=0):
        from dlbox.build import images

        return images.list_images(include_untagged=show_all)[offset:offset + limit]  # as the API pages it

    def inspect(self, image):
        from dlbox.supply import scan

        return scan.inspect(image)

    def verify(self, image):
        from dlbox.build import images

        return images.verify(image)

    def scan(self, image, *, sbom, advisories, fail_on):
        from dlbox.supply import scan

        return scan.scan(image, sbom=sbom, advisories=advisories, fail_on=fail_on)

    def sbom(self, image, *, fmt):
        from dlbox.supply import scan

        return scan.sbom(image, fmt=fmt)

    def login(self, registry, *, username, password):
        from dlbox.engine import registry as engine_registry

        return engine_registry.login(registry, username, password)

    def push(self, image, registry, *, force, sign_key):
        from dlbox.progress import Progress
        from dlbox.supply import distribute

        with Progress() as progress:
            return distribute.push(image, registry, force=force, sign_key=sign_key, progress=progress)

    def pull(self, ref, *, verify_key):
        from dlbox.progress import Progress
        from dlbox.supply import distribute

        with Progress() as progress:
            return distribute.pull(ref, verify_key=verify_key, progress=progress)

    def verify_workspace(self, name):
        from dlbox.workspaces import drift

        return drift.verify(name)

    def rmi(self, image, *, force):
        from dlbox.build import images
        from dlbox.engine import api as engine

        attrs = images.get(image)
        engine.remove_image(image, force=force)
        return {"removed": image, "id": attrs["Id"]}

    # --- workspaces

    def up(self, name, *, spec_file, preset, image, jupyter, ssh, ssh_key, mounts, memory, cpus, gpus, share_gpus,
           shm_size, pids, host, jupyter_port, ssh_port, idle_stop=None):
        from dlbox.engine import api as engine
        from dlbox.progress import Progress
        from dlbox.workspaces import manage as workspaces

        request = workspaces.UpRequest(
            name=name, spec_file=spec_file, preset=preset, image=image, jupyter=jupyter, ssh=ssh, ssh_key=ssh_key,
            mounts=list(mounts), memory=memory, cpus=cpus, gpus=gpus, share_gpus=share_gpus, shm_size=shm_size,
            pids=pids, host=host, jupyter_port=jupyter_port, ssh_port=ssh_port, idle_stop=idle_stop)
        engine.client()
        with Progress() as progress:
            made = workspaces.up(request, progress)
        if made.get("idle_stop"):
            self._call("GET", "/api/health")  # the local service's loop does the idle stop: make sure one runs
        return made

    def workspaces(self, *, limit=1000, offset=0):
        from dlbox.workspaces import manage as workspaces

        return workspaces.ls()[offset:offset + limit]  # as the API pages it

    def lifecycle(self, action, name):
        from dlbox.progress import Progress
        from dlbox.workspaces import manage as workspaces

        with Progress() as progress:
            return getattr(workspaces, action)(name, progress)

    def rm(self, name, *, purge_data):
        from dlbox.workspaces import manage as workspaces

        return workspaces.rm(name, purge_data=purge_data)

    def logs(self, target, *, follow, tail):
        """A workspace's output from the engine; a job's (a hex id no workspace has) from the service."""
        from dlbox.engine import api as engine
        from dlbox.workspaces import manage as workspaces

        attrs = engine.container_attrs(workspaces.container_name(target)) \
            if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", target) else None
        if attrs is None and re.fullmatch(r"[0-9a-f]{4,32}", target):
            return super().logs(target, follow=follow, tail=tail)
        attrs = workspaces._attrs(target)
        return engine.logs(attrs["Id"], follow=follow, tail=int(tail) if tail.isdigit() else "all")

    def jupyter(self, name):
        from dlbox.workspaces import manage as workspaces

        return workspaces.show(name, with_token=True)["jupyter"]

    def token(self, name, *, rotate):
        from dlbox.progress import Progress
        from dlbox.workspaces import manage as workspaces

        if rotate:
            with Progress() as progress:
                ws = workspaces.rotate_token(name, progress)
        else:
            ws = workspaces.show(name, with_token=True)
        if not ws["jupyter"]:
            raise UsageError(f"workspace {name} runs no Jupyter server")
        if "token" not in ws["jupyter"]:
            raise DlboxError(f"workspace {name}'s token is not in this dlbox home; "
                             f"`dlbox token {name} --rotate` makes one")
        return {"name": name, "token": ws["jupyter"]["token"], "url": ws["jupyter"]["url"], "rotated": rotate}

    def pipeline_report(self, pipeline_id, dest):
        """The report where the service wrote it (this machine's dlbox home), or copied to `dest`."""
        if dest is not None:
            return super().pipeline_report(pipeline_id, dest)
        from dlbox.pipelines import report

        found = self.pipeline(pipeline_id)
        if not found["report"]:
            raise DlboxError(f"pipeline {found['id']} has no report yet (state {found['state']})", code="not_finished")
        folder = report.folder(found["id"])
        return {"id": found["id"], "folder": str(folder), "html": str(folder / "report.html"),
                "md": str(folder / "report.md"), "files": sorted(p.name for p in folder.iterdir()
                                                                   if p.name in report.FILES)}

    def put_code(self, snap) -> dict:
        """Store the snapshot in this dlbox home directly (the service reads the same home)."""
        from dlbox import snapshots

        return {"hash": snap.hash, "files": snap.files, "bytes": snap.bytes,
                "sent": snap.bytes if snapshots.store(snap) else 0}

    def submit_with_code(self, body: dict, snap) -> tuple[dict, dict]:
        sent = self.put_code(snap)  # stored here first: the service finds it on its disk
        return self.submit({**body, "code_hash": snap.hash}), sent

    def job_image(self, spec_file, preset, image, workspace):
        """The same, the spec's image built first if it is missing."""
        if image:
            return image, Path.cwd(), None, None
        if workspace:
            from dlbox.workspaces import manage as workspaces

            return workspaces.show(workspace)["image_id"], Path.cwd(), None, None
        from dlbox.build import images  # not for --image: Rich and the spec models cost a `dlbox run` ~0.05 s
        from dlbox.progress import Progress

        spec, project_dir, lock_file = images.load_source(spec_file, preset)
        with Progress() as progress:
            found = images.ensure(spec, project_dir=project_dir, lock_file=lock_file, progress=progress)
        return found["ref"], project_dir, spec.job, spec.code.dest if spec.code else None  # the service pins the exact image ID when it records the job

    def exec(self, name, command):
        from dlbox.engine import api as engine
        from dlbox.workspaces import manage as workspaces

        return engine.exec_stream(workspaces.container_of(name), list(command))

    def ssh_target(self, name):
        import shutil

        from dlbox.workspaces import manage as workspaces

        if shutil.which("ssh") is None:
            raise DlboxError("no ssh client here (apt-get install openssh-client)")
        ws = workspaces.show(name)
        if not ws["ssh"]:
            raise UsageError(f"workspace {name} has no SSH (start it with `dlbox up {name} --ssh`)")
        return workspaces.write_ssh_config()

    def ssh_config(self):
        from dlbox.workspaces import manage as workspaces

        return workspaces.write_ssh_config()
