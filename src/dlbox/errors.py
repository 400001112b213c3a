"""One error type for everything a user can cause or meet, and one table of what each code means.

Every DlboxError carries a `code` from CODES; the code alone decides the HTTP status the service
answers ({"error": {"code", "message"}}), the status the dashboard's error page carries, and the
exit code of the CLI (which prints `error: <message>` on one line). A code that is not in the table
cannot be raised: the constructor refuses it, and a unit test checks every `code="..."` in src.

The rule: a user's mistake or a request the current state refuses is 4xx (exit 2 for a malformed
request, 1 otherwise); the engine or the database failing is 502/503; anything else that failed
and has no better code is 500.
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    status: int  # HTTP status of the API and the dashboard
    exit: int  # exit code of the CLI
    meaning: str


CODES: dict[str, Code] = {
    # the request itself is wrong: nothing was attempted
    "invalid": Code(400, 2, "a malformed request: a bad flag, field or spec"),
    "unauthorized": Code(401, 1, "no valid API token (or session) was given"),
    "forbidden": Code(403, 1, "the caller may not do this"),
    "quota_exceeded": Code(403, 1, "the caller's quota does not allow this"),
    "mount_refused": Code(403, 1, "a mount source the server does not allow"),
    "registry_auth": Code(403, 1, "the image registry refused the credentials (or none are kept: dlbox login)"),
    "foreign_image": Code(403, 1, "a job image dlbox did not build, and the admin does not allow others"),
    "not_found": Code(404, 1, "no such thing (workspace, job, image, user, token, route)"),
    "snapshot_missing": Code(404, 1, "a job names a code snapshot the server does not hold for the caller "
                                     "(the CLI then sends it and asks again)"),
    "method_not_allowed": Code(405, 1, "the route exists but not with this method"),
    "too_large": Code(413, 1, "a request body over the route's limit"),
    "http_error": Code(400, 1, "another refusal of the HTTP layer (the answer keeps that layer's own status)"),
    # the request is fine, but the state of things refuses it
    "exists": Code(409, 1, "the name is taken, or what it names still holds things"),
    "port_in_use": Code(409, 1, "a host port is already in use"),
    "gpu_busy": Code(409, 1, "the GPUs asked for are held by others"),
    "no_gpu": Code(409, 1, "this host has no GPUs dlbox knows of"),
    "no_gpu_runtime": Code(409, 1, "the engine has no GPU runtime"),
    "not_built": Code(409, 1, "the image asked for is not built here yet"),
    "mount_missing": Code(409, 1, "a mount source that existed is gone"),
    "lock_mismatch": Code(409, 1, "a rebuilt image does not match its lock"),
    "not_running": Code(409, 1, "the workspace must be running for this (start it first)"),
    "not_reproducible": Code(409, 1, "a run cannot be repeated exactly (what it needs was not kept)"),
    "not_finished": Code(409, 1, "the run has not finished, or did not succeed"),
    "tag_taken": Code(409, 1, "the registry's tag already points at another image (immutable tags; --force moves it)"),
    "signature_refused": Code(409, 1, "an image with no valid signature by the given key for its digest"),
    "engine_conflict": Code(409, 1, "the engine refused: the thing is in use, not running, or already there"),
    "build_failed": Code(422, 1, "the image could not be built from the spec"),
    "not_a_model": Code(422, 1, "the path is no SavedModel with a serving signature"),
    "too_many_followers": Code(429, 1, "too many log streams open for this caller"),
    # something failed on the server's side
    "failed": Code(500, 1, "a failure with no better code"),
    "internal": Code(500, 1, "an unexpected error (a bug): the message says no more than its type"),
    "firewall": Code(500, 1, "the host firewall could not be set up"),
    "engine_error": Code(502, 1, "the container engine answered with an error"),
    "registry_unavailable": Code(502, 1, "the image registry does not answer, or answered with an error"),
    "engine_unavailable": Code(503, 1, "no container engine answers"),
    "no_network": Code(503, 1, "the engine has no free address range for a network"),
    "store_unavailable": Code(503, 1, "the database cannot be reached or used"),
    "advisories_unavailable": Code(503, 1, "the advisory source (the OSV API) cannot be reached"),
}


def status_of(code: str) -> int:
    """The HTTP status of `code`; an unknown one (say from a newer server) is a 500."""
    return (CODES.get(code) or CODES["failed"]).status


def known(code: str | None, default: str = "failed") -> str:
    """`code` if it is in the table, else `default`: for codes that come from elsewhere (a server's answer)."""
    return code if code in CODES else default


class DlboxError(Exception):
    code_of_kind = "failed"  # the code when none is given; each subclass below names its own

    def __init__(self, message: str, *, code: str | None = None):
        code = code or self.code_of_kind
        if code not in CODES:
            raise ValueError(f"unknown dlbox error code {code!r}: add it to dlbox.errors.CODES")
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def status(self) -> int:
        return CODES[self.code].status

    @property
    def exit_code(self) -> int:
        return CODES[self.code].exit


class UsageError(DlboxError):
    """The user asked for something malformed; nothing was attempted."""

    code_of_kind = "invalid"


class NotFound(DlboxError):
    code_of_kind = "not_found"


class Unauthorized(DlboxError):
    code_of_kind = "unauthorized"

    def __init__(self, message: str | None = None):
        super().__init__(message or "a valid API token is needed (Authorization: Bearer dlb_...)")


class Forbidden(DlboxError):
    code_of_kind = "forbidden"


class EngineError(DlboxError):
    """The container engine failed or could not be reached (engine/api.py makes these)."""

    code_of_kind = "engine_error"


class StoreUnavailable(DlboxError):
    """The database failed (store/db.py makes these); the message never holds the URL or the SQL."""

    code_of_kind = "store_unavailable"
