"""What differs between two run records. Pure."""

from __future__ import annotations

import hashlib

from dlbox import redact


def _changes(a: dict, b: dict) -> list[dict]:
    return [{"name": k, "a": a.get(k), "b": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _digest(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else None


def diff(a: dict, b: dict) -> dict:
    from dlbox.build import lock as locks

    packages: list[dict] = []
    if a.get("lock") and b.get("lock"):
        la, lb = locks.parse_text(a["lock"], source="run a"), locks.parse_text(b["lock"], source="run b")
        packages = [{"name": f"{c['kind']}:{c['name']}", "a": c["locked"], "b": c["found"]}
                    for c in locks.diff_packages(la, lb)]
        if la.base != lb.base:
            packages.insert(0, {"name": "base", "a": la.base.rootfs_sha256, "b": lb.base.rootfs_sha256})
    elif a.get("lock_hash") != b.get("lock_hash"):
        packages = [{"name": "lock_hash", "a": a.get("lock_hash"), "b": b.get("lock_hash")}]
    pick = ("image", "image_id", "lock_hash")
    return {
        "a": a["id"], "b": b["id"],
        "image": _changes({k: a.get(k) for k in pick}, {k: b.get(k) for k in pick}),
        "packages": packages,
        # records come redacted from the API; hidden again here, as the diff may print what it is given.
        # Two hidden values look alike, so a secret param differs here only when one run lacks it.
        "params": _changes(redact.mapping(a.get("params")), redact.mapping(b.get("params"))),
        "command": _changes({"command": " ".join(redact.words(a["command"]))},
                            {"command": " ".join(redact.words(b["command"]))}),
        "code": _changes({"git_commit": a.get("git_commit"), "git_dirty": a.get("git_dirty"),
                          "uncommitted_diff": _digest(a.get("git_diff"))},
                         {"git_commit": b.get("git_commit"), "git_dirty": b.get("git_dirty"),
                          "uncommitted_diff": _digest(b.get("git_diff"))}),
        "metrics": _changes(a.get("metrics") or {}, b.get("metrics") or {}),
    }
