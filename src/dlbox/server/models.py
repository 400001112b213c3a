"""What the API answers, as pydantic models: /openapi.json documents every answer, and FastAPI
checks each one against its model on the way out.

The models describe the JSON the routes have always sent (runs/records.job_json, workspaces'
describe(), accounts' user_json and token_json, build/images' summary): same names, same values.
Every model allows extra fields, so a field added where the JSON is made reaches clients before it
is documented here; numbers that may be whole or not are `int | float`, so 2 stays 2 (not 2.0).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Number = int | float


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- errors ---------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="what went wrong, for programs: not_found, forbidden, invalid, ...")
    message: str = Field(description="what went wrong, for people")


class ErrorBody(BaseModel):
    """Every error answer: {"error": {"code": ..., "message": ...}}."""

    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for routes that may answer these statuses with an error body."""
    return {status: {"model": ErrorBody, "description": DESCRIPTIONS.get(status, "an error")} for status in statuses}


DESCRIPTIONS = {
    400: "the request is wrong (code invalid, or the domain's own)",
    401: "no valid API token (server mode)",
    403: "not allowed: not an admin, over quota, or a mount outside the roots",
    404: "no such thing, or not yours",
    409: "it conflicts with what is there (exists, port in use), or the engine refused",
    413: "the request body is too large",
    422: "the request does not match its schema (code invalid)",
    429: "too many log followers",
    500: "the engine or the host failed",
    502: "the engine answered wrongly",
    503: "the container engine is unreachable",
}
# what every route may answer: the caller is checked first, and the request body or query is checked
COMMON = errors(401, 422)
PLAIN_TEXT = {"description": "the job's output, as text", "content": {"text/plain": {"schema": {"type": "string"}}}}
ENGINE = errors(400, 403, 404, 409, 500, 502, 503)  # routes that ask the container engine


# --- health, accounts -----------------------------------------------------------------------------


class Health(Answer):
    ok: bool
    version: str
    mode: str = Field(description="local (the owner's socket) or server")
    # the local socket's owner only
    pid: int | None = None
    loop_error: str | None = None
    job_errors: Any = None
    engine_events: Any = None
    capacity: dict[str, Any] | None = None


class User(Answer):
    name: str
    role: str = Field(description="admin or user")
    quota: dict[str, Any]
    created_at: str | None


class NewUserAnswer(User):
    token: str = Field(description="the user's first API token, shown once")
    token_id: str


class Me(Answer):
    name: str
    role: str
    quota: dict[str, Any]
    held: dict[str, Number] = Field(description="what the caller holds now: workspaces, cpus, memory, gpus")


class Removed(Answer):
    name: str
    removed: bool


class Token(Answer):
    id: str
    user: str
    name: str | None
    state: str = Field(description="active, expired or revoked")
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None


class NewTokenAnswer(Token):
    token: str = Field(description="the token itself, shown once")


# --- jobs and runs --------------------------------------------------------------------------------


class JobResources(Answer):
    cpus: Number | None = None
    memory: int | None = None
    gpus: list[Any] | None = None
    gpu_request: Any = None


class CodeSnapshot(Answer):
    """A code snapshot: its content hash, size, and (on a job) where the job saw it, read-only."""

    hash: str
    files: int | None
    bytes: int | None
    dest: str | None = None


class SnapshotEntry(Answer):
    path: str
    mode: str = Field(description="644, 755 or link")
    size: int | None = None
    sha256: str | None = None
    target: str | None = None


class SnapshotManifest(Answer):
    hash: str
    files: int
    bytes: int
    entries: list[SnapshotEntry]


class SnapshotStored(Answer):
    hash: str
    files: int
    bytes: int
    new: bool = Field(description="whether this upload wrote it (false: the server had that content)")


class Garbage(Answer):
    removed: list[str]
    freed_bytes: int


