"""Scanning and SBOMs, pure: OSV range semantics, severities, Debian version order, the answer key
of the tensorflow-2.9 preset against the committed advisory snapshot, CycloneDX validity."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from dlbox.errors import DlboxError, UsageError
from dlbox.spec import model as specs
from dlbox.spec import presets
from dlbox.supply import debian, osv
from dlbox.supply import sbom as sboms
from dlbox.supply import scan

DATA = Path(__file__).resolve().parent.parent / "data" / "advisories"


def record(*ranges, versions=None, name="demo", withdrawn=None, **extra) -> dict:
    entry = {"package": {"ecosystem": "PyPI", "name": name},
             "ranges": [{"type": "ECOSYSTEM", "events": events} for events in ranges]}
    if versions is not None:
        entry["versions"] = versions
    return {"id": "TEST-1", "affected": [entry], **({"withdrawn": withdrawn} if withdrawn else {}), **extra}


# --- OSV ranges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, expected", [
    ("0.1", True), ("1.0", True), ("1.9.9", True), ("2.0", False), ("2.0.1", False), ("3.0rc1", False)])
def test_introduced_zero_fixed(version, expected):
    assert osv.affects(record([{"introduced": "0"}, {"fixed": "2.0"}]), "demo", version) is expected


@pytest.mark.parametrize("version, expected", [("0.9", False), ("1.0", True), ("1.5", True), ("1.5.1", False)])
def test_last_affected_is_inclusive(version, expected):
    assert osv.affects(record([{"introduced": "1.0"}, {"last_affected": "1.5"}]), "demo", version) is expected


def test_multiple_ranges_and_reintroduction():
    two = record([{"introduced": "1.0"}, {"fixed": "1.2"}], [{"introduced": "2.0"}, {"fixed": "2.3"}])
    assert [osv.affects(two, "demo", v) for v in ("0.5", "1.1", "1.2", "1.9", "2.0", "2.2.9", "2.3")] == \
        [False, True, False, False, True, True, False]
    # one range with several events, listed out of order: OSV sorts them by version
    one = record([{"fixed": "2.3"}, {"introduced": "2.0"}, {"fixed": "1.2"}, {"introduced": "1.0"}])
    assert [osv.affects(one, "demo", v) for v in ("1.1", "1.5", "2.1", "2.4")] == [True, False, True, False]


def test_introduced_without_fix_affects_everything_after():
    assert osv.affects(record([{"introduced": "3.1"}]), "demo", "99") is True
    assert osv.affects(record([{"introduced": "3.1"}]), "demo", "3.0") is False


def test_versions_list_and_pep440_equality():
    listed = record(versions=["1.0", "1.1"])
    listed["affected"][0]["ranges"] = []
    assert osv.affects(listed, "demo", "1.1") and osv.affects(listed, "demo", "1.1.0")
    assert not osv.affects(listed, "demo", "1.2")


def test_withdrawn_names_and_ecosystem():
    assert not osv.affects(record([{"introduced": "0"}], withdrawn="2024-01-01T00:00:00Z"), "demo", "1.0")
    assert osv.affects(record([{"introduced": "0"}], name="Jupyter_Server"), "jupyter.server", "1.0")
    other = record([{"introduced": "0"}])
    other["affected"][0]["package"]["ecosystem"] = "npm"
    assert not osv.affects(other, "demo", "1.0")
    git = record()
    git["affected"][0]["ranges"] = [{"type": "GIT", "repo": "x", "events": [{"introduced": "0"}]}]
    assert not osv.affects(git, "demo", "1.0")


def test_pre_releases_and_post_releases_order_by_pep440():
    r = record([{"introduced": "0"}, {"fixed": "2.0"}])
    assert osv.affects(r, "demo", "2.0rc1") and osv.affects(r, "demo", "2.0.dev0")
    assert not osv.affects(r, "demo", "2.0.post1")


versions = st.lists(st.integers(0, 30), min_size=1, max_size=3).map(lambda xs: Version(".".join(map(str, xs))))


@settings(max_examples=200, deadline=None)
@given(versions, versions, versions)
def test_property_between_introduced_and_fixed(a, b, v):
    lo, hi = sorted([a, b])
    if lo == hi:
        return
    r = record([{"introduced": str(lo)}, {"fixed": str(hi)}])
    assert osv.affects(r, "demo", str(v)) is (lo <= v < hi)
    assert not osv.affects(r, "demo", str(hi))


# --- severity ------------------------------------------------------------------------------------------

def test_severity_from_the_record_then_from_cvss():
    assert osv.severity({"database_specific": {"severity": "MODERATE"}}) == ("medium", None)
    v3 = {"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]}
    assert osv.severity(v3) == ("critical", 9.8)
    v3_high = {"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}]}
    assert osv.severity(v3_high) == ("high", 7.5)
    v4 = {"severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N"}]}
    assert osv.severity(v4) == ("high", 8.7)
    assert osv.severity({"severity": [{"type": "CVSS_V3", "score": "garbage"}]}) == ("unknown", None)
    assert osv.severity({}) == ("unknown", None)
    assert osv.at_least("critical", "high") and not osv.at_least("medium", "high") and not osv.at_least("unknown", "low")


# --- the answer key ---------------------------------------------------------------------------------

def preset_pins(name: str) -> list[tuple[str, str]]:
    spec = specs.parse(presets.text(name), source=name)
    return sorted({(osv.normalize(r.split("==")[0]), r.split("==")[1]) for r in [*spec.pip, *spec.constraints]})


def test_tensorflow_preset_matches_the_answer_key_exactly(tmp_path, answer_key):
    key = answer_key
    pins = preset_pins("tensorflow-2.9")
    assert sorted(key) == sorted(f"{n}=={v}" for n, v in pins)
    found = osv.load(str(DATA / "osv"), pins, tmp_path)
    got = {f"{n}=={v}": [] for n, v in pins}
    for f in osv.match(found, pins):
        got[f"{f['package']}=={f['version']}"].append(f["id"])
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in key.items()}
    assert len(got["tensorflow-cpu==2.9.3"]) == 21
    # and the gate: TF's March 2023 batch is rated high
    result = scan.scan_facts({"image": "t", "python": pins, "os": []}, advisories=str(DATA / "osv"), fail_on="high")
    assert result["gate"]["failed"] and result["gate"]["at_or_above"] == result["counts"]["high"] + result["counts"]["critical"] > 0
    assert result["counts"] == {"critical": 1, "high": 17, "medium": 11, "low": 1, "unknown": 0}


def test_zip_source_equals_folder_and_the_index_is_cached(tmp_path):
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((DATA / "osv" / "PyPI").glob("*.json")):
            z.write(f, f.name)
    pins = preset_pins("tensorflow-2.9")
    from_zip = osv.match(osv.load(str(archive), pins, tmp_path / "c"), pins)
    assert from_zip == osv.match(osv.load(str(DATA / "osv"), pins, None), pins)
    assert list((tmp_path / "c").glob("index-*.json"))
    assert osv.match(osv.load(str(archive), pins, tmp_path / "c"), pins) == from_zip  # warm


def test_unreachable_api_names_the_advisories_flag(tmp_path):
    with pytest.raises(DlboxError, match="--advisories") as caught:
        osv.load("http://127.0.0.1:9/v1", [("numpy", "1.0")], tmp_path)
    assert "\n" not in caught.value.message and caught.value.code == "advisories_unavailable"  # 503, never a 500
    with pytest.raises(UsageError, match="--advisories"):
        osv.load(str(tmp_path / "nothing"), [], tmp_path)


# --- Debian ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, order", [
    ("1:1.0", "2.0", 1),  # an epoch outranks everything after it
    ("1.0~rc1", "1.0", -1),  # ~ sorts before the empty string
    ("1.0~rc1", "1.0~rc1~1", 1),
    ("2.31-13+deb11u5", "2.31-13", 1),
    ("2.31-13+deb11u5", "2.31-13+deb11u10", -1),  # numbers compare as numbers, not strings
    ("7.74.0-1.3+deb11u1", "7.74.0-1.3+deb11u14", -1),
    ("1.0-1", "1.0-1", 0),
    ("0:1.0", "1.0", 0),
    ("1.0a", "1.0+", -1),  # letters sort before non-letters
])
def test_debian_version_order(a, b, order):
    assert debian.compare(a, b) == order


INDEX = """Package: libc6
Source: glibc
Version: 2.31-13+deb11u11
Architecture: amd64

