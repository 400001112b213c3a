"""Attacks on secrets, against the real engine and a real `dlbox server` over TLS.

One lifecycle serves the module: a CA and a server certificate made here with openssl, an image
built with a CA bundle holding that CA (and a marker), a TLS server in a home below a directory
every local user may enter, users and tokens, alice's workspace (Jupyter token, SSH host key) and
two jobs with secret params; a TensorFlow job (a secret param too) whose SavedModel alice registers
and serves; a webhook project whose signed push runs alice's pipeline to its report. Then the sweep
greps every log, listing (text and --json), API answer, dashboard page, pipeline report, the serving
container's `docker inspect` and logs, and the database for all of those secrets (the webhook's
included): none may appear.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

MARK = secrets.token_hex(6)  # in every secret made here, so a leak is found by grep


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class Pki:
    ca: Path  # the CA certificate alone: what a client trusts
    bundle: Path  # the host's CAs + ours + a marker line: what the build trusts
    cert: Path
    key: Path
    secrets: list[str]  # the bundle's own lines: they must never be shown


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", f"/CN=dlbox sweep CA {MARK}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    ours = (d / "ca.crt").read_text()
    marker = f"# dlbox sweep CA bundle marker {MARK}-bundle"
    host = Path("/etc/ssl/certs/ca-certificates.crt").read_text()  # pip must still reach PyPI
    (d / "bundle.pem").write_text(f"{host}\n{marker}\n{ours}")
    body = [line for line in ours.splitlines() if line and not line.startswith("-----")]
    return Pki(ca=d / "ca.crt", bundle=d / "bundle.pem", cert=d / "server.crt", key=d / "server.key",
               secrets=[marker, *body])


@pytest.fixture(scope="module")
def ca_image(dlbox, pki, tmp_path_factory, run_id) -> dict:
    """A small image with Jupyter and SSH, built trusting the test's CA bundle."""
    project = tmp_path_factory.mktemp("secrets-image")
    (project / "dlbox.yaml").write_text(f"name: t{run_id}-secrets\nbase:\n  debian: bullseye\n"
                                        "pip:\n  - jupyter_server==2.18.2\nservices: [jupyter, ssh]\n")
    built = dlbox("build", "--ca-bundle", str(pki.bundle), "--json", cwd=project)
    return json.loads(built.stdout) | {"output": built.stdout + built.stderr}


@dataclass
class Team:
    url: str
    env: dict  # the server machine's own (its dlbox home: the local socket, admin)
    home: Path
    parent: Path
    log: Path
    ca: Path
    tokens: dict[str, str] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)  # every output the sweep reads

    def local(self, *args: str, check: bool = True, sweep: bool = True) -> subprocess.CompletedProcess:
        return self._run(self.env, args, check, sweep)

    def cli(self, token: str, *args: str, check: bool = True, sweep: bool = True, **extra):
        env = {**self.env, "DLBOX_URL": self.url, "DLBOX_TOKEN": token, "DLBOX_SERVER_CA": str(self.ca), **extra}
        env.pop("DLBOX_HOME")  # a remote user has no dlbox home of the server's
        return self._run(env, args, check, sweep)

    def _run(self, env, args, check, sweep) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "dlbox", *args], env=env, capture_output=True, text=True,
                                timeout=600, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"dlbox {' '.join(args)} exited {result.returncode}: {result.stderr[-3000:]}")
        if sweep:  # outputs that print a secret by design (users add, tokens create, up) are left out
            # the command line itself holds what the test gives (secret params): only what dlbox says counts
            self.said.append(f"$ dlbox {' '.join(args[:2])}\n{result.stdout}\n{result.stderr}")
        return result

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120,
                            verify=ssl.create_default_context(cafile=str(self.ca)))


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def tls_server(env: dict, pki: Pki, log: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dlbox", "server", "--port", str(port), "--tls-cert", str(pki.cert),
                             "--tls-key", str(pki.key)], env=env, stdin=subprocess.DEVNULL,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(pki.ca))
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/api/health", verify=context, timeout=2)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"dlbox server did not answer over TLS: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(log.read_text()[-3000:])


