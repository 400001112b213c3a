"""The registry against a real one (tests/engine/registry_server.py: Debian's docker-registry with
bcrypt htpasswd and TLS): login, push and pull by digest on an engine that lost the image, a run
reproduced from the registry, immutable tags, wrong credentials, and signatures: sign, verify,
tamper, refuse. Images are children of the session's small image (one commit with a label of
their own), so each has an ID of its own that a test may delete."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

import registry_server


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if missing := registry_server.missing_tools():
        pytest.fail(f"the registry tests need {', '.join(missing)} (scripts/host-setup.sh packages)", pytrace=False)
    with registry_server.running(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory) -> dict:
    """The engine's credential store of this module: a DOCKER_CONFIG of its own, never the user's."""
    return {"DOCKER_CONFIG": str(tmp_path_factory.mktemp("docker-config"))}


@pytest.fixture(scope="module")
def reg(dlbox, registry, docker_config):
    """dlbox with this module's credential store, logged in."""

    def run(*args, check=True, stdin=None):
        if stdin is None:
            return dlbox(*args, check=check, extra_env=docker_config)
        import sys

        return subprocess.run([sys.executable, "-m", "dlbox", *args], input=stdin, text=True, capture_output=True,
                              env={**dlbox.env, **docker_config}, timeout=600, check=check)

    login = run("login", registry.host, "--username", registry.username, "--password-stdin",
                stdin=registry.password + "\n")
    assert login.returncode == 0, login.stderr
    assert registry.password not in login.stdout + login.stderr
    return run


@pytest.fixture(scope="module")
def child(docker_client, small_image, run_id):
    """child(name) -> image ID: the small image plus one label, tagged t<run>-reg/NAME:v1."""
    made = []

    def make(name: str) -> str:
        container = docker_client.containers.create(small_image["id"], command=["true"],
                                                    labels={"dlbox.test-run": run_id})
        try:
            image = container.commit(repository=f"t{run_id}-reg/{name}", tag="v1",
                                     changes=[f"LABEL dlbox.test-run={run_id} dlbox.regtest={name}"])
        finally:
            container.remove(force=True)
        made.append(image.id)
        return image.id

    yield make
    for image_id in made:
        try:
            docker_client.images.remove(image_id, force=True)
        except Exception:  # noqa: BLE001 - a test removed it already
            pass


def forget(docker_client, image_id: str) -> None:
    """Remove the image from the engine by every name it has (tags and repository digests)."""
    docker_client.api.remove_image(image_id, force=True)  # by ID with force: every tag and digest goes
    with pytest.raises(Exception):
        docker_client.api.inspect_image(image_id)


def ask(registry, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
    """The registry's HTTP API, straight (no dlbox code), with the test's credentials."""
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                             "application/vnd.docker.distribution.manifest.v2+json"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(f"https://{registry.host}{path}", data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(registry.ca))) as answer:
        return answer.status, answer.read(), dict(answer.headers)


def keys(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    raw, key, pub = folder / "raw.pem", folder / "key.pem", folder / "key.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(raw)], check=True)
    subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(raw), "-out", str(key)], check=True)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return key, pub


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_wrong_credentials_give_one_line_and_keep_nothing(dlbox, registry, tmp_path, child, run_id):
    store = {"DOCKER_CONFIG": str(tmp_path / "elsewhere")}
    import sys

    wrong = subprocess.run([sys.executable, "-m", "dlbox", "login", registry.host, "--username", registry.username,
                            "--password-stdin"], input="not-the-password\n", text=True, capture_output=True,
                           env={**dlbox.env, **store}, timeout=120)
    assert wrong.returncode == 1
    assert "refused the credentials" in one_line_error(wrong) and "not-the-password" not in wrong.stderr
    assert not (tmp_path / "elsewhere" / "config.json").exists()
    image = child("nologin")
    unauthenticated = dlbox("push", image, "--registry", registry.host, check=False, extra_env=store)
    assert unauthenticated.returncode == 1 and "refused the credentials" in one_line_error(unauthenticated)
    bad = dlbox("push", image, "--registry", "not a host", check=False, extra_env=store)
    assert bad.returncode == 2 and "not a registry address" in one_line_error(bad)


def test_login_keeps_credentials_where_docker_does(reg, registry, docker_config, dlbox):
    path = Path(docker_config["DOCKER_CONFIG"]) / "config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    kept = json.loads(path.read_text())["auths"][registry.host]["auth"]
    assert base64.b64decode(kept).decode() == f"{registry.username}:{registry.password}"
    home = Path(dlbox.env["DLBOX_HOME"])  # nothing of dlbox's own holds the password
    for file in home.rglob("*"):
        if file.is_file() and file.stat().st_size < 50_000_000:
            assert registry.password.encode() not in file.read_bytes(), file


