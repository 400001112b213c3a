"""OS packages against the Debian security suite of their release, from the machine's apt mirror.

The security suite's `Packages` index (main, the image's architecture) names the newest security
upload of each binary package. A package installed at a lower version (compared by python-debian's
implementation of Debian's version ordering, never as strings) has a security update. The index
names no CVE ids, and the security tracker's data is not on a mirror, so a finding gives the
versions, the source package and `cves: []` unless a fuller source is given later.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import re
import time
from pathlib import Path

from debian.debian_support import Version

from dlbox.errors import DlboxError

CODENAMES = {"9": "stretch", "10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}
DEFAULT_MIRROR = "http://deb.debian.org/debian-security"
SOURCES = [Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d")]
MAX_AGE_S = 6 * 3600  # a cached index younger than this is used as is


def compare(a: str, b: str) -> int:
    """Debian's version ordering (epochs, ~, upstream and revision parts): -1, 0 or 1."""
    left, right = Version(a), Version(b)
    return (left > right) - (left < right)


def release_of(os_release: str) -> tuple[str | None, str | None]:
    """(codename, version id) from an /etc/os-release text."""
    fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', os_release, re.M))
    codename = fields.get("VERSION_CODENAME") or CODENAMES.get(fields.get("VERSION_ID", ""))
    return codename or None, fields.get("VERSION_ID") or None


def security_mirror(sources: list[Path] | None = None) -> str:
    """The security archive this machine's apt uses: DLBOX_SECURITY_MIRROR, a source whose suite is
    `*-security`, or the Debian mirror's sibling `debian-security`; else deb.debian.org's."""
    if os.environ.get("DLBOX_SECURITY_MIRROR"):
        return os.environ["DLBOX_SECURITY_MIRROR"].rstrip("/")
    entries: list[tuple[str, list[str]]] = []
    for place in sources or SOURCES:
        files = sorted(place.iterdir()) if place.is_dir() else [place]
        for f in files:
            try:
                text = f.read_text()
            except OSError:
                continue
            if f.suffix == ".sources":
                for stanza in re.split(r"\n\s*\n", text):
                    uris = re.search(r"^URIs:\s*(.+)$", stanza, re.M | re.I)
                    suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M | re.I)
                    if uris and suites:
                        entries += [(u, suites.group(1).split()) for u in uris.group(1).split()]
            else:
                for line in text.splitlines():
                    parts = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
                    if len(parts) >= 3 and parts[0] == "deb":
                        entries.append((parts[1], [parts[2]]))
    for uri, suites in entries:
        if any(s.endswith("-security") or s.endswith("/updates") for s in suites):
            return uri.rstrip("/")
    for uri, _ in entries:
        if re.search(r"/debian/?$", uri):
            return re.sub(r"/debian/?$", "/debian-security", uri)
    return DEFAULT_MIRROR


def parse_index(text: str) -> dict[str, dict]:
    """A Packages index as {package: {version, source, filename, size}}; the highest version where one
    is listed twice."""
    from debian import deb822

    out: dict[str, dict] = {}
    for para in deb822.Packages.iter_paragraphs(io.StringIO(text), use_apt_pkg=False):
        name, version = para.get("Package"), para.get("Version")
        if not name or not version:
            continue
        if name in out and compare(out[name]["version"], version) >= 0:
            continue
        source = (para.get("Source") or name).split()[0]
        out[name] = {"version": version, "source": source, "filename": para.get("Filename"),
                     "size": int(para.get("Size") or 0)}
    return out