class Job(Answer):
    id: str
    name: str | None
    user: str
    state: str
    reason: str | None
    command: list[Any]
    params: dict[str, Any]
    image: str | None
    image_id: str | None
    repo_digests: list[str] = Field(default=[], description="the image's REPO@sha256:... when the job was submitted")
    lock_hash: str | None
    spec_hash: str | None
    git_commit: str | None
    git_dirty: bool | None
    exit_code: int | None
    peak_memory: int | None
    resources: JobResources
    mounts: list[Any] | None
    workdir: str | None
    workspace: str | None
    submitted_at: str | None
    started_at: str | None
    ended_at: str | None
    reproduces: str | None
    code: CodeSnapshot | None = None


class RunSummary(Job):
    metrics: dict[str, Number] = Field(description="the last value of each metric")


class MetricPoint(Answer):
    step: int | None
    name: str
    value: Number


class Run(RunSummary):
    metric_history: list[MetricPoint]
    env: dict[str, Any]
    git_diff: str | None
    project_dir: str | None
    artifacts: list[str]
    artifact_links: Any
    artifact_bytes: int | None
    artifacts_dir: str
    notes: list[Any]
    lock: str | None
    spec: str | None


# --- workspaces -----------------------------------------------------------------------------------


class Workspace(Answer):
    """A workspace as `dlbox ls --json` shows it (fields other than name may be missing in a stored
    row the engine has not described yet)."""

    name: str
    state: str | None = None
    owner: str | None = None
    image: str | None = None
    image_id: str | None = None
    container_id: str | None = None
    jupyter: dict[str, Any] | None = None
    ssh: dict[str, Any] | None = None
    mounts: list[Any] | None = None
    volume: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    health: str | None = None
    created: str | None = None
    oom: dict[str, Any] | None = None
    idle_stop: int | None = Field(default=None, description="seconds idle before dlbox stops it (0: never; "
                                  "none: the server's default)")
    stopped: dict[str, Any] | None = Field(default=None, description="why dlbox stopped it: reason, idle_for_s, "
                                           "text ('stopped: idle for 2h')")


class WorkspaceRemoved(Removed):
    data: str = Field(description="what became of its data volume")


class WorkspaceToken(Answer):
    name: str
    token: str
    url: str
    rotated: bool


# --- images ---------------------------------------------------------------------------------------


class Image(Answer):
    ref: str
    id: str
    name: str | None = None
    tags: list[str] = []
    lock_hash: str | None = None
    from_: str | None = Field(default=None, alias="from")
    spec_hash: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    dlbox_version: str | None = None
    services: list[str] = []
    user: str | None = None
    uid: str | None = None
    size: int | None = None
    created: str | None = None


class ScanSummary(Answer):
    """The last scan kept with an image (`dlbox scan`)."""

    scanned_at: str
    advisories: str
    counts: dict[str, int]
    findings: int
    ids: list[str]
    os_updates: int
    os_error: str | None = None
    gate: dict[str, Any] | None = None  # fail_on, failed, at_or_above: the scan's --fail-on verdict


class ImageDetail(Image):
    lock: dict[str, Any]
    scan: ScanSummary | None = None


class Finding(Answer):
    id: str
    aliases: list[str]
    package: str
    version: str
    severity: str
    score: Number | None = None
    fixed: list[str] = []
    published: str | None = None
    modified: str | None = None


class OsUpdate(Answer):
    package: str
    installed: str
    fixed: str
    source: str
    cves: list[str] = []


class ScanPython(Answer):
    packages: int
    findings: list[Finding]


class ScanOs(Answer):
    packages: int
    suite: str | None = None
    index: str | None = None
    updates: list[OsUpdate]
    error: str | None = None
    note: str | None = None


class ScanGate(Answer):
    fail_on: str | None = None
    failed: bool
    at_or_above: int


class ScanResult(Answer):
    """`dlbox scan`: Python findings (OSV), OS security updates (the Debian security suite), the gate."""

    image: str
    id: str | None = None
    sbom: str | None = None
    scanned_at: str
    advisories: dict[str, Any]
    python: ScanPython
    os: ScanOs
    counts: dict[str, int]
    gate: ScanGate
    seconds: Number


class Sbom(Answer):
    """`dlbox sbom`: a CycloneDX document, as text in the named format."""

    format: str
    document: str