@pytest.fixture(scope="module")
def team(test_env, pki, ca_image):
    # below a directory anyone may enter: "other users cannot read it" must be the home's doing
    parent = Path(tempfile.mkdtemp(prefix="dlbox-sweep-", dir="/tmp"))
    parent.chmod(0o755)
    home = parent / "home"
    env = {**test_env, "DLBOX_HOME": str(home)}
    env.pop("DLBOX_DATABASE_URL", None)
    log = parent / "server.log"
    with tls_server(env, pki, log) as (url, proc):
        team = Team(url=url, env=env, home=home, parent=parent, log=log, ca=pki.ca)
        for name, flags in (("admin", ["--admin"]), ("alice", ["--cpus", "4"])):
            added = team.local("users", "add", name, *flags, "--json", sweep=False)
            team.tokens[name] = json.loads(added.stdout)["token"]
        team.proc = proc
        yield team  # the workspace goes with everything else labelled for this test run
    shutil.rmtree(parent, ignore_errors=True)


def job_script(expected: dict[str, str]) -> list[str]:
    """A job that checks it got the real values (env and params.json), writes a metric and an artifact.
    The command holds only a digest of the values, never the values."""
    digest = hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()
    code = (
        "import hashlib, json, os, sys, dlbox_metrics\n"
        "p = dlbox_metrics.params()\n"
        "env = {k: os.environ['DLBOX_PARAM_' + k.upper()] for k in p}\n"
        f"ok = env == p and hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest() == {digest!r}\n"
        "dlbox_metrics.log('checked', 1.0 if ok else 0.0, step=1)\n"
        "open(os.path.join(dlbox_metrics.artifacts_dir(), 'done.txt'), 'w').write('ok' if ok else 'bad')\n"
        "print('secrets-ok' if ok else 'secrets-WRONG')\n"
        "sys.exit(0 if ok else 3)\n")
    return ["python", "-c", code]


@pytest.fixture(scope="module")
def things(team, ca_image, run_id, tmp_path_factory):
    """alice's workspace (Jupyter + SSH) and two finished jobs with secret params."""
    keys = tmp_path_factory.mktemp("ssh-user")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")], check=True)
    alice = team.tokens["alice"]
    name = f"t{run_id}-sec"
    up = team.cli(alice, "up", name, "--image", ca_image["image"], "--ssh", "--ssh-key", str(keys / "id.pub"),
                  "--cpus", "1", "--json", sweep=False)
    ws = json.loads(up.stdout)
    params = [
        {"DB_PASSWORD": f"dbpw-{MARK}-a", "API_KEY": f"apikey-{MARK}-a",
         "DATABASE_URL": f"postgresql://u:urlpw-{MARK}-a@db.example/app", "HF_TOKEN": f"hftok-{MARK}-a",
         "epochs": "2"},
        {"DB_PASSWORD": f"dbpw-{MARK}-b", "API_KEY": f"apikey-{MARK}-b",
         "DATABASE_URL": f"postgresql://u:urlpw-{MARK}-b@db.example/app", "HF_TOKEN": f"hftok-{MARK}-b",
         "epochs": "3"},
    ]
    jobs = []
    for p in params:
        flags = [a for k, v in p.items() for a in ("--param", f"{k}={v}")]
        submitted = team.cli(alice, "run", "--image", ca_image["image"], *flags, "--json", "--", *job_script(p))
        jobs.append(json.loads(submitted.stdout)["id"])
    for job_id in jobs:
        team.cli(alice, "wait", job_id, "--timeout", "300", check=False)
    host_key = (team.home / "workspaces" / name / "ssh_host_ed25519_key").read_text()
    return {"workspace": name, "jupyter_token": ws["jupyter"]["token"], "jobs": jobs, "params": params,
            "host_key": [line for line in host_key.splitlines() if line and not line.startswith("-----")]}


SAVE = """
import os
import tensorflow as tf

class Linear(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable([[1.0], [2.0], [3.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.matmul(x, self.w)}

model = Linear()
out = os.path.join(os.environ["DLBOX_RUN_DIR"], "artifacts", "v1")
tf.saved_model.save(model, out, signatures={"serving_default": model.__call__})
"""

