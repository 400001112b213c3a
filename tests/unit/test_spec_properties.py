"""Properties of the spec's pure core: valid specs round-trip, and every mistake is named.

Specs are drawn from valid building blocks; mutations (a near-miss key, a deleted required key,
a wrong-typed value) are applied at up to three unrelated places, and each place must be named.
"""

from __future__ import annotations

import copy
import difflib
import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlbox.spec import model as spec
from dlbox.errors import UsageError

FAST = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MODELS = [spec.Spec, spec.Base, spec.User, spec.Gpu, spec.Code, spec.Resources, spec.Defaults]
ALL_KEYS = set().union(*(model.model_fields for model in MODELS))
LINE = re.compile(r"dlbox\.yaml:\d+: \S+: \S.*")

# --- valid building blocks -----------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
debian_bases = st.fixed_dictionaries({"debian": st.sampled_from(sorted(spec.DEBIAN_PYTHON))},
                                     optional={"mirror": st.just("http://mirror.example/debian")})
images = st.sampled_from(["debian:bullseye", "python:3.11-slim", "nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04",
                          "registry.example:5000/team/img@sha256:" + "a" * 64])
requirements = st.sampled_from(["six==1.16.0", "numpy==1.23.5", "torch>=2,<3", "requests[socks]==2.31.0",
                                "tomli==2.0.1; python_version < '3.11'", "Jinja2~=3.1", "idna"])
sizes = st.sampled_from(["512m", "8g", "1.5g", 1073741824])
gpus = st.one_of(st.just("all"), st.integers(1, 8), st.lists(st.sampled_from(["GPU-1", "GPU-2", "0"]), min_size=1))
resources = st.fixed_dictionaries({}, optional={
    "memory": sizes, "cpus": st.sampled_from([0.5, 1, 2.0, 16]), "gpus": gpus, "shm_size": sizes,
    "pids": st.integers(16, 4096)})
defaults = st.fixed_dictionaries({}, optional={
    "mounts": st.lists(st.sampled_from(["data:/data:ro", "out:/out", "/abs/path:/mnt"]), max_size=3),
    "resources": resources})
common = {
    "apt": st.lists(st.sampled_from(["git", "curl", "libgl1", "ca-certificates", "g++", "libc6:amd64=2.31-13"]),
                    max_size=4),
    "pip": st.lists(requirements, max_size=4),
    "constraints": st.lists(requirements, max_size=2),
    "user": st.fixed_dictionaries({}, optional={"name": st.from_regex(r"[a-z_][a-z0-9_-]{0,8}", fullmatch=True)
                                                .filter(lambda n: n != "root"),
                                                "uid": st.integers(1000, 60000)}),
    "env": st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                           st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12), max_size=3),
    "code": st.fixed_dictionaries({}, optional={"src": st.sampled_from([".", "src", "app/lib"]),
                                                "dest": st.sampled_from(["/opt/code", "/work/app", "/"])}),
    "workspace": defaults,
    "job": defaults,
}


@st.composite
def valid_specs(draw) -> dict:
    data = {"name": draw(names)}
    if draw(st.booleans()):
        data["base"] = draw(debian_bases)
        if draw(st.booleans()):
            data["python"] = spec.DEBIAN_PYTHON[data["base"]["debian"]]
    else:
        data["base"] = {"image": draw(images)}
        data["python"] = draw(st.sampled_from(["3.9", "3.11", "3.12"]))
        if draw(st.booleans()):
            data["gpu"] = draw(st.fixed_dictionaries({"cuda": st.sampled_from(["11.2", "12", "12.1.1"])}, optional={
                "capabilities": st.lists(st.sampled_from(["compute", "utility", "video"]), max_size=3)}))
    for key in draw(st.lists(st.sampled_from(sorted(common)), unique=True)):
        data[key] = draw(common[key])
    services = draw(st.lists(st.sampled_from(["ssh", "jupyter"]), unique=True))
    if services:
        data["services"] = services
    if "jupyter" in services:  # the spec's own rule: Jupyter needs a server in pip
        data["pip"] = [*data.get("pip", []), "jupyter_server==2.18.2"]
    return data


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@FAST
@given(valid_specs())
def test_valid_specs_parse_and_round_trip(data):
    parsed = spec.parse(dump(data))
    assert parsed.name == data["name"]
    assert spec.parse(spec.to_yaml(parsed)) == parsed
    assert spec.parse(dump(parsed.model_dump(mode="json"))) == parsed


