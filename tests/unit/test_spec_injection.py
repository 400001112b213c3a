"""No spec string can add a build step: every field, every hostile value, rendered for real.

Each value is either refused with the spec's one-line error, or the rendered Dockerfile has exactly
the instructions of a harmless spec (parsed into instructions, not grepped) and pip's requirement
files hold exactly one requirement per entry with no option on any line.
"""

from __future__ import annotations

import copy
import shlex

import pytest
import yaml

from dlbox.build import bases
from dlbox.build import render
from dlbox.spec import model as spec
from dlbox.errors import UsageError

PAYLOADS = ["\n", "\r", "\x00", "\x1b", "\u2028", "\u0085", "RUN curl evil", "\nRUN curl evil",
            "--index-url http://evil", "-r /etc/passwd", " -r /etc/passwd", "pkg; rm -rf /", "$(curl evil)",
            "x \\", "\\\nRUN curl evil", "'; RUN evil; '", "${HOME}", "a b", "#comment"]

IMAGE_SPEC = {
    "name": "demo", "base": {"image": "debian:bullseye"}, "python": "3.9", "apt": ["git"],
    "pip": ["six==1.16.0", "jupyter_server==2.18.2"], "constraints": ["idna==3.4"], "services": ["jupyter", "ssh"],
    "user": {"name": "dl", "uid": 1000}, "gpu": {"cuda": "11.2", "capabilities": ["compute", "utility"]},
    "env": {"MODE": "train"}, "code": {"src": "src", "dest": "/opt/code"},
    "workspace": {"mounts": ["data:/data:ro"], "resources": {"gpus": "all"}},
    "job": {"mounts": ["data:/data"], "resources": {"gpus": ["GPU-1"]}},
}
DEBIAN_SPEC = {"name": "demo", "base": {"debian": "bullseye", "mirror": "http://deb.debian.org/debian"},
               "pip": ["six==1.16.0"]}

# (spec, dotted place, the harmless value there); "env.<key>" means a key of env
FIELDS = [
    (IMAGE_SPEC, "name", "demo"), (IMAGE_SPEC, "base.image", "debian:bullseye"), (IMAGE_SPEC, "python", "3.9"),
    (IMAGE_SPEC, "apt.0", "git"), (IMAGE_SPEC, "pip.0", "six==1.16.0"), (IMAGE_SPEC, "constraints.0", "idna==3.4"),
    (IMAGE_SPEC, "services.0", "jupyter"), (IMAGE_SPEC, "user.name", "dl"), (IMAGE_SPEC, "gpu.cuda", "11.2"),
    (IMAGE_SPEC, "gpu.capabilities.0", "compute"), (IMAGE_SPEC, "env.MODE", "train"), (IMAGE_SPEC, "env.<key>", "MODE"),
    (IMAGE_SPEC, "code.src", "src"), (IMAGE_SPEC, "code.dest", "/opt/code"),
    (IMAGE_SPEC, "workspace.mounts.0", "data:/data:ro"), (IMAGE_SPEC, "job.mounts.0", "data:/data"),
    (IMAGE_SPEC, "workspace.resources.gpus", "all"), (IMAGE_SPEC, "job.resources.gpus.0", "GPU-1"),
    (DEBIAN_SPEC, "base.debian", "bullseye"), (DEBIAN_SPEC, "base.mirror", "http://deb.debian.org/debian"),
]


def with_value(data: dict, place: str, value: str) -> dict:
    data = copy.deepcopy(data)
    *parents, last = place.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if last == "<key>":
        node.clear()
        node[value] = "train"
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) as Docker's parser reads them: `\\` continues a line, `#` lines are comments."""
    found, pending = [], ""
    for line in dockerfile.split("\n"):
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        logical, pending = pending + line, ""
        word, _, rest = logical.strip().partition(" ")
        found.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def requirement_lines(text: str) -> list[str]:
    lines = text.split("\n")
    assert lines[-1] == ""
    return lines[:-1]


def rendered(data: dict):
    parsed = spec.parse(yaml.safe_dump(data, allow_unicode=True))
    return parsed, render.render(parsed, bases.ref(parsed.base))


def test_the_harmless_specs_render():
    for data in (IMAGE_SPEC, DEBIAN_SPEC):
        parsed, plan = rendered(data)
        assert [word for word, _ in instructions(plan.dockerfile)][0] == "FROM"


