"""Python packages against OSV advisories: loading records, and OSV's matching rules.

A source is a folder of OSV JSON records (any depth), a zip of them (the `PyPI/all.zip` that OSV
publishes), or the OSV API (https://api.osv.dev/v1, the default). Matching follows the OSV schema:
an `affected[]` entry for the PyPI package (names compared after PEP 503 normalization) affects a
version when its `versions` list names it, or when an ECOSYSTEM range's events, sorted by PEP 440
version (`introduced: "0"` lowest), leave it inside [introduced, fixed) or [introduced, last_affected],
and below any `limit`. GIT and SEMVER ranges are not evaluated for PyPI; withdrawn records never match.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from dlbox.errors import DlboxError, UsageError

ECOSYSTEM = "PyPI"
DEFAULT_API = "https://api.osv.dev/v1"
SEVERITIES = ["low", "medium", "high", "critical"]  # lowest first; "unknown" is below all of them
_GITHUB_WORDS = {"LOW": "low", "MODERATE": "medium", "MEDIUM": "medium", "HIGH": "high", "CRITICAL": "critical"}


def normalize(name: str) -> str:
    """PEP 503: runs of -, _ and . are one -, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except (InvalidVersion, TypeError):
        return None


# --- matching ------------------------------------------------------------------------------------


def in_range(version: Version, events: list[dict]) -> bool | None:
    """Whether `version` is inside one ECOSYSTEM range; None when an event's version is not PEP 440."""
    keyed = []
    for event in events:
        for kind in ("introduced", "fixed", "last_affected", "limit"):
            if kind in event:
                text = str(event[kind])
                if kind == "introduced" and text == "0":
                    keyed.append(((0, None), kind, None))
                    continue
                parsed = _version(text)
                if parsed is None:
                    return None
                keyed.append(((1, parsed), kind, parsed))
    # OSV: sort the events by version, then walk them; at equal versions the order of the record holds
    keyed.sort(key=lambda item: (item[0][0], item[0][1] or Version("0")))
    affected = False
    for _, kind, at in keyed:
        if kind == "introduced":
            if at is None or version >= at:
                affected = True
        elif kind == "fixed":
            if version >= at:
                affected = False
        elif kind == "last_affected":
            if version > at:
                affected = False
        elif kind == "limit":
            if version >= at:
                affected = False
    return affected


def affects(record: dict, name: str, version: str) -> bool:
    """Whether one OSV record affects the PyPI package `name`==`version`."""
    if record.get("withdrawn"):
        return False
    wanted = normalize(name)
    parsed = _version(version)
    for entry in record.get("affected", []):
        package = entry.get("package") or {}
        if package.get("ecosystem") != ECOSYSTEM or normalize(package.get("name", "")) != wanted:
            continue
        for listed in entry.get("versions", []):
            other = _version(listed)
            if listed == version or (parsed is not None and other is not None and other == parsed):
                return True
        if parsed is None:
            continue
        for rng in entry.get("ranges", []):
            if rng.get("type") == "ECOSYSTEM" and in_range(parsed, rng.get("events", [])):
                return True
    return False


def severity(record: dict) -> tuple[str, float | None]:
    """(low|medium|high|critical|unknown, CVSS base score or None): the record's own word first
    (GitHub's database_specific.severity), else computed from its newest CVSS vector."""
    from cvss import CVSS2, CVSS3, CVSS4

    word = _GITHUB_WORDS.get(str((record.get("database_specific") or {}).get("severity", "")).upper())
    score = None
    vectors = {s.get("type"): s.get("score", "") for s in record.get("severity") or []}
    for kind, make in (("CVSS_V4", CVSS4), ("CVSS_V3", CVSS3), ("CVSS_V2", CVSS2)):
        if kind not in vectors:
            continue
        try:
            parsed = make(vectors[kind])
        except Exception:  # the cvss library's own errors for a malformed vector: try the next one
            continue
        if kind == "CVSS_V4":
            score, computed = parsed.base_score, str(parsed.severity)
        elif kind == "CVSS_V3":
            score, computed = parsed.scores()[0], str(parsed.severities()[0])
        else:
            score = parsed.scores()[0]
            computed = "High" if score >= 7 else "Medium" if score >= 4 else "Low"
        score = float(score)
        if word is None:
            word = {"none": None}.get(computed.lower(), computed.lower())
        break
    return (word or "unknown"), score


def at_least(found: str, threshold: str) -> bool:
    return found in SEVERITIES and SEVERITIES.index(found) >= SEVERITIES.index(threshold)


@dataclass
class Advisories:
    """Records by normalized package name (PyPI entries only)."""

    by_package: dict[str, list[dict]] = field(default_factory=dict)
    source: str = ""
    count: int = 0

    def add(self, record: dict) -> None:
        if not isinstance(record, dict) or "id" not in record:
            return
        names = {normalize(e.get("package", {}).get("name", "")) for e in record.get("affected", [])
                 if (e.get("package") or {}).get("ecosystem") == ECOSYSTEM}
        if names:
            self.count += 1
        for name in names:
            self.by_package.setdefault(name, []).append(record)

    def matching(self, name: str, version: str) -> list[dict]:
        return sorted((r for r in self.by_package.get(normalize(name), []) if affects(r, name, version)),
                      key=lambda r: r["id"])