PIPELINE = ("  test: {command: python test_model.py}\n"
            "  train: {command: python train.py}\n"
            "  evaluate: {command: python evaluate.py}\n"
            "  gate:\n    accuracy: {min: 0.5}\n"
            "  register: {model: %s, format: files}\n")
TRAIN = ("import os, dlbox_metrics\n"
         "dlbox_metrics.log('loss', 0.5, step=1)\n"
         "os.makedirs(os.path.join(dlbox_metrics.artifacts_dir(), 'model'))\n"
         "open(os.path.join(dlbox_metrics.artifacts_dir(), 'model', 'w.txt'), 'w').write('1')\n")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.email=ann@example.com", "-c", "user.name=Ann", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def _until(what: str, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def newer(team, things, ca_image, tf_image, run_id, tmp_path_factory):
    """The newer paths: alice's model (from a TF job with a secret param), its deployment, and her
    pipeline run by a signed push webhook. Returns what the sweep reads and the secrets made here."""
    alice, admin = team.tokens["alice"], team.tokens["admin"]
    param = f"hftok-{MARK}-tf"
    job = json.loads(team.cli(alice, "run", "--image", tf_image["image"], "--param", f"HF_TOKEN={param}", "--json",
                              "--", "python", "-c", SAVE).stdout)["id"]
    waited = json.loads(team.cli(alice, "wait", job, "--timeout", "600", "--json", check=False).stdout)
    assert waited["state"] == "succeeded", team.cli(alice, "logs", job, check=False).stdout[-2000:]
    model = f"s{run_id}"
    team.cli(alice, "models", "register", model, "--run", job, "--path", "v1", "--json")
    team.cli(alice, "models", "alias", model, "champion", "1", "--json")
    served = json.loads(team.cli(alice, "serve", model, "--alias", "champion", "--memory", "2g", "--json").stdout)

    def predicts():
        try:
            answer = httpx.post(f"{served['rest_url']}/v1/models/{model}:predict", json={"instances": [[1, 1, 1]]},
                                timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and answer.json() == {"predictions": [[6.0]]}

    _until("the deployment to predict", predicts, 300)

    # a webhook project of alice's; the push is signed with the secret shown once
    clone = tmp_path_factory.mktemp("hook-clone")
    spec_text = (Path(ca_image["lock_file"]).parent / "dlbox.yaml").read_text()
    (clone / "dlbox.yaml").write_text(spec_text + "pipeline:\n" + PIPELINE % f"p{run_id}")
    shutil.copy(ca_image["lock_file"], clone / "dlbox.lock")
    (clone / "train.py").write_text(TRAIN)
    (clone / "test_model.py").write_text("print('tested')\n")
    (clone / "evaluate.py").write_text("import dlbox_metrics\ndlbox_metrics.log('accuracy', 0.9)\n")
    _git(clone, "init", "-q")
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "first")
    sha = _git(clone, "rev-parse", "HEAD")
    project = f"team/sweep-{run_id}"
    made = json.loads(team.cli(admin, "hooks", "project", project, "--repo", str(clone), "--owner", "alice",
                               "--json", sweep=False).stdout)
    secret = made["secret"]
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": project}}).encode()
    from dlbox.pipelines import webhook

    with team.http() as anyone:
        wrong = anyone.post("/api/hooks/git", content=body, headers={"X-Hub-Signature-256": webhook.sign(b"x", body)})
        assert wrong.status_code == 401
        ran = anyone.post("/api/hooks/git", content=body, headers={"X-Hub-Signature-256": webhook.sign(
            secret.encode(), body), "X-GitHub-Event": "push", "Content-Type": "application/json"})
    assert ran.status_code == 200 and ran.json()["ran"] is True, ran.text
    pipeline = ran.json()["pipeline"]
    with team.http(alice) as api:
        ended = _until("the pipeline to end", lambda: (p := api.get(f"/api/pipelines/{pipeline}").json())["state"]
                       in ("promoted", "rejected", "failed", "cancelled") and p, 900)
    assert ended["state"] == "promoted", json.dumps(ended)[:3000]
    return {"model": model, "deployment": served["name"], "pipeline": pipeline, "webhook_secret": secret,
            "params": {"HF_TOKEN of the TF job": param}}


