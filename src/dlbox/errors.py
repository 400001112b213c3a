"""One error type for everything a user can cause or meet.

The CLI prints `error: <message>` on one line and exits with `exit_code`:
2 for usage errors (bad flag, bad spec), 1 for failures (engine, build).
"""


class DlboxError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, code: str = "failed"):
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(DlboxError):
    """The user asked for something malformed; nothing was attempted."""

    exit_code = 2

    def __init__(self, message: str, *, code: str = "invalid"):
        super().__init__(message, code=code)


class NotFound(DlboxError):
    def __init__(self, message: str):
        super().__init__(message, code="not_found")


class Unauthorized(DlboxError):
    def __init__(self, message: str | None = None):
        super().__init__(message or "a valid API token is needed (Authorization: Bearer dlb_...)", code="unauthorized")


class Forbidden(DlboxError):
    def __init__(self, message: str, *, code: str = "forbidden"):
        super().__init__(message, code=code)
