"""Request bodies have a size limit, enforced before anyone reads them.

FastAPI reads (and buffers) a route's whole body before its dependencies run, authentication
included, so without this an anonymous client could make the service hold gigabytes. This ASGI
middleware refuses a declared Content-Length over the limit without reading a byte, and counts
the bytes of a chunked body as they arrive, answering 413 the moment they pass it.
"""

from __future__ import annotations

import json

MiB = 1024 * 1024
DEFAULT = 1 * MiB


class TooLarge(Exception):
    """Raised out of receive() once a body passes its limit; the middleware answers 413."""


class BodyLimit:
    """`limits`: (method, path) -> bytes, for the few routes that need more than `default`."""

    def __init__(self, app, *, default: int = DEFAULT, limits: dict[tuple[str, str], int] | None = None,
                 prefixes: dict[tuple[str, str], object] | None = None):
        """prefixes: (method, path prefix) -> bytes, or a function giving them (read per request)."""
        self.app = app
        self.default = default
        self.limits = dict(limits or {})
        self.prefixes = dict(prefixes or {})

    def limit_for(self, scope) -> int:
        found = self.limits.get((scope["method"], scope["path"]))
        if found is not None:
            return found
        for (method, prefix), limit in self.prefixes.items():
            if scope["method"] == method and scope["path"].startswith(prefix):
                return limit() if callable(limit) else limit
        return self.default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope)
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if declared:
            if len(declared) > 1 or not declared[0].isdigit():
                return await refuse(send, 400, "invalid", "Content-Length: must be one whole number of bytes")
            if int(declared[0]) > limit:
                return await refuse(send, 413, "too_large", too_large(limit))
        state = {"read": 0, "over": False, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["over"] = True
                    raise TooLarge()
            return message

        async def guarded_send(message):
            if state["over"]:  # whatever the app makes of the cut body, the answer is 413
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await refuse(send, 413, "too_large", too_large(limit))


def too_large(limit: int) -> str:
    size = f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit} bytes"
    return f"request body: at most {size}"


async def refuse(send, status: int, code: str, message: str) -> None:
    """The project's error shape; Connection: close, because the rest of the body is never read."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