class Drift(Answer):
    kind: str
    name: str
    locked: str | None
    found: str | None


class ImageVerify(Answer):
    ok: bool
    image: str
    id: str
    lock_hash: str | None
    drift: list[Drift]


class UserPackage(Answer):
    name: str
    version: str
    locked: str | None  # the image's locked version of the same name, if it has one


class WorkspaceVerify(Answer):
    """A workspace's user-installed packages (in its HOME volume); `ok` false: there are some."""
    ok: bool
    workspace: str
    image: str | None
    lock_hash: str | None
    dir: str
    packages: list[UserPackage]


class ImageRemoved(Answer):
    removed: str
    id: str


class PruneKept(Answer):
    id: str | None = Field(description="the image ID (in a registry: its config digest; none for an index)")
    digest: str | None = Field(default=None, description="in a registry: the manifest's digest")
    ref: str
    name: str
    created: str | None = None
    tags: list[str]
    reasons: list[str]


class PruneRemoved(PruneKept):
    removed: bool
    errors: list[str]


class PruneResult(Answer):
    """`dlbox images prune`: what stays (and why), what goes (or would, with dry_run)."""

    keep: int
    name: str | None
    registry: str | None = Field(default=None, description="HOST:PORT[/PROJECT] pruned; none: the engine")
    dry_run: bool
    kept: list[PruneKept]
    remove: list[PruneRemoved]
    failed: int


class BuiltImage(Answer):
    image: str
    id: str
    lock_hash: str | None
    lock_file: str
    tags: list[str]


# --- the model registry ---------------------------------------------------------------------------


class ModelSummary(Answer):
    owner: str
    name: str
    shared: bool = Field(description="an admin let every user see and serve it")
    versions: list[int] = Field(description="the version numbers kept (a deleted one's number is never reused)")
    latest: int | None
    aliases: dict[str, int] = Field(description="alias -> version")
    created_at: str | None


class TensorInfo(Answer):
    name: str
    dtype: str = Field(description="as TF Serving names it: DT_FLOAT, DT_INT64, ...")
    shape: list[int] | None = Field(description="-1 for an unknown size; null for an unknown rank")


class SignatureDef(Answer):
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


class ModelSignature(Answer):
    tags: list[str]
    signatures: dict[str, SignatureDef]


class ModelVersion(Answer):
    owner: str
    name: str
    version: int
    files: str = Field(description="the version's read-only, content-addressed folder on the server")
    files_hash: str
    files_bytes: int
    path: str = Field(description="where in the run's artifacts it came from")
    run_id: str
    image_id: str
    repo_digests: list[str] = Field(default=[], description="where its image can be pulled by digest")
    lock_hash: str | None
    git_commit: str | None
    git_dirty: bool
    code_hash: str | None
    metrics: dict[str, Number] = Field(description="the run's last value of each metric")
    signature: ModelSignature
    registered_by: str
    registered_at: str | None
    aliases: list[str]
    verdict: Literal["blessed", "rejected"] | None = Field(
        default=None, description="a pipeline's candidate: its gate's verdict; null: registered by hand")
    verdict_detail: dict[str, Any] | None = Field(default=None, description="the gate's verdict, metric by metric")
    pipeline_id: str | None = None


class AliasMove(Answer):
    alias: str
    from_version: int | None = Field(description="null: the alias was new")
    to_version: int | None = Field(description="null: the alias was deleted")
    by: str
    at: str | None


class ModelDetail(ModelSummary):
    version_details: list[ModelVersion]
    history: list[AliasMove]


class AliasSet(Answer):
    owner: str
    name: str
    alias: str
    version: int | None = Field(description="null: deleted")
    previous: int | None


class VersionRemoved(Answer):
    owner: str
    name: str
    version: int
    removed: bool
    aliases: list[str] = Field(description="the aliases that pointed at it, deleted with it")


# --- pipelines ------------------------------------------------------------------------------------


