"""What every route depends on: the shared context, who is calling, and pages of lists."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dlbox.errors import DlboxError
from dlbox.server import accounts
from dlbox.store.db import Store

if TYPE_CHECKING:
    from dlbox.jobs.loop import Loop


bearer = HTTPBearer(auto_error=False, description="An API token from `dlbox users add` or `dlbox tokens create`.")


@dataclass
class Context:
    """What the routes share: the store, the loop, and who may do what.

    mode "local": the Unix socket in a 0700 directory; whoever reaches it owns this dlbox home
    and acts as admin. mode "server": TCP; every route but health needs a valid API token.
    """

    store: Store
    loop: Loop
    mode: str = "local"
    mount_roots: list[Path] = field(default_factory=list)
    workspace_host: str = "127.0.0.1"
    # token digest -> (caller, store auth version, expiry): revoking bumps the version, so it acts at once
    auth_cache: dict = field(default_factory=dict)
    list_cache: dict = field(default_factory=dict)
    sessions: dict = field(default_factory=dict)  # digest of a dashboard session id -> (token, until)
    shared: Shared = field(default_factory=lambda: Shared())

    def user_lock(self, name: str) -> threading.Lock:
        return self.shared.user_lock(name)

    @property
    def followers(self) -> Followers:
        return self.shared.followers


class Shared:
    """What both doors of one service count together: a user's quota check-and-queue is one step
    whichever door it comes through, and so is the cap on log followers."""

    def __init__(self):
        self.user_locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()
        self.followers = Followers()

    def user_lock(self, name: str) -> threading.Lock:
        with self.guard:  # two first requests of one user must not make two locks
            return self.user_locks.setdefault(name, threading.Lock())


async def caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                 x_dlbox_user: Annotated[str | None, Header(include_in_schema=False)] = None) -> accounts.Caller:
    # async: a cache hit does no I/O, and skipping the thread pool hop matters at hundreds of requests/s
    ctx: Context = request.app.state.ctx
    if ctx.mode == "local":
        return accounts.Caller(name=x_dlbox_user or "local", role="admin")
    if credentials is not None:
        return token_caller(ctx, credentials.credentials)
    if request.cookies.get(COOKIE) and request.method not in ("GET", "HEAD"):
        # the dashboard's session reads (live logs, state); changes need the header. Browsers send the
        # cookie to every port of this host, workspaces' Jupyter included, and SameSite ignores ports.
        raise accounts.Unauthorized("API changes need Authorization: Bearer <token>; the dashboard session only reads")
    return session_caller(ctx, request.cookies.get(COOKIE))


def token_caller(ctx: Context, token: str | None) -> accounts.Caller:
    """accounts.authenticate, remembered until the store's auth version moves (revocation acts at once)."""
    key = accounts.digest(token or "")
    version = ctx.store.versions["auth"]
    hit = ctx.auth_cache.get(key)
    if hit and hit[1] == version and (hit[2] is None or hit[2] > time.time()):
        return hit[0]
    who = accounts.authenticate(ctx.store, token)
    if len(ctx.auth_cache) > 10_000:
        ctx.auth_cache.clear()
    ctx.auth_cache[key] = (who, version, who.expires_at)
    return who


SESSION_SECONDS = 12 * 3600


def new_session(ctx: Context, token: str) -> str:
    """A dashboard session for a checked token: the cookie holds a random id, never the token itself,
    and the id is no API token (a leaked cookie cannot be replayed as `Authorization: Bearer`)."""
    session = secrets.token_urlsafe(32)
    now = time.time()
    for key in [k for k, (_, until) in ctx.sessions.items() if until < now]:
        del ctx.sessions[key]
    ctx.sessions[accounts.digest(session)] = (token, now + SESSION_SECONDS)
    return session


def end_session(ctx: Context, session: str | None) -> None:
    ctx.sessions.pop(accounts.digest(session or ""), None)


def session_caller(ctx: Context, session: str | None) -> accounts.Caller:
    found = ctx.sessions.get(accounts.digest(session)) if session else None
    if found is None or found[1] < time.time():
        raise accounts.Unauthorized("sign in again (no valid session)" if session else None)
    return token_caller(ctx, found[0])  # a revoked token or removed user ends its sessions too


COOKIE = "dlbox_token"
Caller = Annotated[accounts.Caller, Depends(caller)]


async def ctx_of(request: Request) -> Context:  # async: no thread-pool hop per request
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(ctx_of)]


# Every list is a page: `limit` rows (default 100) after the first `offset`; a full page has a Link
# header to the next one (RFC 8288 rel="next"), so a client knows there is more.
PAGE_MAX = 1000
RUNS_MAX = 10_000  # `dlbox runs --limit`: one cached answer, so a bigger page is still cheap
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="rows in this page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows skipped before this page")]


def next_link(request: Request, more: bool, limit: int, offset: int) -> dict:
    if not more:
        return {}
    target = request.url.include_query_params(limit=limit, offset=offset + limit)
    return {"Link": f'<{target.path}?{target.query}>; rel="next"'}


def page(request: Request, rows: list, *, more: bool, limit: int, offset: int) -> JSONResponse:
    return JSONResponse(rows, headers=next_link(request, more, limit, offset))


class Followers:
    """Live log followers, counted per user and in all: each holds an engine connection."""

    def __init__(self, per_user: int = 20, total: int = 500):
        self.per_user, self.total = per_user, total
        self.held: dict[str, int] = {}

    def take(self, user: str):
        """A release function for one more follower of `user`'s; TooMany past a cap."""
        if self.held.get(user, 0) >= self.per_user:
            raise TooMany(f"{user} already follows {self.per_user} job logs; stop one first")
        if sum(self.held.values()) >= self.total:
            raise TooMany(f"the server already serves {self.total} log followers; try again later")
        self.held[user] = self.held.get(user, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.held[user] -= 1
                if not self.held[user]:
                    del self.held[user]

        return release


class TooMany(DlboxError):
    def __init__(self, message: str):
        super().__init__(message, code="too_many_followers")
