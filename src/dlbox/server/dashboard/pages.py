"""The web dashboard of `dlbox server`: server-rendered pages over the same functions as the API.

Signing in stores the API token in an HttpOnly, SameSite=Strict cookie, which the API accepts
too, so the page's small script (static/app.js) reads job logs and states from /api/ directly.
Forms POST; each POST must come from a page of this server (Origin or Referer), because
SameSite does not cover other ports of the same host, such as the workspaces' Jupyter servers.
"""

from __future__ import annotations

import shlex
from importlib import resources
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from dlbox.server import accounts
from dlbox.build import images
from dlbox.spec import presets
from dlbox.server import workspace_actions
from dlbox.jobs.submit import JobRequest
from dlbox.runs import records
from dlbox.server import deps
from dlbox.server import job_actions
from dlbox.server.dashboard import charts, compare
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.jobs.state import JobState
from dlbox.models import registry
from dlbox.deployments import manage as deployments

STATIC = resources.files("dlbox.server.dashboard") / "static"
PAGE = 100  # rows in a table; a "Next page" link shows the older ones
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
# No inline scripts or styles anywhere: the policy can forbid them.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

templates = jinja2.Environment(loader=jinja2.PackageLoader("dlbox.server.dashboard", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates.filters["shell"] = shlex.join
templates.filters["size"] = lambda n: "-" if n is None else f"{n / 1024**3:.2f} GB" if n >= 1024**3 \
    else f"{n / 1024**2:.0f} MB"


class PageRoute(APIRoute):
    """Errors become pages: no valid cookie sends you to sign in; the rest say what went wrong."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except accounts.Unauthorized:
                return RedirectResponse("/login", status_code=303)
            except DlboxError as exc:
                status = exc.status  # the same status as the API's, from dlbox.errors.CODES
                response = render("error.html", request, None, status=status, message=exc.message)
            response.headers.setdefault("Content-Security-Policy", CSP)
            return response

        return run


router = APIRouter(route_class=PageRoute, include_in_schema=False)


def render(name: str, request: Request, who: accounts.Caller | None, *, status: int = 200, **values) -> HTMLResponse:
    html = templates.get_template(name).render(request=request, who=who, path=request.url.path, **values)
    return HTMLResponse(html, status_code=status)


def viewer(request: Request) -> accounts.Caller:
    return deps.session_caller(request.app.state.ctx, request.cookies.get(deps.COOKIE))


async def form(request: Request) -> dict[str, str]:
    """The posted form (urlencoded), once the request is known to come from one of our pages."""
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    if urlsplit(origin).netloc != request.headers.get("host"):
        raise accounts.Forbidden("this form must be sent from the dashboard's own pages")
    fields = parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True)
    return {key: values[-1].strip() for key, values in fields.items()}


Who = Annotated[accounts.Caller, Depends(viewer)]
Form = Annotated[dict, Depends(form)]


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def number(text: str, what: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None


def invalid(exc: ValidationError) -> UsageError:
    first = exc.errors()[0]
    return UsageError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}")


def curves(history: list[dict]) -> dict[str, dict]:
    """metric name -> its last finite value, how many there are, and (for two or more) its chart."""
    return {name: {"last": points[-1][1], "count": len(points),
                   "svg": charts.chart([(None, points)], metric=name) if len(points) > 1 else ""}
            for name, points in charts.series_of((m["name"], m["step"], m["value"]) for m in history).items()}


# --- signing in ---------------------------------------------------------------------------------


@router.get("/")
def home() -> Response:
    return RedirectResponse("/workspaces", status_code=303)


@router.get("/login")
def login_page(request: Request) -> Response:
    return render("login.html", request, None)


@router.post("/login")
def login(request: Request, fields: Form) -> Response:
    token = fields.get("token", "")
    try:
        accounts.authenticate(request.app.state.ctx.store, token)
    except accounts.Unauthorized as exc:
        return render("login.html", request, None, status=401, error=exc.message)
    response = RedirectResponse("/workspaces", status_code=303)
    response.set_cookie(deps.COOKIE, deps.new_session(request.app.state.ctx, token), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https",
                        max_age=deps.SESSION_SECONDS)
    return response


@router.post("/logout")
def logout(request: Request, fields: Form) -> Response:
    deps.end_session(request.app.state.ctx, request.cookies.get(deps.COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(deps.COOKIE, httponly=True, samesite="strict")
    return response


# --- workspaces ---------------------------------------------------------------------------------


@router.get("/workspaces")
def workspaces_page(request: Request, who: Who, offset: deps.Offset = 0) -> Response:
    ctx = request.app.state.ctx
    rows, more = workspace_actions.rows_for(ctx, who, limit=PAGE, offset=offset)
    return render("workspaces.html", request, who, workspaces=rows, images=images.list_images(),
                  presets=presets.names(), offset=offset, next_page=more and offset + PAGE)


@router.post("/workspaces")
def launch(request: Request, who: Who, fields: Form) -> Response:
    source = fields.get("source", "")
    kind, _, ref = source.partition(":")
    key = fields.get("ssh_public_key") or None
    try:
        body = workspace_actions.NewWorkspace(
            name=fields.get("name", ""), preset=ref if kind == "preset" else None,
            image=ref if kind == "image" else None, jupyter="jupyter" in fields, ssh=key is not None,
            ssh_public_key=key, mounts=lines(fields.get("mounts", "")), memory=fields.get("memory") or None,
            cpus=number(fields.get("cpus", ""), "cpus"), gpus=fields.get("gpus") or None)
    except ValidationError as exc:
        raise invalid(exc) from None
    workspace_actions.create(body, who, request.app.state.ctx, request)
    return RedirectResponse(f"/workspaces/{body.name}", status_code=303)


@router.get("/workspaces/{name}")
def workspace_page(request: Request, name: str, who: Who) -> Response:
    ws = workspace_actions.show(name, who, request.app.state.ctx)
    return render("workspace.html", request, who, ws=ws)


@router.get("/workspaces/{name}/jupyter")
def open_jupyter(request: Request, name: str, who: Who) -> Response:
    """To the owner's Jupyter with its token; an admin does not get into someone else's."""
    ctx = request.app.state.ctx
    if workspace_actions.mine(ctx, who, name).owner != who.name:
        raise NotFound(f"no Jupyter of yours in workspace {name!r}")
    found = workspace_actions.token(name, who, ctx)
    response = RedirectResponse(found["url"], status_code=303)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post("/workspaces/{name}/{action}")
def act(request: Request, name: str, action: str, who: Who, fields: Form) -> Response:
    ctx = request.app.state.ctx
    if action == "remove":
        workspace_actions.remove(name, who, ctx, purge_data="purge_data" in fields)
        return RedirectResponse("/workspaces", status_code=303)
    workspace_actions.act(name, action, who, ctx)
    return RedirectResponse(f"/workspaces/{name}", status_code=303)


# --- jobs and runs ------------------------------------------------------------------------------


def job_of(request: Request, job_id: str, who: accounts.Caller):
    job = request.app.state.ctx.store.get_job(job_id)
    if job is None or not who.sees(job.user):  # someone else's job is not there, for you
        raise NotFound(f"no job {job_id!r}")
    return job


@router.get("/jobs")
def jobs_page(request: Request, who: Who, offset: deps.Offset = 0) -> Response:
    found = newest_jobs(request, who, offset)
    rows = [records.job_json(j) for j in found[:PAGE]]
    try:  # the queue is the store's: it shows even while the engine does not answer
        choices, engine_down = images.list_images(), None
    except DlboxError as exc:
        choices, engine_down = [], exc.message
    return render("jobs.html", request, who, jobs=rows, images=choices, engine_down=engine_down,
                  offset=offset, next_page=len(found) > PAGE and offset + PAGE)


def newest_jobs(request: Request, who: accounts.Caller, offset: int) -> list:
    """A page of jobs, newest first, with one more than the page when there is a next one."""
    store = request.app.state.ctx.store
    return store.jobs(user=None if who.admin else who.name, newest=PAGE + 1, skip=offset)[::-1]


@router.post("/jobs")
def submit(request: Request, who: Who, fields: Form) -> Response:
    ctx = request.app.state.ctx
    params = {}
    for line in lines(fields.get("params", "")):
        key, eq, value = line.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"params: {line!r} is not KEY=VALUE")
        params[key.strip()] = value.strip()
    try:
        command = shlex.split(fields.get("command", ""))
    except ValueError as exc:
        raise UsageError(f"command: {exc}") from None
    try:
        job_request = JobRequest(image=fields.get("image", ""), command=command, params=params,
                                         name=fields.get("name") or None, memory=fields.get("memory") or None,
                                         cpus=number(fields.get("cpus", ""), "cpus"))
    except ValidationError as exc:
        raise invalid(exc) from None
    job = job_actions.submit_job(ctx, job_request, who)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, who: Who) -> Response:
    job = records.job_json(job_of(request, job_id, who))
    return render("job.html", request, who, job=job, finished=JobState(job["state"]).is_finished())


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, who: Who, fields: Form) -> Response:
    ctx = request.app.state.ctx
    job = job_of(request, job_id, who)
    if not JobState(job.state).is_finished():
        ctx.store.update(job.id, cancel_requested=True)
        ctx.loop.wake()
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/runs")
def runs_page(request: Request, who: Who, offset: deps.Offset = 0) -> Response:
    found = newest_jobs(request, who, offset)
    shown = found[:PAGE]
    last = request.app.state.ctx.store.last_metrics([j.id for j in shown])  # one query, not one per run
    rows = [records.job_json(j) | {"metrics": last[j.id]} for j in shown]
    return render("runs.html", request, who, runs=rows, offset=offset,
                  next_page=len(found) > PAGE and offset + PAGE)


@router.get("/runs/compare")  # before /runs/{job_id}, which would take "compare" for a run id
def compare_page(request: Request, who: Who) -> Response:
    """Two to eight runs: curves on shared axes, last values, and `runs diff` of each against the first."""
    ids = compare.parse_ids(request.query_params.getlist("ids"))
    found = compare.compare(job_actions.RunsOf(request.app.state.ctx, who, history=False), ids)
    return render("compare.html", request, who, **found)


@router.get("/runs/{job_id}")
def run_page(request: Request, job_id: str, who: Who) -> Response:
    run = records.run_json(request.app.state.ctx.store, job_of(request, job_id, who))
    return render("run.html", request, who, run=run, curves=curves(run["metric_history"]))


# --- models -------------------------------------------------------------------------------------


@router.get("/models")
def models_page(request: Request, who: Who, offset: deps.Offset = 0) -> Response:
    store = request.app.state.ctx.store
    found = registry.listing(store, who.name, admin=who.admin, limit=PAGE + 1, skip=offset)
    return render("models.html", request, who, models=found[:PAGE], offset=offset,
                  next_page=len(found) > PAGE and offset + PAGE)


@router.get("/models/{owner}/{name}")
def model_page(request: Request, owner: str, name: str, who: Who) -> Response:
    """Versions with their lineage (links to the runs), aliases and every alias move; someone else's
    unshared model is a 404 like a missing one."""
    model = registry.detail(request.app.state.ctx.store, who.name, name, owner=owner, admin=who.admin)
    return render("model.html", request, who, model=model)


# --- pipelines ----------------------------------------------------------------------------------


@router.get("/pipelines")
def pipelines_page(request: Request, who: Who, offset: deps.Offset = 0) -> Response:
    """Pipelines with their stages' states (the page reloads itself while one runs) and report links."""
    from dlbox.server import pipeline_actions

    ctx = request.app.state.ctx
    rows, more = pipeline_actions.listing(ctx, who, limit=PAGE, offset=offset)
    live = any(r["exit_code"] is None for r in rows)
    return render("pipelines.html", request, who, pipelines=rows[::-1], offset=offset, live=live,
                  next_page=more and offset + PAGE)


@router.get("/pipelines/{pipeline_id}")
def pipeline_page(request: Request, pipeline_id: str, who: Who) -> Response:
    from dlbox.server import pipeline_actions

    ctx = request.app.state.ctx
    found = pipeline_actions.pipeline_json(ctx.store, pipeline_actions.get(ctx, who, pipeline_id))
    return render("pipeline.html", request, who, p=found, live=found["exit_code"] is None)


# --- deployments --------------------------------------------------------------------------------


@router.get("/deployments")
def deployments_page(request: Request, who: Who, offset: deps.Offset = 0) -> Response:
    """The caller's deployments (admins: all): state, health, label -> version, restarts, last error."""
    found = deployments.listing(request.app.state.ctx.store, who.name, admin=who.admin)[offset:offset + PAGE + 1]
    return render("deployments.html", request, who, deployments=found[:PAGE], offset=offset,
                  next_page=len(found) > PAGE and offset + PAGE)


# --- images -------------------------------------------------------------------------------------


@router.get("/images")
def images_page(request: Request, who: Who) -> Response:
    return render("images.html", request, who, images=images.list_images())


@router.get("/images/{ref:path}")
def image_page(request: Request, ref: str, who: Who) -> Response:
    from dlbox.supply import scan

    image = images.inspect(ref)
    return render("image.html", request, who, image=image, scan=scan.stored(image["id"]))


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    kind = STATIC_TYPES.get("." + name.rpartition(".")[2])
    if "/" in name or kind is None or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(str(path), media_type=kind, headers={"Cache-Control": "no-cache"})