def fetch_index(suite: str, arch: str, *, cache: Path, mirror: str | None = None, timeout: float = 30) -> tuple[dict, str]:
    """The security suite's main Packages index for `arch` ({package: {version, source}}, its URL),
    downloaded once and kept under `cache` parsed (refetched after MAX_AGE_S; the old copy is used
    when the mirror does not answer)."""
    import httpx

    mirror = mirror or security_mirror()
    url = f"{mirror}/dists/{suite}/main/binary-{arch}/Packages.xz"
    cached = cache / f"{suite}_main_{arch}.v2.json"
    fresh = cached.is_file() and time.time() - cached.stat().st_mtime < MAX_AGE_S
    if not fresh:
        try:
            answer = httpx.get(url, timeout=timeout, follow_redirects=True)
            answer.raise_for_status()
            index = parse_index(lzma.decompress(answer.content).decode("utf-8", "replace"))
        except (httpx.HTTPError, lzma.LZMAError) as exc:
            if not cached.is_file():
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise DlboxError(f"cannot read {suite} from the mirror {mirror} ({first}); OS packages not scanned")
        else:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(json.dumps({"url": url, "packages": index}))
            tmp.replace(cached)
            return index, url
    try:
        data = json.loads(cached.read_text())
        return data["packages"], data["url"]
    except (ValueError, KeyError):
        cached.unlink(missing_ok=True)  # damaged: fetched again next time
        raise DlboxError(f"the cached index of {suite} was damaged; scan again to fetch it") from None


def updates(installed: list[tuple[str, str]], index: dict[str, dict]) -> list[dict]:
    """Each installed package the security index has a newer version of."""
    out = []
    for name, version in sorted(installed):
        name = name.split(":")[0]  # dpkg's name:arch
        entry = index.get(name)
        if entry and compare(version, entry["version"]) < 0:
            out.append({"package": name, "installed": version, "fixed": entry["version"], "source": entry["source"],
                        "cves": []})
    return out


CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")
TRIES = 3  # binaries of one source tried for a changelog (a doc folder may be a link to another's)


def changelog_cves(changelog) -> list[tuple[str, list[str]]]:
    """(version, CVE ids) of each entry of a debian.changelog.Changelog, newest first."""
    return [(str(block.version), sorted(set(CVE.findall("\n".join(block.changes()))))) for block in changelog]


def cves_between(entries: list[tuple[str, list[str]]], installed: str, fixed: str) -> list[str]:
    """The CVE ids of the uploads after `installed` up to and including `fixed`."""
    return sorted({cve for version, cves in entries
                   if compare(version, installed) > 0 and compare(version, fixed) <= 0 for cve in cves})


def add_cves(found: list[dict], index: dict[str, dict], *, mirror: str, cache: Path, timeout: float = 30) -> list[str]:
    """Fill each update's `cves` from the changelog of the fixing upload: a binary .deb of its source,
    at the fixed version, from the mirror's pool (the smallest first; kept per source and version
    under `cache`). Returns notes on the sources whose changelog could not be read."""
    import httpx
    from debian.debfile import DebFile, DebError

    notes = []
    wanted = sorted({(u["source"], u["fixed"]) for u in found})
    entries: dict[tuple[str, str], list] = {}
    with httpx.Client(timeout=timeout, follow_redirects=True) as http:
        for source, fixed in wanted:
            kept = cache / f"{source}_{fixed}.json"
            if kept.is_file():
                try:
                    entries[(source, fixed)] = json.loads(kept.read_text())
                    continue
                except ValueError:
                    pass
            binaries = sorted((e.get("size", 0), name, e["filename"]) for name, e in index.items()
                              if e["source"] == source and e["version"] == fixed and e.get("filename"))
            for _, name, filename in binaries[:TRIES]:
                try:
                    answer = http.get(f"{mirror}/{filename}")
                    answer.raise_for_status()
                    changelog = DebFile(fileobj=io.BytesIO(answer.content)).changelog()
                except (httpx.HTTPError, DebError, OSError, ValueError, KeyError):
                    continue
                if changelog is not None:
                    entries[(source, fixed)] = changelog_cves(changelog)[:200]
                    cache.mkdir(parents=True, exist_ok=True)
                    kept.write_text(json.dumps(entries[(source, fixed)]))
                    break
            else:
                notes.append(f"{source} {fixed}: no changelog read from the mirror")
    for u in found:
        if (u["source"], u["fixed"]) in entries:
            u["cves"] = cves_between(entries[(u["source"], u["fixed"])], u["installed"], u["fixed"])
    return notes
