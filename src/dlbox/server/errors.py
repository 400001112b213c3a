"""How a dlbox error reaches an HTTP client: one status per error code, one JSON shape."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from dlbox.errors import DlboxError, UsageError

STATUS = {"unauthorized": 401, "forbidden": 403, "quota_exceeded": 403, "mount_refused": 403, "not_found": 404,
          "exists": 409, "port_in_use": 409, "too_many_followers": 429}


def error_response(exc: DlboxError) -> JSONResponse:
    status = STATUS.get(exc.code) or (400 if isinstance(exc, UsageError) else 409)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=status, headers=headers)


def invalid_message(errors: list[dict]) -> str:
    """`field.path: what is wrong`, for the first error; a huge key in the path is cut short."""
    first = errors[0]
    def shown(part) -> str:  # a body's key is the client's text: a line break in it must not split the line
        text = str(part) if len(str(part)) <= 40 else str(part)[:40] + "..."
        return text if text.isprintable() else repr(text)

    place = ".".join(shown(p) for p in first["loc"] if p != "body")
    return f"{place}: {' '.join(str(first['msg']).split())}"
