"""What the API answers, as pydantic models: /openapi.json documents every answer, and FastAPI
checks each one against its model on the way out.

The models describe the JSON the routes have always sent (runs/records.job_json, workspaces'
describe(), accounts' user_json and token_json, build/images' summary): same names, same values.
Every model allows extra fields, so a field added where the JSON is made reaches clients before it
is documented here; numbers that may be whole or not are `int | float`, so 2 stays 2 (not 2.0).
"""

from __future__ import annotations

from typing import Any

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


class ImageRemoved(Answer):
    removed: str
    id: str


class BuiltImage(Answer):
    image: str
    id: str
    lock_hash: str | None
    lock_file: str
    tags: list[str]