def test_push_then_pull_by_digest_on_an_engine_without_the_image(reg, registry, child, docker_client, run_id):
    image = child("roundtrip")
    pushed = json.loads(reg("push", f"t{run_id}-reg/roundtrip:v1", "--registry", f"{registry.host}/team",
                            "--json").stdout)
    assert pushed["repository"] == f"{registry.host}/team/t{run_id}-reg/roundtrip" and pushed["id"] == image
    status, body, headers = ask(registry, "GET", f"/v2/team/t{run_id}-reg/roundtrip/manifests/v1")
    assert headers["Docker-Content-Digest"] == pushed["digest"]
    assert json.loads(body)["config"]["digest"] == image
    text = reg("push", f"t{run_id}-reg/roundtrip:v1", "--registry", f"{registry.host}/team").stdout
    assert text.strip() == pushed["ref"]  # the same image again: the same digest, no refusal
    forget(docker_client, image)
    pulled = json.loads(reg("pull", pushed["ref"], "--json").stdout)
    assert pulled["id"] == image and pushed["ref"] in pulled["repo_digests"]
    by_tag = reg("pull", f"{pushed['repository']}:v1", check=False)
    assert by_tag.returncode == 2 and "has no digest" in one_line_error(by_tag)


def test_an_immutable_tag_is_refused_unless_forced(reg, registry, child, run_id):
    first, second = child("imm-a"), child("imm-b")
    target = f"{registry.host}/imm"
    a = json.loads(reg("push", f"t{run_id}-reg/imm-a:v1", "--registry", target, "--json").stdout)
    # the second image under the first one's name and tag
    subprocess.run(["docker", "tag", second, f"t{run_id}-reg/imm-a:v1"], check=True)
    refused = reg("push", f"t{run_id}-reg/imm-a:v1", "--registry", target, check=False)
    assert refused.returncode == 1
    assert "already points at another image" in one_line_error(refused) and "--force" in refused.stderr
    _, body, headers = ask(registry, "GET", f"/v2/imm/t{run_id}-reg/imm-a/manifests/v1")
    assert headers["Docker-Content-Digest"] == a["digest"]  # the tag did not move
    forced = json.loads(reg("push", f"t{run_id}-reg/imm-a:v1", "--registry", target, "--force", "--json").stdout)
    assert forced["id"] == second and forced["moved_from"] == a["digest"] and forced["digest"] != a["digest"]
    _, body, headers = ask(registry, "GET", f"/v2/imm/t{run_id}-reg/imm-a/manifests/v1")
    assert headers["Docker-Content-Digest"] == forced["digest"]
    assert first != second


def test_a_run_is_reproduced_from_the_registry(reg, registry, child, docker_client, run_id):
    image = child("repro")
    pushed = json.loads(reg("push", f"t{run_id}-reg/repro:v1", "--registry", registry.host, "--json").stdout)
    original = json.loads(reg("run", "--image", image, "--no-code", "--param", "seed=7", "--json", "--",
                              "python", "-c", "import six; print('six', six.__version__)").stdout)["id"]
    reg("wait", original, "--timeout", "300")
    record = json.loads(reg("runs", "show", original, "--json").stdout)
    assert record["image_id"] == image and pushed["ref"] in record["repo_digests"]
    forget(docker_client, image)
    again = reg("reproduce", original, "--json")
    assert f"pulling {pushed['ref']}" in again.stderr and "rebuilding" not in again.stderr
    job_id = json.loads(again.stdout)["id"]
    reg("wait", job_id, "--timeout", "300")
    second = json.loads(reg("runs", "show", job_id, "--json").stdout)
    assert second["image_id"] == image and second["reproduces"] == original
    assert second["params"] == record["params"] and second["command"] == record["command"]
    assert reg("logs", job_id).stdout == "six 1.16.0\n"