Package: curl
Version: 7.74.0-1.3+deb11u14
Architecture: amd64

Package: openssl
Version: 1.1.1w-0+deb11u1
Architecture: amd64
"""


def test_security_updates_from_an_index():
    index = debian.parse_index(INDEX)
    installed = [("libc6", "2.31-13+deb11u5"), ("curl", "7.74.0-1.3+deb11u14"), ("openssl", "1.1.1w-0+deb11u2"),
                 ("bash", "5.1-2+b3")]
    assert debian.updates(installed, index) == [
        {"package": "libc6", "installed": "2.31-13+deb11u5", "fixed": "2.31-13+deb11u11", "source": "glibc", "cves": []}]


def test_security_mirror_from_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("DLBOX_SECURITY_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
                                      "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
                                      "Suites: bookworm-security\nComponents: main\n")
    assert debian.security_mirror([d]) == "http://mirror.example/debian-security"
    one = tmp_path / "sources.list"
    one.write_text("deb [arch=amd64] http://m.example/debian bullseye main\n")
    assert debian.security_mirror([one]) == "http://m.example/debian-security"
    assert debian.release_of('PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nVERSION_ID="11"\n'
                             "VERSION_CODENAME=bullseye\n") == ("bullseye", "11")


def test_unreachable_mirror_is_one_line_and_python_still_scanned(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DLBOX_SECURITY_MIRROR", "http://127.0.0.1:9/debian-security")
    facts = {"image": "t", "python": [("protobuf", "3.19.6")], "os": [("libc6", "2.31-13")], "codename": "bullseye",
             "arch": "amd64"}
    result = scan.scan_facts(facts, advisories=str(DATA / "osv"))
    assert "\n" not in result["os"]["error"] and "bullseye-security" in result["os"]["error"]
    assert {f["id"] for f in result["python"]["findings"]} == {"GHSA-7gcm-g887-7qv7", "GHSA-8qvm-5x2c-j2w7"}


# --- SBOM -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["cyclonedx-json", "cyclonedx-xml"])
def test_sbom_validates_and_reads_back(tmp_path, fmt):
    bom = sboms.make(name="dlbox/tensorflow-2.9", image_id="sha256:" + "ab" * 32,
                     python=preset_pins("tensorflow-2.9"), os_packages=[("libc6", "2.31-13+deb11u5"), ("bash", "5.1-2")],
                     arch="amd64", distro="debian-11", tags=["dlbox/tensorflow-2.9:latest"], lock_hash="cd" * 32)
    text = sboms.render(bom, fmt)
    assert sboms.validate(text, fmt) is None
    assert "pkg:pypi/tensorflow-cpu@2.9.3" in text
    assert "pkg:deb/debian/libc6@2.31-13%2Bdeb11u5?arch=amd64&amp;distro=debian-11" in text or \
        "pkg:deb/debian/libc6@2.31-13%2Bdeb11u5?arch=amd64&distro=debian-11" in text
    path = tmp_path / "bom"
    path.write_text(text)
    read = sboms.read(path)
    assert read["python"] == preset_pins("tensorflow-2.9")
    assert read["os"] == [("bash", "5.1-2"), ("libc6", "2.31-13+deb11u5")]
    assert (read["arch"], read["distro"]) == ("amd64", "debian-11")
    assert read["subject"]["version"] == "sha256:" + "ab" * 32
    result = scan.scan_facts(scan.sbom_facts(path), advisories=str(DATA / "osv"), fail_on="high", os_packages=False)
    assert result["gate"]["failed"] and len(result["python"]["findings"]) == 30


def test_sbom_refuses_what_is_not_cyclonedx(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"spdxVersion": "SPDX-2.3"}')
    with pytest.raises(UsageError, match="--sbom"):
        sboms.read(bad)
    with pytest.raises(UsageError, match="--format"):
        sboms.render(None, "spdx")


def test_results_are_kept_by_image_id(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    result = scan.scan_facts({"image": "t", "id": "sha256:" + "ef" * 32, "python": [("protobuf", "3.19.6")], "os": []},
                             advisories=str(DATA / "osv"))
    scan.keep(result)
    assert scan.stored("sha256:" + "ef" * 32) == result
    assert scan.summary(result)["ids"] == ["GHSA-7gcm-g887-7qv7", "GHSA-8qvm-5x2c-j2w7"]
    assert scan.stored("sha256:" + "00" * 32) is None and scan.stored("../etc") is None


CHANGELOG = """curl (7.74.0-1.3+deb11u3) bullseye-security; urgency=medium

  * CVE-2022-32221: POST following PUT confusion
  * Fix CVE-2022-42915 and CVE-2022-43552

 -- Security <s@example.org>  Mon, 01 Jan 2024 00:00:00 +0000