# --- TLS ------------------------------------------------------------------------------------------


def test_the_cli_speaks_https_and_refuses_plain_or_untrusted(team):
    alice = team.tokens["alice"]
    assert json.loads(team.cli(alice, "tokens", "ls", "--json").stdout)[0]["user"] == "alice"
    untrusted = team.cli(alice, "tokens", "ls", check=False, DLBOX_SERVER_CA="")
    assert untrusted.returncode == 1 and "Traceback" not in untrusted.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr and "DLBOX_SERVER_CA" in untrusted.stderr
    plain = team.cli(alice, "tokens", "ls", check=False, DLBOX_URL=team.url.replace("https://", "http://"))
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and "failed to answer" in plain.stderr
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets no answer at all
        httpx.get(team.url.replace("https://", "http://") + "/api/health", timeout=5)
    bad_ca = team.cli(alice, "tokens", "ls", check=False, DLBOX_SERVER_CA=str(team.log))
    assert bad_ca.returncode == 2 and bad_ca.stderr.strip().startswith("error: DLBOX_SERVER_CA:")


def test_server_refuses_a_tls_pair_that_does_not_load(team, pki):
    result = team.local("server", "--port", "1", "--tls-cert", str(pki.cert), "--tls-key", str(pki.ca), check=False)
    assert result.returncode == 2 and "--tls-cert/--tls-key" in result.stderr and "Traceback" not in result.stderr
    half = team.local("server", "--port", "1", "--tls-cert", str(pki.cert), check=False)
    assert half.returncode == 2 and "give both" in half.stderr


