"""`dlbox scan` and `dlbox sbom`: an image's lock (or an SBOM) against advisories, and the result
kept with the image (a JSON file under $DLBOX_HOME/scans/, named by the image ID).

Facts come from the image without starting it: its lock (LOCK_PATH) and /usr/lib/os-release.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from dlbox import config
from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.supply import debian, osv
from dlbox.supply import sbom as sboms

_ARCH = {"amd64": "amd64", "x86_64": "amd64", "arm64": "arm64", "aarch64": "arm64", "386": "i386", "ppc64le": "ppc64el",
         "s390x": "s390x", "arm": "armhf"}
OS_NOTE = ("the security suite's Packages index on the mirror names no CVE ids (Debian's tracker is not on a "
           "mirror): the fixed version is the security upload's")
OS_NOTE_CVES = ("CVE ids are those the Debian changelog of the fixing uploads names (read from a .deb of each "
                "source in the mirror's pool), from the installed version up to the fixed one")


def image_facts(ref: str) -> dict:
    """What a scan or an SBOM needs of a dlbox image: its lock's packages, release and architecture."""
    from dlbox.build import images
    from dlbox.build import lock as locks
    from dlbox.engine import api as engine

    attrs = images.get(ref)
    # one probe container for both files (each one costs the engine a create and a remove)
    found = engine.read_files(attrs["Id"], [images.LOCK_PATH, "/usr/lib/os-release", "/etc/os-release"])
    if images.LOCK_PATH not in found:
        raise NotFound(f"{ref} has no {images.LOCK_PATH}")
    lock = locks.parse_text(found[images.LOCK_PATH].decode(), source=attrs["Id"])
    text = (found.get("/usr/lib/os-release") or found.get("/etc/os-release") or b"").decode("utf-8", "replace")
    codename, version_id = debian.release_of(text)
    if codename is None:  # a bootstrapped base names its suite: .../debian-bullseye:<hash>
        match = re.search(r"debian-([a-z]+):", lock.base.ref)
        codename = match.group(1) if match else None
        version_id = next((v for v, c in debian.CODENAMES.items() if c == codename), None)
    summary = images.summary(attrs)
    return {"image": ref, "id": attrs["Id"], "name": summary.get("name") or ref, "tags": summary["tags"],
            "lock_hash": lock.hash, "python": [(p.name, p.version) for p in lock.python.packages],
            "os": [(p.name, p.version) for p in lock.os.packages],
            "arch": _ARCH.get(attrs.get("Architecture", ""), attrs.get("Architecture") or "amd64"),
            "codename": codename, "version_id": version_id}


def sbom_facts(path: Path) -> dict:
    read = sboms.read(path)
    version_id = (read["distro"] or "").removeprefix("debian-") or None
    return {"image": read["subject"].get("name") or str(path), "id": read["subject"].get("version") or None,
            "sbom": str(path), "python": read["python"], "os": read["os"], "arch": read["arch"] or "amd64",
            "codename": debian.CODENAMES.get(version_id or ""), "version_id": version_id}


def _cache(*parts: str) -> Path:
    return config.cache_dir().joinpath("supply", *parts)


def scan_facts(facts: dict, *, advisories: str | None = None, fail_on: str | None = None,
               os_packages: bool = True, os_cves: bool = True) -> dict:
    """The scan of one set of facts: Python findings, OS security updates, counts and the gate."""
    if fail_on is not None and fail_on not in osv.SEVERITIES:
        raise UsageError(f"--fail-on: {fail_on!r}; allowed: {', '.join(osv.SEVERITIES)}")
    started = time.monotonic()
    found = osv.load(advisories, facts["python"], _cache("osv"))
    findings = osv.match(found, facts["python"])
    result: dict = {
        "image": facts["image"], "id": facts.get("id"), "sbom": facts.get("sbom"),
        "scanned_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "advisories": {"source": found.source, "records": found.count},
        "python": {"packages": len(facts["python"]), "findings": findings},
        "os": _os_part(facts, os_cves) if os_packages else {"packages": len(facts["os"]), "updates": [], "error": "not asked"},
    }
    counts = {level: 0 for level in [*reversed(osv.SEVERITIES), "unknown"]}
    for f in findings:
        counts[f["severity"]] += 1
    result["counts"] = counts
    at_or_above = [f["id"] for f in findings if fail_on and osv.at_least(f["severity"], fail_on)]
    result["gate"] = {"fail_on": fail_on, "failed": bool(at_or_above), "at_or_above": len(at_or_above)}
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def _os_part(facts: dict, cves: bool = True) -> dict:
    part = {"packages": len(facts["os"]), "suite": None, "index": None, "updates": [], "error": None, "note": OS_NOTE}
    if not facts["os"]:
        return part
    if not facts.get("codename"):
        part["error"] = "the image's Debian release is not known (no os-release); OS packages not scanned"
        return part
    suite = f"{facts['codename']}-security"
    part["suite"] = suite
    try:
        index, url = debian.fetch_index(suite, facts["arch"], cache=_cache("debian"))
    except DlboxError as exc:
        part["error"] = exc.message
        return part
    part["index"] = url
    part["updates"] = debian.updates(facts["os"], index)
    if cves and part["updates"]:
        mirror = url.split("/dists/")[0]
        missing = debian.add_cves(part["updates"], index, mirror=mirror, cache=_cache("debian", "changelogs"))
        part["note"] = OS_NOTE_CVES + (f"; not read: {', '.join(missing)}" if missing else "")
    return part


