"""Users, API tokens, quotas and the mount policy of the team server.

A token reads `dlb_<id>_<secret>`: the id finds the row, the secret is checked against the
stored SHA-256 in constant time. The secret has 256 bits, so a plain hash is enough (no
password stretching needed) and the token itself is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass, field

from dlbox.errors import DlboxError, Forbidden, NotFound, Unauthorized, UsageError
from dlbox.store.db import Store, Token, User

ROLES = ("admin", "user")
PREFIX = "dlb_"
USER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# "local" is who owns the dlbox home on the local socket; "root" reads as the machine's own
RESERVED_NAMES = ("local", "root")
QUOTA_KEYS = ("workspaces", "cpus", "memory", "gpus", "storage")  # storage: bytes of run artifacts kept
SIZES = ("memory", "storage")
MAX_LIFETIME = 3650 * 86400
TOKEN_SHAPE = re.compile(r"^dlb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    expires_at: float | None = field(default=None, compare=False)  # of the token it came with

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def sees(self, owner: str) -> bool:
        return self.admin or owner == self.name


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_expiry(text: str | None, now: float | None = None) -> float | None:
    """'30d', '12h', '90m' or 'never' -> an expiry time (None for never)."""
    if text in (None, "", "never"):
        return None
    match = re.fullmatch(r"(\d+)([dhm])", text)
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"--expires: {text!r} is not a duration such as 30d, 12h, 90m or never")
    seconds = int(match.group(1)) * {"d": 86400, "h": 3600, "m": 60}[match.group(2)]
    if seconds > MAX_LIFETIME:
        raise UsageError(f"--expires: {text} is longer than 3650d (use never)")
    return (now or time.time()) + seconds


def check_user_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise UsageError(f"NAME: {name[:40]!r} must start with a lowercase letter: a-z, 0-9, '-', '_' (at most 32)")
    if name in RESERVED_NAMES:
        raise UsageError(f"NAME: {name!r} is reserved ({', '.join(RESERVED_NAMES)} are); choose another")
    return name


def parse_quota(pairs: dict[str, str | int | float | None]) -> dict:
    """{'workspaces': '2', 'memory': '8g', ...} -> numbers (memory in bytes); None drops a limit."""
    from dlbox.sizes import parse_size

    quota = {}
    for key, value in pairs.items():
        if key not in QUOTA_KEYS:
            raise UsageError(f"quota: {key[:40]!r} is not one of {', '.join(QUOTA_KEYS)}")
        if value is None or value == "":
            continue
        try:
            number = parse_size(str(value)) if key in SIZES else float(value)
        except (ValueError, OverflowError):
            raise UsageError(f"quota.{key}: {str(value)[:40]!r} is not a number"
                             f"{' or size such as 8g' if key in SIZES else ''}") from None
        if not math.isfinite(number):  # NaN passes every comparison; infinity is no limit (drop it instead)
            raise UsageError(f"quota.{key}: {str(value)[:40]!r} is not a finite number")
        if number < 0:
            raise UsageError(f"quota.{key}: must not be negative")
        quota[key] = int(number) if key in ("workspaces", "memory", "gpus", "storage") else number
    return quota


def check_quota(user: str, quota: dict, held: dict, asked: dict) -> None:
    """Refuse when what `user` holds plus what it asks for passes a quota. Pure.

    held/asked: workspaces (count), cpus, memory (bytes), gpus (count).
    """
    for key in QUOTA_KEYS:
        if key not in quota or not asked.get(key):
            continue
        total = (held.get(key) or 0) + asked[key]
        if total > quota[key] + 1e-9:
            def show(v):
                return f"{v / 1024**3:.1f}g" if key in SIZES else f"{v:g}"
            raise Forbidden(f"quota {key}: {user} may hold {show(quota[key])}, holds {show(held.get(key) or 0)} "
                            f"and asks for {show(asked[key])}", code="quota_exceeded")


# --- store operations -------------------------------------------------------------------------------


def add_user(store: Store, name: str, *, admin: bool = False, quota: dict | None = None) -> User:
    check_user_name(name)
    if store.get_user(name) is not None:
        raise DlboxError(f"user {name} already exists", code="exists")
    if store.retired(name) is not None:  # their runs and volumes still carry the name
        raise DlboxError(f"user name {name} belonged to a removed user and is retired (their runs and volumes keep "
                         "it); choose another", code="exists")
    return store.add_user(User(name=name, role="admin" if admin else "user", quota=quota or {},
                               created_at=time.time()))


def token_expiry(expires: str | None, limit: float | None, now: float | None = None) -> float | None:
    """When a new token expires, made with a token that expires at `limit` (None: never, or the local
    socket's owner, who has no token). A token cannot make one that outlives it, or a stolen
    short-lived token would buy lasting access: asking past the limit (or `never`) is refused,
    and asking nothing gives the limit itself."""
    now = now or time.time()
    if expires in (None, ""):
        return limit
    at = parse_expiry(expires, now)
    if limit is not None and (at is None or at > limit):
        left = max(int((limit - now) // 86400), 0)
        most = f"{left}d" if left else f"{max(int((limit - now) // 60), 1)}m"
        raise Forbidden(f"--expires: {expires} would outlive the token you are using, which expires "
                        f"{_iso(limit)}; ask for {most} or less")
    return at


def create_token(store: Store, user: str, *, name: str | None = None, expires: str | None = None,
                 limit: float | None = None) -> tuple[Token, str]:
    """A new token for `user`: (row, the token text, shown once). `limit`: the expiry of the token
    asking for it (see token_expiry)."""
    if store.get_user(user) is None:
        raise NotFound(f"no user {user!r} (see `dlbox users ls`)")
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise UsageError("--name: letters, digits, '_', '.', '-' (at most 64)")
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = store.add_token(Token(id=token_id, user=user, name=name, digest=digest(secret), created_at=time.time(),
                                expires_at=token_expiry(expires, limit)))
    return row, f"{PREFIX}{token_id}_{secret}"


def authenticate(store: Store, text: str | None) -> Caller:
    """The caller a token belongs to; every refusal of a token says the same, to tell an attacker nothing."""
    if not text:
        raise Unauthorized()
    match = TOKEN_SHAPE.match(text)
    row = store.get_token(match.group(1)) if match else None
    expected = row.digest if row is not None else digest("no such token")
    ok = hmac.compare_digest(expected, digest(match.group(2) if match else ""))  # same work, found or not
    user = store.get_user(row.user) if ok and row is not None else None
    if user is None or row.revoked_at is not None or (row.expires_at and row.expires_at < time.time()):
        raise Unauthorized("the API token is not valid (unknown, revoked or expired)")
    return Caller(name=user.name, role=user.role, expires_at=row.expires_at)


def token_json(row: Token) -> dict:
    state = "revoked" if row.revoked_at else "expired" if row.expires_at and row.expires_at < time.time() else "active"
    return {"id": row.id, "user": row.user, "name": row.name, "state": state, "created_at": _iso(row.created_at),
            "expires_at": _iso(row.expires_at), "revoked_at": _iso(row.revoked_at)}


def user_json(row: User) -> dict:
    return {"name": row.name, "role": row.role, "quota": row.quota or {}, "created_at": _iso(row.created_at)}


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None
