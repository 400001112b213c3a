"""Supply chain: scan an image (or an SBOM) against advisories, write an image's SBOM."""

from __future__ import annotations

from pathlib import Path

import click

from dlbox.cli.output import answers

LEVELS = ["low", "medium", "high", "critical"]


@click.command()
@click.argument("image", required=False)
@click.option("--fail-on", type=click.Choice(LEVELS),
              help="Exit 1 when a Python advisory is at or above this severity (Debian's index rates no OS update).")
@click.option("--advisories", metavar="SOURCE",
              help="OSV records: a folder or zip (OSV's PyPI/all.zip) for air-gapped use, or an OSV API URL "
                   "(default: $DLBOX_ADVISORIES, else https://api.osv.dev/v1).")
@click.option("--sbom", "sbom_file", metavar="FILE", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Scan a CycloneDX SBOM (JSON or XML) instead of an image.")
@answers(lambda result, **_: print_scan(result), ok=lambda result: not result["gate"]["failed"])
def scan(backend, image: str | None, fail_on: str | None, advisories: str | None, sbom_file: Path | None):
    """Match IMAGE's lock against advisories: Python packages against OSV records, Debian packages
    against the security suite of the image's release on the mirror. The result is kept with the
    image (`dlbox inspect` shows it)."""
    from dlbox.errors import UsageError

    if (image is None) == (sbom_file is None):
        raise UsageError("give either an IMAGE or --sbom FILE")
    return backend.scan(image, sbom=sbom_file, advisories=advisories, fail_on=fail_on)


def print_scan(r: dict) -> None:
    counts = ", ".join(f"{n} {level}" for level, n in r["counts"].items() if n)
    click.echo(f"{r['image']}  {r['id'] or ''}".rstrip())
    click.echo(f"advisories  {r['advisories']['source']} ({r['advisories']['records']} records)")
    py = r["python"]
    click.echo(f"python      {py['packages']} packages, {len(py['findings'])} findings{' (' + counts + ')' if counts else ''}")
    for f in sorted(py["findings"], key=lambda f: (-LEVELS.index(f["severity"]) if f["severity"] in LEVELS else 1,
                                                    f["package"], f["id"])):
        fixed = f"fixed in {', '.join(f['fixed'])}" if f["fixed"] else "no fix"
        aliases = f"  {' '.join(f['aliases'])}" if f["aliases"] else ""
        click.echo(f"  {f['severity']:<8} {f['id']:<20} {f['package']} {f['version']}  {fixed}{aliases}")
    os_part = r["os"]
    if os_part.get("error"):
        click.echo(f"os          {os_part['packages']} packages: {os_part['error']}")
    else:
        click.echo(f"os          {os_part['packages']} packages, {len(os_part['updates'])} with a security update "
                   f"in {os_part['suite']}")
        for u in os_part["updates"]:
            cves = f"  {' '.join(u['cves'])}" if u["cves"] else ""
            click.echo(f"  {u['package']:<28} {u['installed']} -> {u['fixed']}{cves}")
        if os_part["updates"] and os_part.get("note"):
            click.echo(f"  ({os_part['note']})")
    gate = r["gate"]
    if gate["fail_on"]:
        verdict = f"{gate['at_or_above']} at or above" if gate["failed"] else "none at or above"
        click.echo(f"fail-on     {gate['fail_on']}: {verdict}")


@click.command()
@click.argument("image")
@click.option("--format", "fmt", type=click.Choice(["cyclonedx-json", "cyclonedx-xml"]), default="cyclonedx-json",
              show_default=True)
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the SBOM here instead of standard output.")
def sbom(image: str, fmt: str, output: Path | None) -> None:
    """Write IMAGE's CycloneDX SBOM (1.6): every Debian and Python package with its purl, the image
    as the subject."""
    from dlbox.cli.backend import backend

    document = backend().sbom(image, fmt=fmt)
    if output is None:
        click.echo(document)
    else:
        output.write_text(document + "\n")
        click.echo(f"wrote {output}", err=True)