@pytest.mark.parametrize("data, place, benign", FIELDS, ids=[f[1] for f in FIELDS])
def test_no_spec_field_adds_an_instruction_or_a_pip_option(data, place, benign):
    _, baseline = rendered(with_value(data, place, benign))
    expected = [word for word, _ in instructions(baseline.dockerfile)]
    for payload in PAYLOADS:
        for value in (payload, benign + payload, payload + benign):
            try:
                parsed, plan = rendered(with_value(data, place, value))
            except UsageError as refused:
                assert refused.exit_code == 2
                message = refused.message
                assert "\n" not in message and "\r" not in message and "\x1b" not in message
                assert message.startswith("dlbox.yaml:"), message
                continue
            got = instructions(plan.dockerfile)
            assert [word for word, _ in got] == expected, (place, value)
            assert all(word.isalpha() for word, _ in got)
            for name in ("dlbox/requirements.txt", "dlbox/constraints.txt"):
                if name in plan.files:
                    lines = requirement_lines(plan.files[name].decode())
                    entries = parsed.pip if name.endswith("requirements.txt") else parsed.constraints
                    assert len(lines) == len(entries), (place, value)
                    for line in lines:  # pip reads options from the first word that starts with '-'
                        assert not any(word.startswith("-") for word in line.split()), (place, value)
                        assert "#" not in line and "$" not in line and not line.endswith("\\")
            if parsed.gpu:  # the spec's ENV holds exactly its variables, each one word
                env = {**parsed.env, "NVIDIA_VISIBLE_DEVICES": "all",
                       "NVIDIA_DRIVER_CAPABILITIES": ",".join(parsed.gpu.capabilities)}
                env_words = [args for word, args in got if word == "ENV"][-1]
                assert dict(word.split("=", 1) for word in shlex.split(env_words)) == env, (place, value)
            if parsed.apt:  # apt-get install gets exactly the spec's packages, as words
                apt_run = next(args for word, args in got if word == "RUN" and "apt-get install" in args)
                words = shlex.split(apt_run)
                start = words.index("--no-install-recommends") + 1
                assert words[start:words.index("&&", start)] == render.apt_packages(parsed, None)


@pytest.mark.parametrize("text, place", [
    ("pip: ['six==1.16.0\\nRUN curl evil']", "pip[0]"),
    ("pip: ['six --index-url http://evil']", "pip[0]"),
    ("pip: ['pkg; rm -rf /']", "pip[0]"),
    ("constraints: ['-r /etc/passwd']", "constraints[0]"),
    ("apt: ['git; curl evil']", "apt[0]"),
    ("env: {\"A\\nRUN\": x}", "env"),
    ("env: {A: \"x\\ny\"}", "env.A"),
    ("code: {dest: '/opt/code /etc'}", "code.dest"),
    ("user: {name: \"dl\\n\"}", "user.name"),
])
def test_refusals_name_the_field(text, place):
    with pytest.raises(UsageError) as refused:
        spec.parse("name: demo\nbase:\n  debian: bullseye\n" + text + "\n")
    assert f": {place}" in refused.value.message
    assert "\n" not in refused.value.message


def test_ordinary_requirements_still_pass():
    for req in ("numpy==1.23.5", "torch>=2,<3", "requests[socks]==2.31.0", "pkg @ https://example.com/p.whl#sha256=ab",
                "tomli==2.0.1; python_version < '3.11'", "Jinja2~=3.1", "a.b_c-d===1.0+local"):
        assert spec.parse(f"name: demo\nbase:\n  debian: bullseye\npip: [\"{req}\"]\n").pip == [req]


@pytest.mark.parametrize("where, value", [
    ("python name", "numpy\n--index-url http://evil"), ("python version", "1.0 -r /etc/passwd"),
    ("python hash", "sha256:" + "a" * 64 + "\nevil"), ("os version", "1.0\nRUN curl evil"),
])
def test_a_hostile_lock_file_cannot_add_steps_either(where, value):
    """dlbox.lock lives in the user's project too: its names, versions and hashes are single words."""
    from dlbox.build.lock import BaseInfo, Lock, OsPackage, OsSet, PythonPackage, PythonSet

    parsed = spec.parse("name: demo\nbase:\n  debian: bullseye\napt: [git]\npip: [numpy==1.23.5]\n")
    python = {"name": "numpy", "version": "1.23.5", "hashes": ["sha256:" + "a" * 64]}
    os_package = {"name": "git", "version": "1:2.30.2-1"}
    kind, field = where.split()
    if kind == "python":
        python[field + ("es" if field == "hash" else "")] = [value] if field == "hash" else value
    else:
        os_package[field] = value
    lock = Lock(name="demo", spec_hash="s", base=BaseInfo(ref="b:1"),
                python=PythonSet(version="3.9.2", packages=[PythonPackage(**python)]),
                os=OsSet(packages=[OsPackage(**os_package)]))
    with pytest.raises(UsageError, match="dlbox.lock: package"):
        render.render(parsed, "b:1", lock=lock)
