import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbox.build import lock as locks
from dlbox.errors import UsageError

LISTING = {
    "python_version": "3.9.2",
    "python": [["NumPy", "1.23.5"], ["pip", "24.3.1"], ["typing_extensions", "4.12.2"]],
    "os": [["bash", "5.1-2"], ["git", "1:2.30.2-1"]],
    "report": {"install": [
        {"metadata": {"name": "numpy", "version": "1.23.5"},
         "download_info": {"archive_info": {"hashes": {"sha256": "ab" * 32}}}},
        {"metadata": {"name": "typing-extensions", "version": "4.12.2"},
         "download_info": {"archive_info": {"hash": "sha256=" + "cd" * 32}}},
    ]},
}
BASE = locks.BaseInfo(ref="dlbox-base/debian-bullseye:abc", rootfs_sha256="ef" * 32)


def make(listing=LISTING, **kw):
    return locks.from_listing(name="demo", spec_hash=kw.get("spec_hash", "s"), base=kw.get("base", BASE),
                              listing=listing)


def test_from_listing_normalizes_names_and_attaches_hashes():
    lock = make()
    by_name = {p.name: p for p in lock.python.packages}
    assert list(by_name) == ["numpy", "pip", "typing-extensions"]
    assert by_name["numpy"].hashes == ["sha256:" + "ab" * 32]
    assert by_name["typing-extensions"].hashes == ["sha256:" + "cd" * 32]
    assert by_name["pip"].hashes == []


def test_hash_is_stable_under_listing_order_and_ignores_name_and_spec():
    shuffled = {**LISTING, "python": list(reversed(LISTING["python"])), "os": list(reversed(LISTING["os"]))}
    assert make().hash == make(shuffled).hash
    assert make().hash == make(spec_hash="other").hash


def test_hash_changes_with_any_package_or_the_base():
    bumped = {**LISTING, "os": [["bash", "5.1-3"], ["git", "1:2.30.2-1"]]}
    assert make().hash != make(bumped).hash
    other_base = locks.BaseInfo(ref=BASE.ref, rootfs_sha256="00" * 32)
    assert make().hash != make(base=other_base).hash


def test_drift_reports_added_removed_and_changed():
    found = {"python": [["numpy", "1.24.0"], ["pip", "24.3.1"], ["typing-extensions", "4.12.2"], ["six", "1.16.0"]],
             "os": [["bash", "5.1-2"]]}
    drift = locks.drift(make(), found)
    assert {"kind": "python", "name": "numpy", "locked": "1.23.5", "found": "1.24.0"} in drift
    assert {"kind": "python", "name": "six", "locked": None, "found": "1.16.0"} in drift
    assert {"kind": "os", "name": "git", "locked": "1:2.30.2-1", "found": None} in drift
    assert len(drift) == 3
    assert locks.drift(make(), LISTING) == []


def test_lock_file_round_trips_and_detects_edits(tmp_path):
    path = tmp_path / "dlbox.lock"
    lock = make()
    locks.write(lock, path)
    assert locks.read(path) == lock
    assert json.loads(path.read_text())["lock_hash"] == lock.hash
    path.write_text(path.read_text().replace("1.23.5", "1.23.4"))
    with pytest.raises(UsageError, match="was edited"):
        locks.read(path)


def test_broken_lock_file_is_a_clear_error(tmp_path):
    path = tmp_path / "dlbox.lock"
    path.write_text("{not json")
    with pytest.raises(UsageError, match="is not a dlbox lock"):
        locks.read(path)
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(UsageError, match="spec_hash"):
        locks.read(path)


def test_lock_text_parses_back():
    lock = make()
    assert locks.parse_text(lock.to_json(), source="x") == lock


# names that collide once normalized (NumPy, numpy, num_py...) and a few versions: listings with
# duplicates, as two dist-info folders of one distribution give
pkg_names = st.sampled_from(["numpy", "NumPy", "num_py", "num-py", "six", "Six", "typing_extensions",
                             "typing-extensions", "pip", "zope.interface"])
versions = st.sampled_from(["1.0", "1.0.1", "2", "24.3.1", "1:2.30.2-1"])
pairs = st.lists(st.tuples(pkg_names, versions), max_size=12)


@settings(max_examples=75, deadline=None)
@given(st.data(), pairs, pairs, st.booleans())
def test_hash_does_not_depend_on_listing_order(data, python, os_packages, with_report):
    report = {"install": [{"metadata": {"name": n, "version": v},
                           "download_info": {"archive_info": {"hashes": {"sha256": f"{i:064x}"}}}}
                          for i, (n, v) in enumerate(python)]} if with_report else None
    listing = {"python_version": "3.9.2", "python": python, "os": os_packages, "report": report}
    shuffled = {**listing, "python": data.draw(st.permutations(python)), "os": data.draw(st.permutations(os_packages))}
    assert make(listing).hash == make(shuffled).hash
    assert make(listing) == make(shuffled)
