"""Pipelines over HTTP: submit a commit's snapshot (intent only), list, show, cancel, logs, report files;
the hooks: projects a signed push webhook may run, and the webhook itself (GitHub's format)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from dlbox.server import models as m
from dlbox.server import pipeline_actions as actions
from dlbox.server.deps import Caller, Ctx, Limit, Offset, page

router = APIRouter(prefix="/api", responses=m.COMMON)
PLAIN = {200: {"description": "the stage's log, as text", "content": {"text/plain": {"schema": {"type": "string"}}}}}
FILE = {200: {"description": "a report file (HTML, Markdown or PNG)",
              "content": {"text/html": {}, "text/markdown": {}, "image/png": {}}}}
MEDIA = {"html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8", "png": "image/png"}


class NewPipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="the commit's code snapshot, sent first")
    ref: str | None = Field(default=None, max_length=256)
    git_commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40,64}$")
    author: str | None = Field(default=None, max_length=256)
    message: str | None = Field(default=None, max_length=1000)
    trigger: str = Field(default="cli", pattern=r"^(cli|hook|ci)$")


class NewProject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=201, description="the repository's full name, as GitHub sends it: owner/name")
    repo: str = Field(max_length=4096, description="a clone on the server holding the pushed commits")
    owner: str | None = Field(default=None, max_length=64, description="whose pipelines they are (default: you)")


@router.post("/pipelines", status_code=201, response_model=m.Pipeline, responses=m.errors(400, 404))
def submit(body: NewPipeline, who: Caller, ctx: Ctx) -> dict:
    """Record a pipeline of a commit's code snapshot; the service's loop runs its stages."""
    return actions.submit(ctx, who, body)


@router.get("/pipelines", response_model=list[m.Pipeline])
def list_pipelines(request: Request, who: Caller, ctx: Ctx, limit: Limit = 100, offset: Offset = 0):
    rows, more = actions.listing(ctx, who, limit=limit, offset=offset)
    return page(request, rows, more=more, limit=limit, offset=offset)


@router.get("/pipelines/{pipeline_id}", response_model=m.Pipeline, responses=m.errors(404))
def show(pipeline_id: str, who: Caller, ctx: Ctx) -> dict:
    return actions.pipeline_json(ctx.store, actions.get(ctx, who, pipeline_id))


@router.post("/pipelines/{pipeline_id}/cancel", response_model=m.Pipeline, responses=m.errors(404))
def cancel(pipeline_id: str, who: Caller, ctx: Ctx) -> dict:
    return actions.cancel(ctx, who, pipeline_id)


@router.get("/pipelines/{pipeline_id}/logs", responses={**m.errors(400, 404), **PLAIN})
def logs(pipeline_id: str, who: Caller, ctx: Ctx,
         stage: Annotated[str | None, Query(max_length=16, description="one stage's log only")] = None):
    return PlainTextResponse(actions.logs(ctx, who, pipeline_id, stage))


@router.get("/pipelines/{pipeline_id}/report/{name}", responses={**m.errors(404), **FILE})
def report_file(pipeline_id: str, name: str, who: Caller, ctx: Ctx):
    path = actions.report_file(ctx, who, pipeline_id, name)
    return FileResponse(path, media_type=MEDIA[path.suffix.lstrip(".")],
                        headers={"Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"})


@router.post("/hooks/projects", status_code=201, response_model=m.HookProject, responses=m.errors(400, 403))
def add_project(body: NewProject, who: Caller, ctx: Ctx) -> dict:
    return actions.add_project(ctx, who, name=body.name, repo=body.repo, owner=body.owner)


@router.post("/hooks/git", response_model=m.WebhookAnswer, responses=m.errors(400, 404))
async def git_webhook(request: Request, ctx: Ctx,
                      x_hub_signature_256: Annotated[str | None, Header(max_length=200)] = None,
                      x_github_event: Annotated[str | None, Header(max_length=64)] = None) -> dict:
    """A GitHub push webhook, signed with the project's secret (X-Hub-Signature-256); no token. A wrong or
    missing signature is 401 and nothing runs."""
    from starlette.concurrency import run_in_threadpool

    body = await request.body()  # bodylimit has bounded it (1 MiB)
    return await run_in_threadpool(actions.git_webhook, ctx, body, x_hub_signature_256, x_github_event)
