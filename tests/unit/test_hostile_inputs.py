"""Hypothesis-driven hostile inputs: huge values, unicode, traversal, shell and Dockerfile metacharacters.

Whatever comes in, the answer is a valid value or one clear line (UsageError / DlboxError; an API
error body of one shape, never a 5xx), and a refused API request leaves nothing half-made. A spec
may have several mistakes: then a count comes first and each mistake gets its own clear line.
"""

from __future__ import annotations

import math
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlbox.containers import mount_policy
from dlbox.server import accounts
from dlbox.containers import policy as containers
from dlbox.spec import model as spec
from dlbox.cli import submit
from dlbox.errors import DlboxError, UsageError

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NASTY = ["\n", "\r\n", "\x00", "\x1b[31m", "\u2028", "\u202e", "..", "../..", "/", "~", "$(id)", "`id`", "${HOME}",
         ";", "&&", "|", "'", '"', "\\", "#", " -r /etc/passwd", "--index-url http://evil", "RUN curl evil",
         "FROM scratch", "*", ":", "::", "=", "%00", "\t", " ", "\ufeff", "é", "日本", "🙂", "a" * 5000]
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(NASTY) | st.text(max_size=8), max_size=6).map("".join),
)


def one_clear_line(error: DlboxError) -> None:
    assert error.message and "\n" not in error.message and "\r" not in error.message
    assert "\x00" not in error.message and "\x1b" not in error.message
    assert "Traceback" not in error.message


def clear_lines_per_error(error: DlboxError) -> None:
    """One clear line, or `dlbox.yaml: N errors` and then exactly one clear line per error."""
    lines = error.message.split("\n")
    if len(lines) > 1:
        count = re.fullmatch(r"dlbox\.yaml: (\d+) errors", lines[0])
        assert count, lines[0]
        errors = int(count[1])
        assert len(lines) == 1 + min(errors, spec.MAX_ERRORS) + (errors > spec.MAX_ERRORS)
    for line in lines:
        one_clear_line(DlboxError(line))
        assert line.startswith("dlbox.yaml"), line


# --- the spec ----------------------------------------------------------------------------------------

SPEC_KEYS = ["name", "base", "python", "apt", "pip", "constraints", "services", "user", "gpu", "env", "code",
             "workspace", "job", "debian", "image", "mirror", "uid", "cuda", "capabilities", "src", "dest",
             "mounts", "resources", "memory", "cpus", "gpus", "shm_size", "pids"]
scalars = st.one_of(hostile_text, st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.booleans(),
                    st.none())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.sampled_from(SPEC_KEYS) | hostile_text, inner, max_size=4), max_leaves=12)


def check_spec_text(text: str) -> None:
    try:
        parsed = spec.parse(text)
    except UsageError as error:
        clear_lines_per_error(error)
        assert error.exit_code == 2
        return
    assert isinstance(parsed, spec.Spec)
    for item in [*parsed.apt, *parsed.pip, *parsed.constraints, *parsed.env, *parsed.env.values()]:
        assert "\n" not in item and "\r" not in item


@FAST
@given(st.dictionaries(st.sampled_from(SPEC_KEYS) | hostile_text, values, max_size=8))
def test_spec_parse_of_hostile_yaml_is_a_spec_or_clear_error_lines(data):
    base = {"name": "demo", "base": {"debian": "bullseye"}}
    check_spec_text(yaml.safe_dump({**base, **data}, allow_unicode=True))


@FAST
@given(st.sampled_from(["apt", "pip", "constraints", "env", "code", "user", "name", "base", "gpu", "workspace"]),
       st.lists(hostile_text, min_size=1, max_size=3))
def test_every_spec_field_takes_hostile_strings_cleanly(field, texts):
    shaped = {"apt": texts, "pip": texts, "constraints": texts, "env": {t: t for t in texts},
              "code": {"src": texts[0], "dest": texts[-1]}, "user": {"name": texts[0]}, "name": texts[0],
              "base": {"image": texts[0]}, "gpu": {"cuda": texts[0], "capabilities": texts},
              "workspace": {"mounts": texts, "resources": {"gpus": texts}}}[field]
    data = {"name": "demo", "base": {"image": "debian:bullseye"}, "python": "3.9", field: shaped}
    check_spec_text(yaml.safe_dump(data, allow_unicode=True))


@FAST
@given(st.text(max_size=300) | st.lists(st.sampled_from(["[", "{", "&a", "*a", "!!python/object", ":", "- ",
                                                           "\n", "  ", "name", "'", "%YAML", "---"]),
                                         max_size=60).map("".join))
def test_spec_parse_of_any_text_is_a_spec_or_clear_error_lines(text):
    check_spec_text(text)


def test_spec_parse_of_deep_nesting_and_huge_values():
    check_spec_text("name: " + "[" * 2000 + "]" * 2000 + "\n")
    check_spec_text("name: demo\nbase: {debian: bullseye}\nenv: {A: '" + "x" * 200_000 + "'}\n")
    check_spec_text("name: demo\nbase: {debian: bullseye}\npip: [" + ",".join(["six"] * 5_000) + "]\n")


# --- mounts, names, expiry, quotas -------------------------------------------------------------------


@FAST
@given(st.lists(hostile_text | st.sampled_from(["/tmp", "/etc", "/", "/data", "ro", "rw", "/proc/self/root",
                                                "/var/run/docker.sock", "~root"]), min_size=1, max_size=4)
       .map(":".join))