# --- results kept with the image ------------------------------------------------------------------


def _results_dir() -> Path:
    return config.home() / "scans"


def _result_path(image_id: str) -> Path:
    digest = image_id.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{12,64}", digest):
        raise UsageError(f"not an image ID: {image_id!r}")
    return _results_dir() / f"{digest}.json"


def keep(result: dict) -> None:
    path = _result_path(result["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True))
    tmp.replace(path)


def stored(image_id: str) -> dict | None:
    """The last scan kept for an image, or None."""
    try:
        return json.loads(_result_path(image_id).read_text())
    except (OSError, ValueError, UsageError):
        return None


def summary(result: dict | None) -> dict | None:
    """What `inspect` shows of a kept scan."""
    if not result:
        return None
    return {"scanned_at": result["scanned_at"], "advisories": result["advisories"]["source"],
            "counts": result["counts"], "findings": len(result["python"]["findings"]),
            "ids": sorted({f["id"] for f in result["python"]["findings"]}),
            "os_updates": len(result["os"]["updates"]), "os_error": result["os"].get("error"),
            "gate": result.get("gate")}


# --- the commands ---------------------------------------------------------------------------------


def scan(image: str | None = None, *, sbom: Path | None = None, advisories: str | None = None,
         fail_on: str | None = None) -> dict:
    """`dlbox scan`: an image (its result kept with it) or an SBOM file."""
    if (image is None) == (sbom is None):
        raise UsageError("give either an IMAGE or --sbom FILE")
    if sbom is not None:
        return scan_facts(sbom_facts(sbom), advisories=advisories, fail_on=fail_on)
    result = scan_facts(image_facts(image), advisories=advisories, fail_on=fail_on)
    keep(result)
    return result


def gate(image: str, *, fail_on: str, advisories: str | None = None) -> dict:
    """A pipeline build stage's scan of its image, kept with the image like `dlbox scan`'s. The OS updates
    come without their CVE ids (each would cost a .deb download): the gate judges Python advisories."""
    result = scan_facts(image_facts(image), advisories=advisories, fail_on=fail_on, os_cves=False)
    keep(result)
    return result


def gate_text(result: dict, most: int = 10) -> str:
    """The gate's verdict in one line, naming the findings at or above its level (the worst first)."""
    level = result["gate"]["fail_on"]
    above = sorted((f for f in result["python"]["findings"] if osv.at_least(f["severity"], level)),
                   key=lambda f: (-osv.SEVERITIES.index(f["severity"]), f["package"], f["id"]))
    source = result["advisories"]["source"]
    if not above:
        return f"scan passed: no advisory at or above {level} ({len(result['python']['findings'])} below; {source})"
    named = ", ".join(f"{f['id']} ({f['package']} {f['version']}, {f['severity']})" for f in above[:most])
    more = f" and {len(above) - most} more" if len(above) > most else ""
    return f"scan failed: {len(above)} advisories at or above {level}: {named}{more} ({source})"


def inspect(ref: str) -> dict:
    """`dlbox inspect`: the image with its lock, and its last scan."""
    from dlbox.build import images

    found = images.inspect(ref)
    return {**found, "scan": summary(stored(found["id"]))}


def sbom(image: str, *, fmt: str = "cyclonedx-json") -> str:
    """`dlbox sbom`: the image's CycloneDX document."""
    if fmt not in sboms.FORMATS:
        raise UsageError(f"--format: {fmt!r}; allowed: {', '.join(sboms.FORMATS)}")
    facts = image_facts(image)
    bom = sboms.make(name=facts["name"], image_id=facts["id"], python=facts["python"], os_packages=facts["os"],
                     arch=facts["arch"], distro=sboms.distro_of(facts["version_id"]), tags=facts["tags"],
                     lock_hash=facts["lock_hash"])
    return sboms.render(bom, fmt)
