"""The registry's pure parts and local files: references, where a push goes, the credential store as
docker reads it, how registry errors read, and cosign-format signatures made and checked with the real
openssl. The registry itself is tests/engine/test_registry.py's."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from dlbox.engine import registry as engine_registry
from dlbox.errors import DlboxError
from dlbox.supply import distribute, signing
from dlbox.supply.registry import parse

DIGEST = "sha256:" + "ab" * 32


def test_references_name_their_registry():
    ref = parse(f"127.0.0.1:5000/team/dlbox/tf:v1@{DIGEST}")
    assert (ref.host, ref.name, ref.tag, ref.digest) == ("127.0.0.1:5000", "team/dlbox/tf", "v1", DIGEST)
    assert str(ref) == f"127.0.0.1:5000/team/dlbox/tf:v1@{DIGEST}"
    assert parse("reg.example.com/x").tag is None


@pytest.mark.parametrize("bad", ["dlbox/tf", "127.0.0.1:5000/", "127.0.0.1:5000/UPPER", "127.0.0.1:5000/a@sha256:1",
                                 "127.0.0.1:5000/a:bad tag", "127.0.0.1:5000/../x", "a b/c"])
def test_bad_references_are_usage_errors(bad):
    with pytest.raises(DlboxError) as err:
        parse(bad)
    assert err.value.code == "invalid" and err.value.exit_code == 2


def test_a_push_keeps_the_repository_path_under_the_target():
    attrs = {"Id": "sha256:" + "cd" * 32, "RepoTags": ["dlbox/tensorflow-2.9:latest"]}
    assert str(distribute.target("dlbox/tensorflow-2.9:v2", attrs, "reg:5000/team")) == \
        "reg:5000/team/dlbox/tensorflow-2.9:v2"
    assert str(distribute.target("cdcdcdcdcdcd", attrs, "reg:5000")) == "reg:5000/dlbox/tensorflow-2.9:latest"
    assert str(distribute.target("other.io:1/a/b", attrs, "reg:5000")) == "reg:5000/a/b:latest"
    for registry in ("reg:5000/Team", "not a host", "reg:5000/../x"):
        with pytest.raises(DlboxError) as err:
            distribute.target("dlbox/tf:1", attrs, registry)
        assert err.value.code == "invalid"
    with pytest.raises(DlboxError, match="no name to push it under"):
        distribute.target("sha256:" + "cd" * 32, {**attrs, "RepoTags": []}, "reg:5000")


def test_credentials_are_kept_as_docker_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    (tmp_path / "dc").mkdir()
    (tmp_path / "dc" / "config.json").write_text(json.dumps({"auths": {"other:1": {"auth": "eDp5"}},
                                                             "detachKeys": "ctrl-q"}))
    engine_registry._store("reg:5000", "alice", "s3cret:with:colons")
    path = tmp_path / "dc" / "config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    kept = json.loads(path.read_text())
    assert kept["detachKeys"] == "ctrl-q" and kept["auths"]["other:1"] == {"auth": "eDp5"}  # the rest stays
    assert base64.b64decode(kept["auths"]["reg:5000"]["auth"]) == b"alice:s3cret:with:colons"
    assert engine_registry.credentials("reg:5000") == {"username": "alice", "password": "s3cret:with:colons"}
    assert engine_registry.credentials("nobody:1") is None
    import docker.auth  # docker's own reader finds the same

    assert docker.auth.load_config(str(path)).resolve_authconfig("reg:5000")["password"] == "s3cret:with:colons"


def test_registry_errors_read_as_one_line_of_ours():
    cases = {
        "unauthorized: incorrect username or password": "registry_auth",
        "Get https://r:5/v2/: no basic auth credentials": "registry_auth",
        "x509: certificate signed by unknown authority": "registry_unavailable",
        "dial tcp 127.0.0.1:9: connect: connection refused": "registry_unavailable",
        "manifest unknown": "not_found",
    }
    for said, code in cases.items():
        err = engine_registry.refusal("r:5", said)
        assert err.code == code, said
        assert "\n" not in err.message
    assert "incorrect" not in engine_registry.refusal("r:5", "unauthorized: incorrect username or password").message


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    raw, key, pub = folder / "raw.pem", folder / "key.pem", folder / "key.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(raw)], check=True)
    subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(raw), "-out", str(key)], check=True)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return key, pub


def test_signatures_verify_and_a_changed_payload_does_not(key_pair):
    key, pub = key_pair
    data = signing.payload("reg:5000/a/b", DIGEST)
    assert json.loads(data) == {"critical": {"identity": {"docker-reference": "reg:5000/a/b"},
                                             "image": {"docker-manifest-digest": DIGEST},
                                             "type": "cosign container image signature"}, "optional": None}
    signature = signing.sign_bytes(key, data)
    assert signing.verify_bytes(pub, data, signature)
    assert not signing.verify_bytes(pub, signing.payload("reg:5000/a/b", "sha256:" + "cd" * 32), signature)
    assert not signing.verify_bytes(pub, data, "bm90IGEgc2lnbmF0dXJl")
    assert not signing.verify_bytes(pub, data, "%%%")
    assert signing.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


def test_a_key_that_is_no_key_is_a_usage_error(tmp_path, key_pair):
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DlboxError) as err:
        signing.sign_bytes(junk, b"x")
    assert err.value.code == "invalid" and "c2VjcmV0" not in err.value.message
    with pytest.raises(DlboxError) as err:
        signing.check_public_key(junk)
    assert err.value.code == "invalid"


def test_the_servers_verify_key_must_be_a_public_key(tmp_path, key_pair):
    """`dlbox server --verify-key` checks its key before serving: a bad one is a one-line usage error
    (a server that started would outlive the timeout)."""
    import os
    import sys

    junk = tmp_path / "junk.pub"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nc2VjcmV0\n-----END PUBLIC KEY-----\n")
    env = {**os.environ, "DLBOX_HOME": str(tmp_path / "home")}
    for bad, said in ((junk, "is no public key"), (tmp_path / "none.pub", "no key file at")):
        done = subprocess.run([sys.executable, "-m", "dlbox", "server", "--port", "1", "--verify-key", str(bad)],
                              capture_output=True, text=True, timeout=60, env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith("error: --verify-key: ") and said in lines[0] and "c2VjcmV0" not in done.stderr