def test_sign_verify_tamper_refuse(reg, registry, child, docker_client, docker_config, run_id, tmp_path):
    key, pub = keys(tmp_path / "ours")
    _, other_pub = keys(tmp_path / "theirs")
    good, evil = child("signed"), child("evil")
    target = f"{registry.host}/sig"
    signed = json.loads(reg("push", f"t{run_id}-reg/signed:v1", "--registry", target, "--sign", str(key),
                            "--json").stdout)
    name = f"sig/t{run_id}-reg/signed"
    sig_tag = signed["digest"].replace(":", "-") + ".sig"
    assert signed["signed"]["signature_tag"] == f"{signed['repository']}:{sig_tag}"

    # the signature is cosign's layout, read and checked here without dlbox: skopeo reads the manifest,
    # openssl checks the ECDSA signature over the simple-signing payload
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--authfile", str(Path(docker_config["DOCKER_CONFIG"]) / "config.json"),
                          f"docker://{signed['repository']}:{sig_tag}"], capture_output=True, text=True, check=True)
    manifest = json.loads(raw.stdout)
    layer = manifest["layers"][0]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    _, payload, _ = ask(registry, "GET", f"/v2/{name}/blobs/{layer['digest']}")
    critical = json.loads(payload)["critical"]
    assert critical == {"identity": {"docker-reference": signed["repository"]},
                        "image": {"docker-manifest-digest": signed["digest"]},
                        "type": "cosign container image signature"}
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    checked = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "sig"),
                              str(tmp_path / "payload")], capture_output=True, text=True)
    assert checked.returncode == 0 and "Verified OK" in checked.stdout

    forget(docker_client, good)
    verified = json.loads(reg("pull", signed["ref"], "--verify", str(pub), "--json").stdout)
    assert verified["id"] == good and verified["verified"]["verified"] is True
    stranger = reg("pull", signed["ref"], "--verify", str(other_pub), check=False)
    assert stranger.returncode == 1 and "no signature by that key" in one_line_error(stranger)

    # tamper: another image pushed under the signed tag; it has no signature of its own
    subprocess.run(["docker", "tag", evil, f"t{run_id}-reg/signed:v1"], check=True)
    swapped = json.loads(reg("push", f"t{run_id}-reg/signed:v1", "--registry", target, "--force", "--json").stdout)
    forget(docker_client, evil)
    unsigned = reg("pull", swapped["ref"], "--verify", str(pub), check=False)
    assert unsigned.returncode == 1 and "is not signed" in one_line_error(unsigned)
    # and the good image's signature copied to the evil digest's signature tag: it names the other digest
    _, sig_manifest, _ = ask(registry, "GET", f"/v2/{name}/manifests/{sig_tag}")
    ask(registry, "PUT", f"/v2/{name}/manifests/{swapped['digest'].replace(':', '-')}.sig", sig_manifest,
        "application/vnd.oci.image.manifest.v1+json")
    mismatched = reg("pull", swapped["ref"], "--verify", str(pub), check=False)
    assert mismatched.returncode == 1 and "for another digest" in one_line_error(mismatched)
    with pytest.raises(Exception):  # neither refusal pulled anything
        docker_client.api.inspect_image(evil)
    # the signed image itself still verifies
    assert json.loads(reg("pull", signed["ref"], "--verify", str(pub), "--json").stdout)["id"] == good



def status_of(registry, path: str) -> int:
    import urllib.error

    try:
        return ask(registry, "GET", path)[0]
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def own_home(dlbox, test_env, docker_config, tmp_path_factory, stop_service):
    """dlbox with a home of its own whose service holds this module's credential store: the service
    prunes a registry with its own credentials, as its pulls by digest do."""
    home = tmp_path_factory.mktemp("regprune-home")
    yield type(dlbox)({**test_env, **docker_config, "DLBOX_HOME": str(home)})
    stop_service(home)


def test_prune_in_the_registry_keeps_the_newest_and_what_records_name(reg, own_home, registry, child,
                                                                     docker_client, run_id, tmp_path):
    import time

    from dlbox.store.db import Store

    repo, target = f"t{run_id}-reg/gens", f"{registry.host}/keep"
    key, _ = keys(tmp_path / "k")
    pushed = []
    for n in range(3):  # three images of one repository, each newer than the last
        docker_client.api.tag(child(f"gen{n}"), repo, f"v{n}")
        sign = ["--sign", str(key)] if n == 1 else []  # the one that goes has a signature, which goes with it
        pushed.append(json.loads(reg("push", f"{repo}:v{n}", "--registry", target, *sign, "--json").stdout))
    path = f"/v2/keep/{repo}"
    sig_tag = pushed[1]["digest"].replace(":", "-") + ".sig"
    assert status_of(registry, f"{path}/manifests/{sig_tag}") == 200

    assert own_home.json("images", "prune", "--keep", "3", "--registry", target)["remove"] == []  # starts the service
    store = Store(f"sqlite:///{own_home.env['DLBOX_HOME']}/dlbox.db")
    store.add_model_version("local", f"regprune-{run_id}", files_hash="f" * 64, files_bytes=1, path="model",
                            run_id="t-none", image_id="sha256:" + "0" * 64, registered_by="local",
                            registered_at=time.time(), repo_digests=[pushed[0]["ref"]])  # named by digest only

    dry = own_home.json("images", "prune", "--keep", "1", "--registry", target, "--name", repo, "--dry-run")
    assert dry["registry"] == target and [r["digest"] for r in dry["remove"]] == [pushed[1]["digest"]]
    reasons = {k["digest"]: k["reasons"] for k in dry["kept"]}
    assert reasons == {pushed[2]["digest"]: [f"one of the newest 1 of {repo}"],
                       pushed[0]["digest"]: [f"model local/regprune-{run_id}:1 records it"]}
    assert dry["remove"][0]["id"] == pushed[1]["id"] and dry["remove"][0]["tags"] == ["v1"]
    assert status_of(registry, f"{path}/manifests/{pushed[1]['digest']}") == 200  # a dry run deletes nothing

    text = own_home("images", "prune", "--keep", "1", "--registry", target, "--name", repo).stdout
    assert f"removed {target}/{repo}:v1  {pushed[1]['digest'][:19]}" in text and "1 removed, 2 kept" in text
    assert status_of(registry, f"{path}/manifests/{pushed[1]['digest']}") == 404
    assert status_of(registry, f"{path}/manifests/{sig_tag}") == 404
    assert sorted(json.loads(ask(registry, "GET", f"{path}/tags/list")[1])["tags"]) == ["v0", "v2"]
    for kept in (pushed[0], pushed[2]):
        assert status_of(registry, f"{path}/manifests/{kept['digest']}") == 200
    assert own_home.json("images", "prune", "--keep", "1", "--registry", target, "--name", repo)["remove"] == []