curl (7.74.0-1.3+deb11u2) bullseye-security; urgency=medium

  * CVE-2022-27774

 -- Security <s@example.org>  Mon, 01 Jan 2023 00:00:00 +0000

curl (7.74.0-1.3+deb11u1) bullseye-security; urgency=medium

  * CVE-2021-22945

 -- Security <s@example.org>  Mon, 01 Jan 2022 00:00:00 +0000
"""


def test_cves_of_the_uploads_after_the_installed_version():
    from debian.changelog import Changelog

    entries = debian.changelog_cves(Changelog(CHANGELOG))
    assert entries[0] == ("7.74.0-1.3+deb11u3", ["CVE-2022-32221", "CVE-2022-42915", "CVE-2022-43552"])
    assert debian.cves_between(entries, "7.74.0-1.3+deb11u1", "7.74.0-1.3+deb11u3") == \
        ["CVE-2022-27774", "CVE-2022-32221", "CVE-2022-42915", "CVE-2022-43552"]
    assert debian.cves_between(entries, "7.74.0-1.3+deb11u2", "7.74.0-1.3+deb11u2") == []


def test_osv_api_querybatch_then_records_by_id_cached(tmp_path):
    import httpx

    records = {p.stem: json.loads(p.read_text()) for p in (DATA / "osv" / "PyPI").glob("GHSA-*.json")}
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/v1/querybatch":
            queries = json.loads(request.content)["queries"]
            # the API answers ids only; say protobuf has both records, and one that does not affect 3.19.6
            return httpx.Response(200, json={"results": [
                {"vulns": [{"id": "GHSA-8qvm-5x2c-j2w7"}, {"id": "GHSA-7gcm-g887-7qv7"}]}
                if q["package"]["name"] == "protobuf" else {} for q in queries]})
        return httpx.Response(200, json=records[request.url.path.rsplit("/", 1)[1]])

    pins = [("protobuf", "3.19.6"), ("numpy", "1.23.5")]
    found = osv.load_api("https://osv.test/v1", pins, tmp_path, transport=httpx.MockTransport(answer))
    assert [f["id"] for f in osv.match(found, pins)] == ["GHSA-7gcm-g887-7qv7", "GHSA-8qvm-5x2c-j2w7"]
    assert asked == ["/v1/querybatch", "/v1/vulns/GHSA-7gcm-g887-7qv7", "/v1/vulns/GHSA-8qvm-5x2c-j2w7"]
    asked.clear()
    osv.load_api("https://osv.test/v1", pins, tmp_path, transport=httpx.MockTransport(answer))
    assert asked == ["/v1/querybatch"]  # the records themselves came from the cache
    kept = tmp_path / "GHSA-8qvm-5x2c-j2w7.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "modified": "2000-01-01T00:00:00Z"}))
    asked.clear()
    osv.load_api("https://osv.test/v1", pins, tmp_path, transport=httpx.MockTransport(modified_answer(answer)))
    assert asked == ["/v1/querybatch", "/v1/vulns/GHSA-8qvm-5x2c-j2w7"]  # changed since: fetched again


def modified_answer(inner):
    """The batch answer with each record's `modified`, as the real API gives it."""
    import httpx

    records = {p.stem: json.loads(p.read_text()) for p in (DATA / "osv" / "PyPI").glob("GHSA-*.json")}

    def answer(request):
        response = inner(request)
        if request.url.path.endswith("/querybatch"):
            body = json.loads(response.content)
            for result in body["results"]:
                for v in result.get("vulns", []):
                    v["modified"] = records[v["id"]]["modified"]
            return httpx.Response(200, json=body)
        return response
    return answer