def finding(record: dict, name: str, version: str) -> dict:
    sev, score = severity(record)
    return {"id": record["id"], "aliases": sorted(record.get("aliases") or []), "package": normalize(name),
            "version": version, "severity": sev, "score": score,
            "fixed": sorted({e["fixed"] for a in record.get("affected", [])
                             if normalize((a.get("package") or {}).get("name", "")) == normalize(name)
                             for r in a.get("ranges", []) if r.get("type") == "ECOSYSTEM"
                             for e in r.get("events", []) if "fixed" in e}, key=lambda v: _version(v) or Version("0")),
            "published": record.get("published"), "modified": record.get("modified")}


def match(advisories: Advisories, packages: list[tuple[str, str]]) -> list[dict]:
    """Every (record, package) pair where the record affects the package, sorted by package and id."""
    out = []
    for name, version in sorted(packages):
        out.extend(finding(r, name, version) for r in advisories.matching(name, version))
    return out


# --- sources -------------------------------------------------------------------------------------


def _records_of(blob: bytes, where: str) -> list[dict]:
    try:
        data = json.loads(blob)
    except ValueError as exc:
        raise UsageError(f"--advisories: {where} is not JSON ({exc})") from None
    return data if isinstance(data, list) else [data]


def _fingerprint(path: Path) -> str:
    """What the cached index of a local source is keyed by: its path, and each file's size and mtime."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    files = [path] if path.is_file() else sorted(path.rglob("*.json"))
    for f in files:
        st = f.stat()
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def load_local(path: Path, cache: Path | None = None) -> Advisories:
    """A folder or zip of OSV records; its PyPI index is cached (as one JSON file) under `cache`."""
    if not path.exists():
        raise UsageError(f"--advisories: no folder or zip at {path}")
    cached = None
    if cache is not None:
        cached = cache / f"index-{_fingerprint(path)}.json"
        if cached.is_file():
            try:
                data = json.loads(cached.read_text())
                return Advisories(by_package=data["by_package"], source=str(path), count=data["count"])
            except (ValueError, KeyError):
                pass  # a damaged cache is rebuilt
    found = Advisories(source=str(path))
    if path.is_dir():
        for f in sorted(path.rglob("*.json")):
            for record in _records_of(f.read_bytes(), str(f)):
                found.add(record)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if member.endswith(".json"):
                    for record in _records_of(archive.read(member), f"{path}:{member}"):
                        found.add(record)
    else:
        raise UsageError(f"--advisories: {path} is neither a folder nor a zip of OSV records")
    if cached is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": found.count, "by_package": found.by_package}))
        tmp.replace(cached)
    return found


def load_api(url: str, packages: list[tuple[str, str]], cache: Path | None = None, timeout: float = 20,
             transport=None) -> Advisories:
    """The records the OSV API gives for these packages (querybatch, then each record by id;
    records already fetched are read from `cache`). Matching is still done here, by the same rules."""
    import httpx

    found = Advisories(source=url)
    try:
        with httpx.Client(timeout=timeout, transport=transport) as http:
            queries = [{"package": {"ecosystem": ECOSYSTEM, "name": n}, "version": v} for n, v in packages]
            ids: dict[str, str | None] = {}  # id -> modified, as the batch answer gives it
            for start in range(0, len(queries), 1000):
                answer = http.post(f"{url.rstrip('/')}/querybatch", json={"queries": queries[start:start + 1000]})
                answer.raise_for_status()
                for result in answer.json().get("results", []):
                    ids.update((v["id"], v.get("modified")) for v in result.get("vulns", []))
            for vuln_id, modified in sorted(ids.items()):
                path = cache / f"{re.sub(r'[^A-Za-z0-9._-]', '_', vuln_id)}.json" if cache else None
                if path is not None and path.is_file():
                    try:
                        kept = json.loads(path.read_text())
                    except ValueError:
                        kept = None
                    if kept and (modified is None or kept.get("modified") == modified):
                        found.add(kept)
                        continue  # a record changed since it was kept is fetched again
                answer = http.get(f"{url.rstrip('/')}/vulns/{vuln_id}")
                answer.raise_for_status()
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(answer.text)
                found.add(answer.json())
    except httpx.HTTPError as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DlboxError(f"cannot reach the OSV API at {url} ({first}); for an air-gapped scan give "
                         f"--advisories FOLDER|ZIP of OSV records (OSV's PyPI/all.zip)",
                         code="advisories_unavailable") from None
    return found


def load(source: str | None, packages: list[tuple[str, str]], cache: Path | None = None) -> Advisories:
    """Advisories from --advisories SOURCE: an http(s) URL of the OSV API, or a local path; by default
    $DLBOX_ADVISORIES (an air-gapped machine's snapshot), else the OSV API."""
    source = source or os.environ.get("DLBOX_ADVISORIES") or DEFAULT_API
    if re.match(r"https?://", source):
        return load_api(source, packages, cache / "api" if cache else None)
    return load_local(Path(source), cache)
