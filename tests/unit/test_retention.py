"""`images prune`'s planner (supply/retention.py): properties over generated images and needs, and
how the plan is carried out through Deleters."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.supply import retention

def image(n: int, name: str, created: str) -> dict:
    digest = hashlib.sha256(str(n).encode()).hexdigest()
    return {"id": f"sha256:{digest}", "ref": f"dlbox/{name}:{digest[:12]}", "name": name, "created": created,
            "tags": [f"dlbox/{name}:{digest[:12]}"]}


@st.composite
def worlds(draw):
    names = draw(st.lists(st.sampled_from(["a", "b", "tf", "sk"]), min_size=1, max_size=4, unique=True))
    count = draw(st.integers(0, 12))
    images = [image(n + 1, draw(st.sampled_from(names)),
                    f"2026-12-0{draw(st.integers(1, 3))}T00:00:0{draw(st.integers(0, 9))}Z") for n in range(count)]
    used = draw(st.lists(st.sampled_from(images), unique_by=lambda i: i["id"])) if images else []
    references = {}
    for i in used:  # some by full ID, some by a short one (12+ hex digits), with or without sha256:
        cut = draw(st.sampled_from([64, 12, 20]))
        key = i["id"][7:7 + cut] if draw(st.booleans()) else "sha256:" + i["id"][7:7 + cut]
        references[key] = [f"workspace w{i['id'][-3:]} uses it"]
    return images, references, draw(st.integers(0, 4))


def newer(a: dict, b: dict) -> bool:
    return (a["created"], a["id"]) > (b["created"], b["id"])


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_every_image_is_decided_once_and_nothing_in_use_goes(world):
    images, references, keep = world
    found = retention.plan(images, references, keep)
    kept = [d.image["id"] for d in found.kept]
    gone = [d.image["id"] for d in found.remove]
    assert sorted(kept + gone) == sorted(i["id"] for i in images) and not set(kept) & set(gone)
    for d in found.remove:
        assert retention.needs_of(d.image["id"], references) == []
    used = {i["id"] for i in images if any(i["id"][7:].startswith(k.removeprefix("sha256:")) for k in references)}
    assert used <= set(kept)


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_the_newest_n_of_each_name_stay_and_each_removed_one_has_n_newer(world):
    images, references, keep = world
    found = retention.plan(images, references, keep)
    kept = {d.image["id"] for d in found.kept}
    for i in images:
        same = [o for o in images if o["name"] == i["name"] and newer(o, i)]
        if len(same) < keep:
            assert i["id"] in kept
    for d in found.remove:
        assert sum(1 for o in images if o["name"] == d.image["name"] and newer(o, d.image)) >= keep
    for d in found.kept:  # nothing is kept without a reason, and the reasons say which
        assert d.reasons


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_pruning_again_removes_nothing_more(world):
    images, references, keep = world
    first = retention.plan(images, references, keep)
    left = [d.image for d in first.kept]
    assert retention.plan(left, references, keep).remove == ()


@settings(max_examples=200, deadline=None)
@given(worlds(), st.sampled_from(["a", "b", "tf", "sk"]))
def test_a_name_limits_the_plan_to_that_name(world, name):
    images, references, keep = world
    found = retention.plan(images, references, keep, name=name)
    assert {d.image["name"] for d in found.kept + found.remove} <= {name}
    assert [d.image["id"] for d in found.remove] == [
        d.image["id"] for d in retention.plan(images, references, keep).remove if d.image["name"] == name]


def test_reasons_name_the_newest_rule_and_each_need():
    old, mid, new = image(1, "tf", "2026-12-01T00:00:00Z"), image(2, "tf", "2026-12-02T00:00:00Z"), \
        image(3, "tf", "2026-12-03T00:00:00Z")
    found = retention.plan([old, mid, new], {old["id"][7:19]: ["job abc is queued"]}, 1)
    reasons = {d.image["id"]: d.reasons for d in found.kept}
    assert reasons == {new["id"]: ("one of the newest 1 of tf",), old["id"]: ("job abc is queued",)}
    assert [(d.image["id"], d.reasons) for d in found.remove] == [
        (mid["id"], ("older than the newest 1 of tf, and nothing uses it",))]


def test_a_short_reference_under_12_digits_matches_nothing():
    old, new = image(1, "tf", "2026-12-01T00:00:00Z"), image(2, "tf", "2026-12-02T00:00:00Z")
    assert [d.image["id"] for d in retention.plan([old, new], {old["id"][7:15]: ["x"]}, 1).remove] == [old["id"]]


def test_an_image_without_a_spec_name_counts_under_its_repository():
    assert retention.name_of({"id": "sha256:1", "ref": "dlbox/foo:latest", "name": None}) == "foo"
    assert retention.name_of({"id": "sha256:1", "ref": "localhost:5000/x/foo:1", "name": None}) == "localhost:5000/x/foo"
    assert retention.name_of({"id": "sha256:1", "ref": "sha256:1", "name": None}) == "sha256:1"


@pytest.mark.parametrize("keep", [-1, 10_001, True, 1.5, "2"])
def test_keep_must_be_a_whole_number_in_range(keep):
    with pytest.raises(UsageError, match="--keep"):
        retention.plan([], {}, keep)


class Refusing:
    where = "engine"

    def __init__(self, refuse: dict[str, Exception]):
        self.refuse, self.asked = refuse, []

    def remove(self, image):
        self.asked.append(image["id"])
        if image["id"] in self.refuse:
            raise self.refuse[image["id"]]


def test_apply_removes_through_each_deleter_and_reports_refusals():
    images = [image(n, "tf", f"2026-12-0{n}T00:00:00Z") for n in (1, 2, 3, 4)]
    found = retention.plan(images, {}, 1)
    deleter = Refusing({images[0]["id"]: DlboxError("image is being used by stopped container 1a2b"),
                        images[1]["id"]: NotFound("no image")})
    result = retention.apply(found, [deleter], dry_run=False)
    assert sorted(deleter.asked) == sorted(i["id"] for i in images[:3])
    rows = {r["id"]: r for r in result["remove"]}
    assert rows[images[0]["id"]]["removed"] is False and rows[images[0]["id"]]["errors"] == [
        "engine: image is being used by stopped container 1a2b"]
    assert rows[images[1]["id"]]["removed"] and rows[images[2]["id"]]["removed"]  # already gone is gone
    assert result["failed"] == 1 and [k["id"] for k in result["kept"]] == [images[3]["id"]]


def test_a_dry_run_asks_no_deleter():
    images = [image(n, "tf", f"2026-12-0{n}T00:00:00Z") for n in (1, 2)]
    deleter = Refusing({})
    result = retention.apply(retention.plan(images, {}, 1), [deleter], dry_run=True)
    assert deleter.asked == [] and [r["removed"] for r in result["remove"]] == [False] and result["dry_run"]


def manifest(n: int, repository: str, created: str | None, image_id: str | None = "same") -> dict:
    """A registry image as registry_images lists it: a manifest digest, its tags, its config digest."""
    digest = "sha256:" + hashlib.sha256(f"m{n}".encode()).hexdigest()
    config = "sha256:" + hashlib.sha256(f"c{n}".encode()).hexdigest() if image_id == "same" else image_id
    return {"id": config, "digest": digest, "repository": f"team/{repository}", "tags": [f"v{n}"],
            "ref": f"reg.example:5000/team/{repository}@{digest}", "created": created, "name": repository}


def test_a_recorded_repository_digest_keeps_a_registry_image():
    old, mid, new = (manifest(n, "tf", f"2026-12-0{n}T00:00:00Z") for n in (1, 2, 3))
    found = retention.plan([old, mid, new], {old["ref"]: ["model team/m:1 records it"]}, 1)
    assert {d.image["digest"]: d.reasons for d in found.kept} == {
        new["digest"]: ("one of the newest 1 of tf",), old["digest"]: ("model team/m:1 records it",)}
    assert [d.image["digest"] for d in found.remove] == [mid["digest"]]
    assert found.remove[0].to_json()["digest"] == mid["digest"]


def test_a_registry_image_is_kept_for_its_image_id_too():
    old, new = manifest(1, "tf", "2026-12-01T00:00:00Z"), manifest(2, "tf", "2026-12-02T00:00:00Z")
    found = retention.plan([old, new], {old["id"][7:19]: ["job j1 is running"]}, 1)
    assert found.remove == () and {d.image["digest"] for d in found.kept} == {old["digest"], new["digest"]}


def test_two_manifests_of_one_image_count_as_two_and_an_index_is_never_removed():
    a, b = manifest(1, "tf", "2026-12-01T00:00:00Z"), manifest(2, "tf", "2026-12-02T00:00:00Z")
    b["id"] = a["id"]  # the same config pushed twice (another compression): two manifests
    index = manifest(0, "tf", None, image_id=None)
    found = retention.plan([a, b, index], {}, 0)
    assert sorted(d.image["digest"] for d in found.remove) == sorted([a["digest"], b["digest"]])
    assert [(d.image["digest"], d.reasons) for d in found.kept] == [
        (index["digest"], ("an index of several platforms: not judged, kept",))]
