"""Scanning and SBOMs of the built tensorflow-2.9 preset: the answer key matched exactly, the gate,
the SBOM valid, and the OS scan against what apt itself says the image lacks from bullseye-security."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "advisories"


@pytest.fixture(scope="module")
def scanned(dlbox, tf_image) -> dict:
    result = dlbox("scan", tf_image["id"], "--advisories", str(DATA / "osv"), "--json", check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_scan_matches_the_answer_key_and_is_kept(scanned, dlbox, tf_image, answer_key):
    key = answer_key
    lock = dlbox.json("inspect", tf_image["id"])["lock"]
    got = {f"{p['name']}=={p['version']}": [] for p in lock["python"]["packages"]}
    for f in scanned["python"]["findings"]:
        got[f"{f['package']}=={f['version']}"].append(f["id"])
    assert set(key) <= set(got)  # the image also holds pip, setuptools, wheel: no records name them
    assert {k: sorted(v) for k, v in got.items() if k in key} == {k: sorted(v) for k, v in key.items()}
    assert all(not v for k, v in got.items() if k not in key)
    assert len(got["tensorflow-cpu==2.9.3"]) == 21
    shown = dlbox.json("inspect", tf_image["id"])["scan"]
    assert shown["findings"] == 30 and shown["ids"] == sorted({f["id"] for f in scanned["python"]["findings"]})


def test_fail_on_high_exits_1(dlbox, tf_image):
    result = dlbox("scan", tf_image["id"], "--advisories", str(DATA / "osv"), "--fail-on", "high", check=False)
    assert result.returncode == 1, result.stderr
    assert "fail-on     high:" in result.stdout and "GHSA-68v3-g9cm-rmm6" in result.stdout
    unreachable = dlbox("scan", tf_image["id"], "--advisories", "http://127.0.0.1:9/v1", check=False)
    assert unreachable.returncode == 1 and "--advisories" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


def test_sbom_validates_and_scans_the_same(dlbox, tf_image, tmp_path, scanned):
    from dlbox.supply import sbom

    for fmt in ("cyclonedx-json", "cyclonedx-xml"):
        out = tmp_path / f"bom.{fmt}"
        dlbox("sbom", tf_image["id"], "--format", fmt, "-o", str(out))
        text = out.read_text()
        assert sbom.validate(text, fmt) is None
        assert "pkg:pypi/tensorflow-cpu@2.9.3" in text and "distro=debian-11" in text
    document = json.loads((tmp_path / "bom.cyclonedx-json").read_text())
    assert document["metadata"]["component"]["version"] == tf_image["id"]
    lock = dlbox.json("inspect", tf_image["id"])["lock"]
    assert len(document["components"]) == len(lock["python"]["packages"]) + len(lock["os"]["packages"])
    again = json.loads(dlbox("scan", "--sbom", str(tmp_path / "bom.cyclonedx-json"), "--advisories", str(DATA / "osv"),
                             "--json").stdout)
    assert again["python"]["findings"] == scanned["python"]["findings"]
    assert again["os"]["updates"] == scanned["os"]["updates"]


def test_os_scan_lists_what_apt_says_the_image_lacks(scanned, docker_client, tf_image):
    if scanned["os"]["error"]:
        pytest.skip(f"the mirror is not reachable here: {scanned['os']['error']}")
    updates = scanned["os"]["updates"]
    assert updates and scanned["os"]["suite"] == "bullseye-security"
    mirror = scanned["os"]["index"].split("/dists/")[0]
    script = (f"echo 'deb {mirror} bullseye-security main' > /tmp/security.list && "
              "apt-get -qq -o Dir::Etc::SourceList=/tmp/security.list -o Dir::Etc::SourceParts=- update && "
              "apt list --upgradable -o Dir::Etc::SourceList=/tmp/security.list -o Dir::Etc::SourceParts=- "
              "2>/dev/null")
    try:
        out = docker_client.containers.run(tf_image["id"], ["bash", "-c", script], user="root", remove=True,
                                           entrypoint=[]).decode()
    except Exception as exc:  # the container has no way to the mirror: compare what can be compared
        pytest.skip(f"apt in the image cannot reach the mirror: {str(exc).splitlines()[0]}")
    apt = {}
    for line in out.splitlines():  # name/bullseye-security 1.2-3 amd64 [upgradable from: 1.2-2]
        if "/" in line and "upgradable from:" in line:
            name, rest = line.split("/", 1)
            apt[name] = (rest.split("upgradable from: ")[1].rstrip("]"), rest.split()[1])
    assert {u["package"]: (u["installed"], u["fixed"]) for u in updates} == apt
