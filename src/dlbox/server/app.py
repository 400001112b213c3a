"""The dlbox service: owns the job queue and the reconcile loop, and answers the CLI over HTTP.

It listens on a Unix socket in $DLBOX_HOME/service/ (a 0700 directory: only its owner can talk
to it); the CLI starts it in the background when none answers. One service per DLBOX_HOME.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dlbox import __version__, config
from dlbox.errors import DlboxError
from dlbox.jobs.loop import Loop
from dlbox.server import bodylimit, models
from dlbox.server.deps import Context, Shared
from dlbox.server.errors import error_body, error_response, invalid_message, unexpected_response
from dlbox.store.db import Store


def create_app(store: Store, loop: Loop, *, mode: str = "local", mount_roots: list[Path] | None = None,
               workspace_host: str = "127.0.0.1", shared: Shared | None = None) -> FastAPI:
    """One door (the local socket or the server's TCP port). Doors of one service pass the same
    `shared`, so a user's quota lock and log followers are counted once across them."""
    from dlbox.server.routes import accounts as routes_accounts
    from dlbox.server.routes import deployments as routes_deployments
    from dlbox.server.routes import jobs as routes_jobs
    from dlbox.server.routes import models as routes_models
    from dlbox.server.routes import pipelines as routes_pipelines
    from dlbox.server.routes import snapshots as routes_snapshots
    from dlbox.server.routes import workspaces as routes_workspaces

    app = FastAPI(title="dlbox", version=__version__, openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    app.state.ctx = Context(store=store, loop=loop, mode=mode, mount_roots=list(mount_roots or []),
                            workspace_host=workspace_host, shared=shared or Shared())

    # before the body is read: FastAPI reads it whole before authenticating (bodylimit says why)
    app.add_middleware(bodylimit.BodyLimit, limits={("POST", "/api/jobs"): routes_jobs.JOB_BODY},
                       prefixes={("PUT", "/api/snapshots/"): routes_snapshots.snapshot_body_limit})

    # every answer that is not a success has the shape {"error": {"code", "message"}}, its status from
    # dlbox.errors.CODES; the engine's and the database's failures arrive here already as DlboxError
    @app.exception_handler(DlboxError)
    async def dlbox_error(_request: Request, exc: DlboxError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        return error_body("invalid", invalid_message(exc.errors()), 422)  # FastAPI's status for a body that fails

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        return error_body(code, str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)  # a bug: 500 in the same shape; Starlette still logs the traceback
    async def unexpected(_request: Request, exc: Exception):
        return unexpected_response(exc)

    @app.get("/api/health", response_model=models.Health, response_model_exclude_unset=True)
    def health() -> dict:
        data = {"ok": True, "version": __version__, "mode": mode}
        if mode == "local":  # the details are for the owner only
            data |= {"pid": os.getpid(), "loop_error": loop.last_error, "job_errors": loop.reconciler.errors,
                     "engine_events": loop.events, "capacity": loop.reconciler.capacity.__dict__,
                     "pass_errors": loop.pass_errors}  # the pipeline driver's pass, when it failed
        return data

    app.include_router(routes_jobs.router)
    app.include_router(routes_snapshots.router)
    app.include_router(routes_accounts.router)
    app.include_router(routes_workspaces.router)
    app.include_router(routes_models.router)
    app.include_router(routes_pipelines.router)
    app.include_router(routes_deployments.router)
    if mode == "server":  # the web dashboard: only where there are accounts to sign in with
        from dlbox.server.dashboard import pages as dashboard

        app.include_router(dashboard.router)
    return app


def doors(store: Store, loop: Loop, *, server: bool, mount_roots: list[Path] | None = None,
          workspace_host: str = "127.0.0.1") -> tuple[FastAPI, FastAPI | None]:
    """The local socket's app and, for `dlbox server`, the TCP one: one state behind both."""
    shared = Shared()
    local = create_app(store, loop, shared=shared)
    team = create_app(store, loop, mode="server", mount_roots=mount_roots, workspace_host=workspace_host,
                      shared=shared) if server else None
    return local, team


def _take_lock(home: Path, *, replace: bool):
    """One service per dlbox home. `dlbox server` replaces a background service the CLI started."""
    import signal

    guard = open(home / "service.lock", "w")
    deadline = time.monotonic() + 15
    while True:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return guard
        except BlockingIOError:
            pid_file = home / "service" / "pid"
            if not replace or time.monotonic() > deadline:
                raise DlboxError(f"a dlbox service already runs for {home}") from None
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            time.sleep(0.2)


def serve(*, host: str | None = None, port: int | None = None, mount_roots: list[Path] | None = None,
          workspace_host: str = "127.0.0.1", tls_cert: Path | None = None, tls_key: Path | None = None,
          allow_containers: bool = False, idle_stop: int | None = None) -> None:
    """Run the service in the foreground: on the local socket, and on host:port when given (the server).
    dlbox containers cannot reach host:port unless `allow_containers` (an INPUT rule while it runs)."""
    import contextlib

    import uvicorn

    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    guard = _take_lock(home, replace=port is not None)  # noqa: F841 - held for the life of the process
    firewall = contextlib.ExitStack()
    if port is not None and not allow_containers:
        from dlbox.engine.firewall import closed_to_containers

        firewall.enter_context(closed_to_containers(port, ipv6=":" in (host or "")))
    (home / "service").mkdir(parents=True, exist_ok=True)
    (home / "service" / "pid").write_text(str(os.getpid()))
    store = Store()
    loop = Loop(store, idle_stop=idle_stop)
    from dlbox.pipelines.driver import Driver

    loop.passes.append(Driver(store, loop.reconciler.capacity, loop.wake).run_once)  # pipelines go on after a restart
    from dlbox.deployments.manage import Reconciler

    loop.passes.append(Reconciler(store).maybe_run)  # deployments: every 2 s at most
    try:
        loop.run_once()  # catch up with what happened while no service ran, before answering anyone
    except Exception as exc:  # noqa: BLE001 - answer anyway; the loop retries and health shows it
        loop.last_error = f"{type(exc).__name__}: {exc}"
    loop.start()
    sock = config.socket_path()
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.parent.chmod(0o700)
    sock.unlink(missing_ok=True)
    local, team = doors(store, loop, server=port is not None, mount_roots=mount_roots, workspace_host=workspace_host)
    configs = [uvicorn.Config(local, uds=str(sock), log_level="warning", timeout_graceful_shutdown=2)]
    if team is not None:
        configs.append(uvicorn.Config(team, host=host or "127.0.0.1", port=port, log_level="warning",
                                      timeout_graceful_shutdown=2,
                                      ssl_certfile=tls_cert and str(tls_cert), ssl_keyfile=tls_key and str(tls_key)))
    class Server(uvicorn.Server):  # two servers share this process: signals are ours to handle
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    servers = [Server(c) for c in configs]

    async def main() -> None:
        import signal

        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(sig, lambda: [setattr(s, "should_exit", True) for s in servers])
        await asyncio.gather(*(s.serve() for s in servers))

    with firewall:  # the rule goes when the server does
        asyncio.run(main())
