"""CycloneDX SBOMs of an image's lock (cyclonedx-python-lib), and reading one back for a scan.

The image is the subject (metadata.component, type container, its ID as version and sha256 hash);
every Python package is `pkg:pypi/NAME@VERSION`, every dpkg package
`pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-N`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dlbox.errors import UsageError

FORMATS = {"cyclonedx-json": "JSON", "cyclonedx-xml": "XML"}
SPEC_VERSION = "V1_6"


def distro_of(version_id: str | None) -> str | None:
    return f"debian-{version_id}" if version_id else None


def make(*, name: str, image_id: str, python: list[tuple[str, str]], os_packages: list[tuple[str, str]],
         arch: str, distro: str | None, tags: list[str] | None = None, lock_hash: str | None = None):
    """The BOM (a cyclonedx.model.bom.Bom) of an image."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    bom = Bom()
    digest = image_id.removeprefix("sha256:")
    subject = Component(type=ComponentType.CONTAINER, name=name, version=image_id, bom_ref=image_id,
                        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)] if re.fullmatch(r"[0-9a-f]{64}", digest) else [],
                        purl=PackageURL("oci", None, name.rsplit("/", 1)[-1], image_id))
    for tag in tags or []:
        subject.properties.add(Property(name="dlbox:tag", value=tag))
    if lock_hash:
        subject.properties.add(Property(name="dlbox:lock-hash", value=lock_hash))
    bom.metadata.component = subject
    parts = []
    for pkg, version in sorted(python):
        purl = PackageURL("pypi", None, pkg, version)
        parts.append(Component(type=ComponentType.LIBRARY, name=pkg, version=version, purl=purl, bom_ref=str(purl)))
    qualifiers = {"arch": arch, **({"distro": distro} if distro else {})}
    for pkg, version in sorted(os_packages):
        purl = PackageURL("deb", "debian", pkg.split(":")[0], version, qualifiers=qualifiers)
        parts.append(Component(type=ComponentType.LIBRARY, name=pkg.split(":")[0], version=version, purl=purl,
                               bom_ref=str(purl)))
    for part in parts:
        bom.components.add(part)
    bom.register_dependency(subject, parts)
    return bom


def render(bom, fmt: str = "cyclonedx-json") -> str:
    from cyclonedx.output import make_outputter
    from cyclonedx.schema import OutputFormat, SchemaVersion

    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r}; allowed: {', '.join(FORMATS)}")
    return make_outputter(bom, getattr(OutputFormat, FORMATS[fmt]), getattr(SchemaVersion, SPEC_VERSION)) \
        .output_as_string(indent=1)


def validate(text: str, fmt: str = "cyclonedx-json") -> str | None:
    """None when `text` is valid against the CycloneDX schema (shipped with the library: offline),
    else the first error's message."""
    from cyclonedx.schema import OutputFormat, SchemaVersion
    from cyclonedx.validation import make_schemabased_validator

    validator = make_schemabased_validator(getattr(OutputFormat, FORMATS[fmt]), getattr(SchemaVersion, SPEC_VERSION))
    error = validator.validate_str(text)
    return None if error is None else str(error)


def read(path: Path) -> dict:
    """What a CycloneDX SBOM (JSON or XML) says: {subject, python, os, arch, distro} from the purls."""
    from packageurl import PackageURL

    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--sbom: cannot read {path}: {exc.strerror}") from None
    purls: list[str] = []
    subject: dict = {}
    if text.lstrip().startswith("<"):
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise UsageError(f"--sbom: {path} is not CycloneDX XML ({exc})") from None
        ns = {"c": root.tag[1:].split("}")[0]} if root.tag.startswith("{") else {"c": ""}
        meta = root.find("c:metadata/c:component", ns)
        if meta is not None:
            subject = {"name": meta.findtext("c:name", default="", namespaces=ns),
                       "version": meta.findtext("c:version", default="", namespaces=ns)}
        purls = [e.text or "" for e in root.findall("c:components/c:component/c:purl", ns)]
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--sbom: {path} is not CycloneDX JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("bomFormat") != "CycloneDX":
            raise UsageError(f"--sbom: {path} is not a CycloneDX document (no bomFormat CycloneDX)")
        meta = (data.get("metadata") or {}).get("component") or {}
        subject = {"name": meta.get("name", ""), "version": meta.get("version", "")}
        purls = [c.get("purl", "") for c in data.get("components", []) if isinstance(c, dict)]
    python, os_packages, arch, distro = [], [], None, None
    for text_purl in purls:
        try:
            purl = PackageURL.from_string(text_purl)
        except ValueError:
            continue
        if purl.type == "pypi" and purl.version:
            python.append((purl.name, purl.version))
        elif purl.type == "deb" and purl.version:
            os_packages.append((purl.name, purl.version))
            arch = arch or (purl.qualifiers or {}).get("arch")
            distro = distro or (purl.qualifiers or {}).get("distro")
    return {"subject": subject, "python": sorted(python), "os": sorted(os_packages), "arch": arch, "distro": distro}
