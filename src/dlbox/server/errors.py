"""How a dlbox error reaches an HTTP client: the status of its code (dlbox.errors.CODES), one JSON shape."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from dlbox.errors import CODES, DlboxError, status_of

STATUS = {code: row.status for code, row in CODES.items()}  # code -> HTTP status, read from the one table


def error_body(code: str, message: str, status: int) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def error_response(exc: DlboxError) -> JSONResponse:
    return error_body(exc.code, exc.message, status_of(exc.code))


def unexpected_response(exc: Exception) -> JSONResponse:
    """Any other exception is a bug: a 500 that names its type only (its text may hold anything)."""
    return error_body("internal", f"internal error ({type(exc).__name__}); the service log has the details", 500)


def one_line(text: str) -> str:
    """`text` with newlines and other unprintable characters escaped: an error message is one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def invalid_message(errors: list[dict]) -> str:
    """`field.path: what is wrong`, for the first error; a huge key in the path is cut short."""
    first = errors[0]
    def shown(part) -> str:  # a body's key is the client's text: a line break in it must not split the line
        text = str(part) if len(str(part)) <= 40 else str(part)[:40] + "..."
        return text if text.isprintable() else repr(text)

    place = ".".join(shown(p) for p in first["loc"] if p != "body")
    return one_line(f"{place}: {' '.join(str(first['msg']).split())}")