# --- mutations -----------------------------------------------------------------------------------


def dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def near_misses(key: str) -> list[str]:
    """A letter dropped, doubled or swapped with the next: no key dlbox knows."""
    found = set()
    for i in range(len(key)):
        found |= {key[:i] + key[i + 1:], key[:i] + key[i] + key[i:], key[:i] + key[i + 1:i + 2] + key[i] + key[i + 2:]}
    return sorted(found - ALL_KEYS - {key, ""})


def sites(data, path=()) -> list[tuple[str, tuple]]:
    """Where a mutation can go: (kind, path) for every key and value of the spec's own models."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            here = (*path, key)
            if path != ("env",):  # env's keys are the user's names, not dlbox's
                found.append(("rename", here))
            if here in {("name",), ("base",), ("gpu", "cuda")}:
                found.append(("delete", here))
            found.append(("wrong type", here))
            found += sites(value, here)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.append(("wrong type", (*path, index)))
    return found


def mutate(data: dict, kind: str, path: tuple, draw, renamed: dict) -> list[str]:
    """Apply one mutation; the lines the error must hold (as `: place: what` fragments)."""
    *parents, last = path
    node = data
    for part in parents:
        node = node[part]
    if kind == "rename":
        new = draw(st.sampled_from(near_misses(last)))
        node[new] = node.pop(last)
        renamed[dotted((*parents, new))] = last
        expected = [f": {dotted((*parents, new))}: unknown key"]
        if path in {("name",), ("base",), ("gpu", "cuda")}:
            expected.append(f": {dotted(path)}: required key is missing")
        return expected
    if kind == "delete":
        del node[last]
        return [f": {dotted(path)}: required key is missing"]
    node[last] = [1, 2] if isinstance(node[last], dict) else {"x": 1}  # no field takes the other shape
    return [f": {dotted(path)}: "]


def related(a: tuple, b: tuple) -> bool:
    return a[:len(b)] == b or b[:len(a)] == a


def error_lines(message: str) -> list[str]:
    lines = message.split("\n")
    if len(lines) > 1:
        assert lines[0] == f"dlbox.yaml: {len(lines) - 1} errors", message
        lines = lines[1:]
    assert all(LINE.fullmatch(line) for line in lines), message
    assert len({line.split(": ")[1] for line in lines}) == len(lines), "one line per place"
    return lines


@FAST
@given(valid_specs(), st.data())
def test_every_mutation_is_named_at_its_place(data, draw):
    data = copy.deepcopy(data)
    chosen: list[tuple[str, tuple]] = []
    for kind, path in draw.draw(st.lists(st.sampled_from(sites(data)), min_size=1, max_size=3, unique=True)):
        if not any(related(path, other) for _, other in chosen):
            chosen.append((kind, path))
    renamed: dict[str, str] = {}  # the near-miss's place -> the key it stands for
    expected = [fragment for kind, path in chosen for fragment in mutate(data, kind, path, draw.draw, renamed)]
    try:
        spec.parse(dump(data))
    except UsageError as error:
        assert error.exit_code == 2
        lines = error_lines(error.message)
    else:
        raise AssertionError(f"{chosen} parsed")
    for fragment in expected:
        assert any(fragment in line for line in lines), (fragment, lines)
    assert len(lines) == len(expected), lines  # the mutations' errors and nothing besides
    for place, original in renamed.items():
        line = next(line for line in lines if f": {place}: unknown key" in line)
        suggested = re.search(r"did you mean `(\w+)`\?", line)
        assert suggested, line
        typo = place.rsplit(".", 1)[-1]
        closeness = [difflib.SequenceMatcher(None, typo, key).ratio() for key in (suggested[1], original)]
        assert suggested[1] == original or closeness[0] >= closeness[1], line  # or one just as close