def test_the_dashboard_session_cookie_is_secure_over_tls(team):
    with team.http() as browser:
        signed_in = browser.post("/login", data={"token": team.tokens["alice"]},
                                 headers={"Origin": team.url}, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    cookie = signed_in.headers["set-cookie"]
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "secure" in attributes and "httponly" in attributes and "samesite=strict" in attributes


# --- tokens --------------------------------------------------------------------------------------


def test_a_token_cannot_create_a_token_that_outlives_it(team):
    alice = team.tokens["alice"]
    short = json.loads(team.cli(alice, "tokens", "create", "--name", "short", "--expires", "1h", "--json",
                                sweep=False).stdout)
    team.tokens["alice-short"] = short["token"]
    for asked in ("2h", "90d", "never"):
        refused = team.cli(short["token"], "tokens", "create", "--name", "longer", "--expires", asked, check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert f"--expires: {asked} would outlive the token you are using, which expires {short['expires_at']}" \
            in refused.stderr
    # nor by asking the API for no expiry at all, or for a user made with it
    with team.http(short["token"]) as api:
        inherited = api.post("/api/tokens", json={"name": "inherits"})
    assert inherited.status_code == 201 and inherited.json()["expires_at"] == short["expires_at"]
    team.tokens["alice-inherits"] = inherited.json()["token"]
    names = [t["name"] for t in json.loads(team.cli(alice, "tokens", "ls", "--json").stdout)]
    assert "longer" not in names
    ok = json.loads(team.cli(short["token"], "tokens", "create", "--name", "shorter", "--expires", "30m", "--json",
                             sweep=False).stdout)
    team.tokens["alice-shorter"] = ok["token"]
    assert ok["expires_at"] <= short["expires_at"]
    # an admin's short-lived token cannot mint a lasting first token for a new user
    admin_short = json.loads(team.cli(team.tokens["admin"], "tokens", "create", "--expires", "1h", "--json",
                                      sweep=False).stdout)
    team.tokens["admin-short"] = admin_short["token"]
    made = json.loads(team.cli(admin_short["token"], "users", "add", "carol", "--json", sweep=False).stdout)
    team.tokens["carol"] = made["token"]
    carol = [t for t in json.loads(team.cli(admin_short["token"], "tokens", "ls", "--all", "--json").stdout)
             if t["user"] == "carol"]
    assert [t["expires_at"] for t in carol] == [admin_short["expires_at"]]
    # the owner of the server machine has no token: no limit
    unlimited = json.loads(team.local("tokens", "create", "--user", "alice", "--expires", "never", "--json",
                                      sweep=False).stdout)
    team.tokens["alice-never"] = unlimited["token"]
    assert unlimited["expires_at"] is None


# --- the home and the jobs -----------------------------------------------------------------------


def as_user(uid: int, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command],
                          capture_output=True, text=True, timeout=30)


def test_jobs_get_real_secrets_and_run_under_a_private_home(team, things):
    """The home is 0700 root, yet the engine mounts the job's run directory and the metrics helper
    below it (it resolves bind sources as root): the job reads its params and the helper and writes
    its metrics and artifacts. Other local users, the job's own uid on the host included, read nothing."""
    alice = team.tokens["alice"]
    for job_id in things["jobs"]:
        record = json.loads(team.cli(alice, "runs", "show", job_id, "--json").stdout)
        assert record["state"] == "succeeded", record["reason"]
        assert record["metrics"] == {"checked": 1.0} and "done.txt" in record["artifacts"]
        assert team.cli(alice, "logs", job_id, sweep=False).stdout.strip() == "secrets-ok"
    home = team.home
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    for name in ("dlbox.db", "dlbox.db-wal", "dlbox.db-shm"):
        assert oct((home / name).stat().st_mode & 0o777) == "0o600", name
    run = home / "runs" / things["jobs"][0]
    assert run.is_dir()
    for uid in (65534, 1000):  # nobody, and the uid the job runs as (its files are owned by it)
        assert as_user(uid, "ls", str(team.parent)).returncode == 0  # the way there is open...
        for command in (["ls", str(home)], ["cat", str(home / "dlbox.db")], ["cat", str(home / "dlbox.db-wal")],
                        ["ls", str(run)], ["ls", str(home / "runs")]):
            refused = as_user(uid, *command)
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, (uid, command)


# --- the sweep -----------------------------------------------------------------------------------


def test_no_secret_appears_in_any_log_listing_page_or_the_database(team, things, newer, ca_image, pki, docker_client,
                                                                  tmp_path):
    alice, admin = team.tokens["alice"], team.tokens["admin"]
    a, b = things["jobs"]
    ws, image = things["workspace"], ca_image["image"]
    said = team.said
    said.append(ca_image["output"])
    for args in (["ls"], ["images"], ["inspect", image], ["jobs", "--all"], ["runs"], ["runs", "show", a],
                 ["runs", "diff", a, b], ["tokens", "ls"]):
        for user in (alice, admin):
            team.cli(user, *args)
            team.cli(user, *args, "--json")
    model, deployment, pipeline = newer["model"], newer["deployment"], newer["pipeline"]
    for args in (["models", "ls"], ["models", "show", model], ["models", "show", f"{model}@champion"],
                 ["models", "history", model], ["deployments", "ls"], ["deployments", "show", deployment],
                 ["deployments", "logs", deployment], ["pipeline", "ls"], ["pipeline", "show", pipeline],
                 ["pipeline", "logs", pipeline]):
        team.cli(alice, *args)
        if args[1] != "logs":  # logs are text only
            team.cli(alice, *args, "--json")
    report = json.loads(team.cli(alice, "pipeline", "report", pipeline, "--dest", str(tmp_path / "report"),
                                 "--json").stdout)
    for name in report["files"]:
        said.append(f"REPORT {name}\n" + (tmp_path / "report" / name).read_bytes().decode("latin-1"))
    for args in (["users", "ls"], ["tokens", "ls", "--all"], ["jobs", "--all"], ["runs", "show", b],
                 ["models", "ls"], ["deployments", "ls"], ["pipeline", "ls"], ["pipeline", "show", pipeline]):
        team.local(*args)
        team.local(*args, "--json")
    diff = json.loads(team.cli(alice, "runs", "diff", a, b, "--json").stdout)
    assert {c["name"] for c in diff["params"]} == {"epochs"}  # the hidden ones look alike
    shown = json.loads(team.cli(alice, "runs", "show", a, "--json").stdout)
    assert shown["params"] == {"DB_PASSWORD": "***", "API_KEY": "***", "HF_TOKEN": "***", "epochs": "2",
                               "DATABASE_URL": "postgresql://u:***@db.example/app"}
    assert shown["env"]["DLBOX_PARAM_HF_TOKEN"] == "***"
    assert shown["env"]["DLBOX_PARAM_DATABASE_URL"] == "postgresql://u:***@db.example/app"
    refused = team.cli(alice, "reproduce", a, check=False)
    assert refused.returncode == 1 and "its secrets are not kept" in refused.stderr

    with team.http(alice) as api:
        for path in ("/api/jobs?all=true", f"/api/jobs/{a}", "/api/runs", f"/api/runs/{a}", f"/api/runs/{b}",
                     "/api/workspaces", f"/api/workspaces/{ws}", "/api/me", "/api/tokens", "/api/images",
                     "/api/models", f"/api/models/{model}", f"/api/models/{model}/history", "/api/deployments",
                     f"/api/deployments/{deployment}", f"/api/deployments/{deployment}/logs", "/api/pipelines",
                     f"/api/pipelines/{pipeline}", f"/api/pipelines/{pipeline}/logs",
                     f"/api/pipelines/{pipeline}/report/report.md", f"/api/pipelines/{pipeline}/report/report.html"):
            answer = api.get(path)
            assert answer.status_code == 200, (path, answer.text)
            said.append(f"GET {path}\n{answer.text}")
    with team.http() as browser:
        browser.post("/login", data={"token": alice}, headers={"Origin": team.url})
        for path in ("/workspaces", f"/workspaces/{ws}", "/jobs", f"/jobs/{a}", "/runs", f"/runs/{a}",
                     f"/runs/{b}", "/images", f"/images/{image}", "/models", f"/models/alice/{model}", "/deployments",
                     "/pipelines", f"/pipelines/{pipeline}"):
            page = browser.get(path)
            assert page.status_code == 200 and "<html" in page.text, (path, page.status_code)
            said.append(f"PAGE {path}\n{page.text}")
    container = docker_client.containers.get(f"dlbox-ws-{ws}")
    said.append("docker logs\n" + container.logs().decode(errors="replace"))
    said.append("docker inspect\n" + json.dumps(container.attrs) + json.dumps(docker_client.images.get(image).attrs))
    served = docker_client.containers.get(f"dlbox-deploy-{deployment}")
    said.append("serving docker logs\n" + served.logs().decode(errors="replace"))
    said.append("serving docker inspect\n" + json.dumps(served.attrs))

    # the server stops; its database is checkpointed (as any backup would be) and read whole
    team.proc.terminate()
    team.proc.wait(30)
    with sqlite3.connect(team.home / "dlbox.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        said.append("sqlite dump\n" + "\n".join(db.iterdump()))
    # every file of the home but the vault (secrets kept there on purpose) and the jobs' own run
    # directories (the job's input and output are the user's), raw
    for path in sorted(team.home.rglob("*")):
        parts = path.relative_to(team.home).parts
        if path.is_file() and parts[0] not in ("workspaces", "runs"):
            said.append(f"FILE {path}\n" + path.read_bytes().decode("latin-1"))
    said.append("server log\n" + team.log.read_text(errors="replace"))

    tokens = list(team.tokens.values())
    wanted = {
        **{f"API token {i}": t for i, t in enumerate(tokens)},
        **{f"API token secret {i}": t[len("dlb_") + 13:] for i, t in enumerate(tokens)},  # it may hold "_"
        "Jupyter token": things["jupyter_token"],
        **{f"SSH host key line {i}": line for i, line in enumerate(things["host_key"])},
        **{f"CA bundle line {i}": line for i, line in enumerate(pki.secrets)},
        **{f"param {k} of job {n}": v.split(":")[-1].split("@")[0] if "://" in v else v
           for n, p in enumerate(things["params"]) for k, v in p.items() if k != "epochs"},
        **newer["params"],
        "webhook secret": newer["webhook_secret"],
    }
    corpus = "\n".join(said)
    assert len(corpus) > 50_000  # the sweep did read something
    leaks = [f"{what} in: {next(s for s in said if secret in s)[:120]!r}" for what, secret in wanted.items()
             if secret in corpus]
    assert leaks == [], "\n".join(leaks)