def test_prune_in_a_registry_without_deletion_says_so_and_bad_targets_are_usage_errors(
        reg, own_home, child, docker_client, run_id, tmp_path):
    with registry_server.running(tmp_path / "nodelete", delete=False) as fixed:
        login = reg("login", fixed.host, "--username", fixed.username, "--password-stdin",
                    stdin=fixed.password + "\n")
        assert login.returncode == 0, login.stderr
        repo = f"t{run_id}-reg/fixed"
        for n in range(2):
            docker_client.api.tag(child(f"fixed{n}"), repo, f"v{n}")
            reg("push", f"{repo}:v{n}", "--registry", fixed.host)
        refused = own_home("images", "prune", "--keep", "1", "--registry", fixed.host, check=False)
        assert refused.returncode == 1, refused.stderr
        assert f"not removed {fixed.host}/{repo}:v0" in refused.stdout
        assert "does not allow deletion" in refused.stdout and "0 removed, 1 kept, 1 refused" in refused.stdout
        assert fixed.password not in refused.stdout + refused.stderr
    for bad in ("not a host", "127.0.0.1:5000/UPPER", "127.0.0.1:5000/a//b"):
        wrong = own_home("images", "prune", "--keep", "1", "--registry", bad, check=False)
        assert wrong.returncode == 2 and one_line_error(wrong).startswith("error: --registry: "), wrong.stderr


def test_a_signature_policy_refuses_an_unsigned_image_and_pulls_a_signed_one(dlbox, reg, registry, child,
                                                                            docker_client, docker_config, run_id,
                                                                            tmp_path):
    """DLBOX_VERIFY_KEY (what `dlbox server --verify-key` sets): every pull by digest is verified, here
    reproduce's; a refusal stops it (no rebuild, no other digest) and pulls nothing."""
    key, pub = keys(tmp_path / "policy")
    policy = {**docker_config, "DLBOX_VERIFY_KEY": str(pub)}
    unsigned, signed = child("policy-unsigned"), child("policy-signed")
    runs = {}
    for image, name, sign in ((unsigned, "policy-unsigned", []), (signed, "policy-signed", ["--sign", str(key)])):
        reg("push", f"t{run_id}-reg/{name}:v1", "--registry", f"{registry.host}/policy", *sign)
        runs[image] = json.loads(reg("run", "--image", image, "--no-code", "--json", "--", "true").stdout)["id"]
        reg("wait", runs[image], "--timeout", "300")
        forget(docker_client, image)

    refused = dlbox("reproduce", runs[unsigned], check=False, extra_env=policy)
    last = refused.stderr.strip().splitlines()[-1]  # after reproduce's progress lines
    assert refused.returncode == 1 and last.startswith("error: ") and "is not signed" in last, refused.stderr
    assert "rebuilding" not in refused.stderr and "Traceback" not in refused.stderr
    with pytest.raises(Exception):
        docker_client.api.inspect_image(unsigned)  # nothing was pulled

    allowed = dlbox("reproduce", runs[signed], "--json", extra_env=policy)
    assert "signature of " in allowed.stderr and "verified" in allowed.stderr
    assert docker_client.api.inspect_image(signed)["Id"] == signed
    reg("wait", json.loads(allowed.stdout)["id"], "--timeout", "300")

    missing = dlbox("reproduce", runs[unsigned], check=False,
                    extra_env={**docker_config, "DLBOX_VERIFY_KEY": str(tmp_path / "nope.pub")})
    assert missing.returncode == 2 and "DLBOX_VERIFY_KEY: no key file at" in one_line_error(missing)
