"""Every route of /openapi.json against what it really answers, by schemathesis.

A server-mode app over a SQLite store (fixed capacity, no engine: DOCKER_HOST points at a socket that
is not there), called as a plain user and as an admin. Each answer must match its documented schema,
status code and content type. A 5xx is allowed only where the route asks the container engine, and
only as the documented error body saying the engine is unavailable; anything else is a bug.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dlbox.server import accounts  # noqa: E402
from dlbox.store.db import Store  # noqa: E402

ENGINE_CODES = {"engine_unavailable"}  # what a route that asks the engine answers when none is there
ENGINE_ROUTES = ("/api/workspaces", "/api/images", "/api/jobs/{job_id}/logs", "/api/deployments")
# the image; the user's network; the signature helper in the run's image
ENGINE_OPERATIONS = {("POST", "/api/jobs"), ("DELETE", "/api/users/{name}"), ("POST", "/api/models/{name}/versions")}


@pytest.fixture(params=["user", "admin"])
def world(request, tmp_path, app_of, no_engine):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    accounts.add_user(store, "ann", admin=request.param == "admin")
    accounts.add_user(store, "bob")  # someone else, to be seen (admin) or not (user)
    _, token = accounts.create_token(store, "ann")
    app = app_of(store, mode="server", mount_roots=[tmp_path])
    return {"app": app, "headers": {"Authorization": f"Bearer {token}"}, "role": request.param}


def operations() -> list[tuple[str, str]]:
    """(method, path) of every operation /openapi.json documents, read from an app built only to ask."""
    from dlbox.jobs import runner as jobs
    from dlbox.jobs.loop import Loop
    from dlbox.server import app as service

    app = service.create_app(None, Loop(None, capacity=jobs.Capacity(cpus=2, memory=None, gpus=[])), mode="server")
    return [(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops]


OPERATIONS = operations()


def test_every_api_route_is_documented():
    """Every JSON route is in the document, and only they are (the dashboard's HTML pages are not)."""
    from dlbox.server.routes import accounts as routes_accounts
    from dlbox.server.routes import deployments as routes_deployments
    from dlbox.server.routes import jobs as routes_jobs
    from dlbox.server.routes import models as routes_models
    from dlbox.server.routes import pipelines as routes_pipelines
    from dlbox.server.routes import snapshots as routes_snapshots
    from dlbox.server.routes import workspaces as routes_workspaces

    routes = {(m, r.path.replace(":path", "")) for module in (routes_jobs, routes_accounts, routes_workspaces,
                                                              routes_snapshots, routes_models, routes_pipelines,
                                                              routes_deployments)
              for r in module.router.routes for m in r.methods}
    assert set(OPERATIONS) == routes | {("GET", "/api/health")}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_route_answers_as_documented(world, method, path):
    from hypothesis import given
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", world["app"])
    operation = schema[path][method]
    engine_route = path.startswith(ENGINE_ROUTES) or (method.upper(), path) in ENGINE_OPERATIONS

    def check(case):
        response = case.call(headers=world["headers"])
        checks = [response_schema_conformance, status_code_conformance, content_type_conformance]
        if response.status_code < 500 or not engine_route:
            checks.append(not_a_server_error)
        case.validate_response(response, checks=checks)
        if response.status_code >= 500:  # only the engine being away, said in the documented error body
            assert response.json()["error"]["code"] in ENGINE_CODES, response.text

    for mode, examples in ((GenerationMode.POSITIVE, 6), (GenerationMode.NEGATIVE, 3)):
        try:
            settings(max_examples=examples, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))(given(case=operation.as_strategy(mode))(check))()
        except Unsatisfiable:  # nothing to make wrong (health takes no input)
            assert mode == GenerationMode.NEGATIVE and not list(operation.iter_parameters()) and not operation.body
