"""Where dlbox keeps its state, read from the environment at call time (never at import)."""

import os
from pathlib import Path


def home() -> Path:
    """State directory: base records, preset locks, debootstrap cache, the database, run records.

    Made 0700 on first use in a process (and tightened if it exists looser): it holds the
    database and the runs, which other local users must not read. Jobs still reach their run
    directory and the metrics helper below it: the engine resolves a bind mount's source as root.
    """
    explicit = os.environ.get("DLBOX_HOME")
    if explicit:
        path = Path(explicit)
    else:
        path = Path(os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")) / "dlbox"
    if str(path) not in _PRIVATE:
        _make_private(path)
        _PRIVATE.add(str(path))
    return path


_PRIVATE: set[str] = set()


def _make_private(path: Path) -> None:
    import stat

    from dlbox.errors import DlboxError

    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = path.stat()
    if not found.st_mode & 0o077:
        return
    if found.st_mode & stat.S_ISVTX or path.resolve() == Path("/"):  # /tmp and the like are everyone's
        raise DlboxError(f"DLBOX_HOME: {path} is a shared directory; give dlbox a directory of its own")
    if found.st_uid == os.geteuid():  # someone else's home is theirs to tighten
        path.chmod(stat.S_IMODE(found.st_mode) & 0o700)


def home_id() -> str:
    """Which dlbox home a container belongs to (label dlbox.home): each service minds only its own."""
    import hashlib

    return hashlib.sha256(str(home().resolve()).encode()).hexdigest()[:12]


def verify_key() -> Path | None:
    """The public key every image pulled from a registry must be signed by (DLBOX_VERIFY_KEY, which
    `dlbox server --verify-key` sets), or None: no signature policy."""
    found = os.environ.get("DLBOX_VERIFY_KEY")
    return Path(found) if found else None


def remote_url() -> str | None:
    """The team server the CLI acts on (DLBOX_URL), or None for this machine's own service."""
    return os.environ.get("DLBOX_URL") or None


def socket_path() -> Path:
    """The local service's socket, in a 0700 directory: only the owner can reach the service."""
    return home() / "service" / "dlbox.sock"


def cache_dir() -> Path:
    """Downloaded packages (debootstrap's .debs); safe to share between homes."""
    return Path(os.environ.get("DLBOX_CACHE_DIR") or home() / "cache")


def base_repository() -> str:
    """Repository prefix for bootstrapped bases; the tests use their own so they never replace yours."""
    return os.environ.get("DLBOX_BASE_REPO", "dlbox-base")


def extra_labels() -> dict[str, str]:
    """Labels added to every object dlbox creates (`DLBOX_LABELS=k=v,k2=v2`).

    The test suite uses this to find and remove exactly what it made.
    """
    raw = os.environ.get("DLBOX_LABELS", "").strip()
    labels = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            from dlbox.errors import UsageError

            raise UsageError(f"DLBOX_LABELS: {item!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def default_ca_bundle() -> Path | None:
    """The host's CA bundle, which builds trust by default (see docs/architecture.md)."""
    for candidate in (os.environ.get("DLBOX_CA_BUNDLE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and candidate != "none" and Path(candidate).is_file():
            return Path(candidate)
    return None