class PipelineStage(Answer):
    name: Literal["build", "test", "train", "evaluate", "gate", "register", "deploy", "report"]
    state: Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
    reason: str | None = Field(description="why it ended so (a failed stage's reason stops the pipeline)")
    runs: list[str] = Field(description="the runs (jobs) it made")
    result: dict[str, Any] | None
    attempts: int = Field(description="more than 1 only for a build the service was stopped in")
    started_at: str | None
    ended_at: str | None
    duration: Number | None = Field(description="seconds, so far while it runs")


class Pipeline(Answer):
    id: str
    user: str
    state: Literal["queued", "running", "promoted", "rejected", "failed", "cancelled"]
    reason: str | None
    ref: str | None
    git_commit: str | None
    author: str | None
    message: str | None
    code_hash: str
    trigger: str
    image_id: str | None
    lock_hash: str | None
    model: str | None
    model_version: int | None
    champion_version: int | None = Field(description="the champion the candidate was gated against")
    verdict: dict[str, Any] | None = Field(description="the gate's verdict, metric by metric (see docs/pipelines.md)")
    cancel_requested: bool
    submitted_at: str | None
    started_at: str | None
    ended_at: str | None
    exit_code: int | None = Field(description="what `dlbox pipeline run --follow` exits with: 0 promoted, "
                                              "1 failed or cancelled, 3 rejected; null while it runs")
    report: bool = Field(description="whether the report has been written")
    stages: list[PipelineStage] = []


class HookProject(Answer):
    name: str
    owner: str
    repo: str
    secret: str = Field(description="shown once: give it to GitHub as the webhook's secret")


class WebhookAnswer(Answer):
    ran: bool
    reason: str | None = None
    pipeline: str | None = None
    commit: str | None = None
    new_snapshot: bool | None = None


# --- deployments ----------------------------------------------------------------------------------


class Batching(Answer):
    max: int = Field(description="at most this many requests in one batch")
    timeout_ms: Number = Field(description="how long a batch waits to fill")


class ReplicaState(Answer):
    name: str = Field(description="the replica's container: dlbox-replica-NAME-gG-rI")
    generation: int | None = Field(description="the generation it belongs to (a new one per image moved to)")
    state: str = Field(description="its container's state; missing: none now (the loop starts it again)")
    health: str | None
    restart_count: int


class Deployment(Answer):
    name: str
    owner: str
    model: str = Field(description="the model served; TF Serving's model name in /v1/models/MODEL")
    model_owner: str
    follows: str | None = Field(description="the alias followed (null: pinned versions)")
    pinned: list[int] | None = Field(description="the versions served when no alias is followed")
    state: str = Field(description="the front's state: running, restarting, exited, ...; missing: none now; "
                                   "'no replica running' while none is")
    health: str | None = Field(description="the engine's healthcheck: starting, healthy, unhealthy")
    labels: dict[str, int] = Field(description="label -> the version it points to, as last set")
    versions: list[int] = Field(description="the versions the container holds (loaded or not)")
    serving: list[int] = Field(description="the versions the server keeps loaded")
    restart_count: int = Field(description="the engine's restarts of the front and replicas (RestartCount)")
    recreated: int = Field(description="containers dlbox started again (gone, or dead beyond the restart policy)")
    restarts: int = Field(description="restart_count + recreated")
    last_error: str | None
    image_id: str | None
    repo_digests: list[str] = Field(default=[], description="the image's REPO@sha256:..., by which an engine "
                                    "that lacks it pulls it")
    rest_url: str
    predict_url: str
    grpc_target: str | None
    host: str
    port: int
    grpc_port: int | None
    memory: int | None
    replicas: int = Field(description="serving containers behind the front")
    generation: int | None = Field(default=None, description="the replicas' generation serving (or moved to)")
    moving_from: int | None = Field(default=None, description="the generation still serving while a move to "
                                                              "another image's replicas is under way")
    replica_states: list[ReplicaState] = Field(default_factory=list)
    batching: Batching | None
    desired: str
    created_at: str | None
    updated_at: str | None


class DeploymentRemoved(Answer):
    name: str
    removed: bool
