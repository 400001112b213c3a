"""What differs between two run records, and between their code snapshots.

`diff` and `file_changes` are pure; `runs_diff` fetches what they need through a CLI backend
(anything with run, code_manifest and code_tar)."""

from __future__ import annotations

import difflib
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
                          "uncommitted_diff": _digest(a.get("git_diff")), "snapshot": (a.get("code") or {}).get("hash")},
                         {"git_commit": b.get("git_commit"), "git_dirty": b.get("git_dirty"),
                          "uncommitted_diff": _digest(b.get("git_diff")), "snapshot": (b.get("code") or {}).get("hash")}),
        "metrics": _changes(a.get("metrics") or {}, b.get("metrics") or {}),
    }


def file_changes(a: dict | None, b: dict | None) -> list[dict]:
    """Which files differ between two snapshot manifests: {path, change: added|removed|modified|mode}."""
    def by_path(m):
        return {e["path"]: e for e in (m or {}).get("entries", [])}

    ea, eb = by_path(a), by_path(b)
    found = []
    for path in sorted(set(ea) | set(eb)):
        x, y = ea.get(path), eb.get(path)
        if x is None:
            found.append({"path": path, "change": "added"})
        elif y is None:
            found.append({"path": path, "change": "removed"})
        elif (x.get("sha256"), x.get("target")) != (y.get("sha256"), y.get("target")):
            found.append({"path": path, "change": "modified"})
        elif x["mode"] != y["mode"]:
            found.append({"path": path, "change": f"mode {x['mode']} -> {y['mode']}"})
    return found


def unified(path: str, a: bytes | None, b: bytes | None) -> str | None:
    """A unified diff of one text file between two snapshots; None when either side is not text."""
    try:
        ta = (a or b"").decode("utf-8").splitlines(keepends=True)
        tb = (b or b"").decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None
    if b"\0" in (a or b"") + (b or b""):
        return None
    return "".join(difflib.unified_diff(ta, tb, f"a/{path}", f"b/{path}"))


def runs_diff(where, a_id: str, b_id: str, *, code: bool = False) -> dict:
    """diff() of runs A and B, with the files that differ between their code snapshots
    (and with code, a unified diff of each text file that differs)."""
    from dlbox import snapshots

    a, b = where.run(a_id), where.run(b_id)
    result = diff(a, b)
    from dlbox.errors import NotFound

    hashes = [(r.get("code") or {}).get("hash") for r in (a, b)]
    manifests = []
    for h in hashes:
        try:
            manifests.append(where.code_manifest(h) if h else None)
        except NotFound:  # deleted: its files cannot be compared
            manifests.append(None)
    gone = [r["id"] for r, h, m in zip((a, b), hashes, manifests) if h and m is None]
    if gone:
        result["files"] = [{"path": "-", "change": f"run {run}'s code snapshot was deleted"} for run in gone]
        return result
    result["files"] = file_changes(*manifests) if any(hashes) else []
    if code and result["files"]:
        contents = [snapshots.tar_files(where.code_tar(h)) if h else {} for h in hashes]
        result["unified"] = [text for f in result["files"]
                             if (text := unified(f["path"], contents[0].get(f["path"]), contents[1].get(f["path"])))]
    return result