def test_cli_scans_an_sbom_with_exit_codes(tmp_path):
    import subprocess
    import sys

    bom = sboms.make(name="dlbox/t", image_id="sha256:" + "ab" * 32, python=preset_pins("tensorflow-2.9"),
                     os_packages=[], arch="amd64", distro="debian-11")
    path = tmp_path / "bom.json"
    path.write_text(sboms.render(bom))
    env = {"PYTHONPATH": str(Path(scan.__file__).parents[2]), "DLBOX_HOME": str(tmp_path / "home"),
           "DLBOX_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}

    def dlbox(*args):
        return subprocess.run([sys.executable, "-m", "dlbox", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    high = dlbox("scan", "--sbom", str(path), "--advisories", str(DATA / "osv"), "--fail-on", "high")
    assert high.returncode == 1 and "fail-on     high: 18 at or above" in high.stdout
    critical = dlbox("scan", "--sbom", str(path), "--advisories", str(DATA / "osv"), "--fail-on", "critical", "--json")
    assert critical.returncode == 1 and json.loads(critical.stdout)["gate"]["at_or_above"] == 1
    plain = dlbox("scan", "--sbom", str(path), "--advisories", str(DATA / "osv"))
    assert plain.returncode == 0 and "30 findings" in plain.stdout
    for bad in (["scan"], ["scan", "--sbom", str(path), "--fail-on", "severe"], ["scan", "x", "--sbom", str(path)]):
        refused = dlbox(*bad)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    missing = dlbox("scan", "--sbom", str(path), "--advisories", str(tmp_path / "none"))
    assert missing.returncode == 2 and "--advisories" in missing.stderr