def test_parse_mount_is_a_mount_or_one_clear_line(text):
    try:
        mount = mount_policy.parse_mount(text, guarded=True)
    except DlboxError as error:
        one_clear_line(error)
        return
    assert mount.source.startswith("/") and mount.target.startswith("/")
    assert "\x00" not in mount.source and ".." not in mount.target.split("/")


@FAST
@given(hostile_text)
def test_user_and_workspace_names_are_whole_and_clean(name):
    for check in (accounts.check_user_name, containers.check_name):
        try:
            checked = check(name)
        except UsageError as error:
            one_clear_line(error)
            continue
        assert checked == name and name.isascii() and name.isprintable() and "/" not in name
        assert name not in accounts.RESERVED_NAMES or check is containers.check_name


@FAST
@given(hostile_text | st.from_regex(r"\d{1,30}[dhmsy]?", fullmatch=True))
def test_expiry_is_a_time_or_one_clear_line(text):
    try:
        expiry = accounts.parse_expiry(text, now=1000.0)
    except UsageError as error:
        one_clear_line(error)
        return
    assert expiry is None or 1000.0 < expiry <= 1000.0 + accounts.MAX_LIFETIME


@FAST
@given(st.dictionaries(st.sampled_from(list(accounts.QUOTA_KEYS)) | hostile_text,
                       st.one_of(hostile_text, st.sampled_from(["nan", "inf", "-inf", "1e400", "8g", "1e30", "-1"]),
                                 st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.none()),
                       max_size=5))
def test_quotas_are_finite_numbers_or_one_clear_line(pairs):
    try:
        quota = accounts.parse_quota(pairs)
    except UsageError as error:
        one_clear_line(error)
        return
    for key, value in quota.items():
        assert key in accounts.QUOTA_KEYS and math.isfinite(value) and value >= 0


# --- the `dlbox run` argument reader -----------------------------------------------------------------

WORDS = ["--", "--preset", "--image", "--workspace", "--name", "--mount", "--memory", "--cpus", "--gpus", "--param",
         "--json", "--help", "-h", "-", "--cpus=nan", "--cpus=1e400", "--image=", "--param=a=b", "x.yaml", "python",
         "train.py", "--unknown"]


@FAST
@given(st.lists(st.sampled_from(WORDS) | hostile_text, max_size=10))
def test_run_argument_reader_reads_or_leaves_it_to_click(argv):
    found = submit.parse(list(argv))
    if found is None:
        return
    assert found["command"] == argv[len(argv) - len(found["command"]):]
    for key in ("mounts", "params"):
        assert all(isinstance(v, str) and v in " ".join(argv) for v in found[key])
    if found["cpus"] is not None:
        assert isinstance(found["cpus"], float)
    try:
        params = submit.parse_params(found["params"])
    except UsageError as error:
        one_clear_line(error)
    else:
        assert all(k and "=" not in k for k in params)


# --- API bodies ----------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path, no_engine):
    """The server's app on a real SQLite store, with an admin and a user; the engine is out of reach, so
    a request that passes every check ends in the engine's clear error, never a 5xx."""
    from fastapi.testclient import TestClient

    from dlbox.jobs import runner as jobs
    from dlbox.server import app as service
    from dlbox.store.db import Store

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    accounts.add_user(store, "boss", admin=True)
    accounts.add_user(store, "alice")
    tokens = {who: accounts.create_token(store, who)[1] for who in ("boss", "alice")}
    loop = service.Loop(store, capacity=jobs.Capacity(cpus=2, memory=None, gpus=[]))
    client = TestClient(service.create_app(store, loop, mode="server", mount_roots=[tmp_path]),
                        raise_server_exceptions=False)
    yield client, store, tokens


def snapshot(store) -> tuple:
    return ([(u.name, u.role, u.quota) for u in store.users()], sorted(t.id for t in store.tokens()),
            [j.id for j in store.jobs()], [w.name for w in store.workspaces()])


json_scalars = st.one_of(hostile_text, st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(hostile_text, inner, max_size=3), max_leaves=8)
FIELDS = {
    "/api/users": ["name", "admin", "quota"], "/api/tokens": ["name", "expires", "user"],
    "/api/jobs": ["image", "command", "name", "params", "mounts", "workspace", "memory", "cpus", "gpus", "shm_size",
                  "project_dir", "workdir", "reproduces"],
    "/api/workspaces": ["name", "preset", "image", "jupyter", "ssh", "ssh_public_key", "mounts", "memory", "cpus",
                        "gpus", "shm_size", "pids"],
    "/api/users/alice/quota": ["workspaces", "cpus", "memory", "gpus"],
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.sampled_from(sorted(FIELDS)), st.sampled_from(["boss", "alice"]), st.data())
def test_api_bodies_never_5xx_and_refusals_leave_nothing(api, path, who, data):
    client, store, tokens = api
    keys = FIELDS[path] + ["unknown"]
    body = data.draw(st.dictionaries(st.sampled_from(keys), json_values, max_size=6) | json_values)
    before = snapshot(store)
    method = "PUT" if path.endswith("/quota") else "POST"
    response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {tokens[who]}"})
    assert response.status_code < 500, (path, body, response.text)
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"error"} and set(error["error"]) == {"code", "message"}
        assert isinstance(error["error"]["message"], str) and "\n" not in error["error"]["message"]
        assert snapshot(store) == before, (path, body)
    else:  # something was made: clean it so the next example starts from the same store
        made = response.json()
        if path == "/api/users":
            store.remove_user(made["name"])
        elif path == "/api/tokens":
            store.revoke_token(made["id"])
