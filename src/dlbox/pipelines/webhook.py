"""GitHub's push webhook, read as hostile (pure): the signature, the repository it names, the pushed commit.

GitHub signs the raw body with HMAC-SHA256 and the hook's secret and sends `X-Hub-Signature-256:
sha256=<hex>`. The check is `hmac.compare_digest` over the whole header value (constant time); a missing,
malformed or wrong header is refused alike. Only the repository's name is read before the check (to find
whose secret to use); nothing else in the body is used until it passes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re

MAX_BODY = 1024 * 1024  # bodylimit refuses more before this reads it
PROJECT = re.compile(r"[A-Za-z0-9_.-]{1,100}(?:/[A-Za-z0-9_.-]{1,100})?")
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
GIT_REF = re.compile(r"refs/(?:heads|tags)/[A-Za-z0-9._/-]{1,200}")


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the body's signature with `secret` (constant time over the value)."""
    if not isinstance(header, str) or len(header) > 200:
        return False
    expected = sign(secret, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode("ascii", errors="replace"))


def check_project(name: str) -> str:
    from dlbox.errors import UsageError

    if not isinstance(name, str) or not PROJECT.fullmatch(name):
        raise UsageError(f"project {str(name)[:80]!r} is not a repository name like owner/name")
    return name


def _parsed(body: bytes) -> dict | None:
    if len(body) > MAX_BODY:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def repository_of(body: bytes) -> str | None:
    """repository.full_name of a webhook body, if it is a well-formed name (else None)."""
    data = _parsed(body)
    repo = data.get("repository") if data else None
    name = repo.get("full_name") if isinstance(repo, dict) else None
    return name if isinstance(name, str) and PROJECT.fullmatch(name) else None


def push_of(body: bytes) -> dict | None:
    """{"after": sha, "ref": ref} of a push of a commit; None for anything else (a deleted branch: all zeros)."""
    data = _parsed(body)
    if not data:
        return None
    after, ref = data.get("after"), data.get("ref")
    if not isinstance(after, str) or not SHA.fullmatch(after) or set(after) == {"0"}:
        return None
    if data.get("deleted") is True:
        return None
    return {"after": after, "ref": ref if isinstance(ref, str) and GIT_REF.fullmatch(ref) else None}
