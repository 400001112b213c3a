"""A real OCI registry for the engine tests and benchmark 15: Debian's `docker-registry` (CNCF
Distribution) on loopback, with htpasswd (bcrypt) authentication, TLS from a CA made here (openssl)
and deletion enabled (unless delete=False). The engine trusts the CA through /etc/docker/certs.d/HOST:PORT/ca.crt, which
dockerd reads at each connection (no restart); skopeo reads the same folder.

    with registry_server.running(work_dir) as reg:
        reg.host      # "127.0.0.1:PORT"
        reg.username, reg.password, reg.ca  # the CA certificate's path

Everything it made (the process, the certs.d folder, its storage) is gone when the block ends.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "/usr/bin/docker-registry"  # Debian's package docker-registry
CERTS_D = Path("/etc/docker/certs.d")


@dataclass
class Registry:
    host: str
    username: str
    password: str
    ca: Path
    storage: Path


def missing_tools() -> list[str]:
    return [tool for tool in (REGISTRY, "htpasswd", "openssl") if shutil.which(tool) is None]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls(folder: Path, ip: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key): a CA of its own signs a cert for `ip`."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=dlbox test registry CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=folder)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", f"/CN={ip}", cwd=folder)
    (folder / "ext.cnf").write_text(f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"
                                    "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", "server.crt", "-extfile", "ext.cnf", cwd=folder)
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def _config(work: Path, port: int, cert: Path, key: Path, htpasswd: Path, delete: bool) -> Path:
    path = work / "config.yml"
    path.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {work / 'storage'}
  delete:
    enabled: {str(delete).lower()}
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: dlbox-test
    path: {htpasswd}
""")
    return path


def _wait(url: str, ca: Path, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Until /v2/ answers (401: it wants credentials, as it should)."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2, context=context)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
            raise
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"docker-registry did not answer: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def running(work: Path, username: str = "dlbox-tester", *, delete: bool = True):
    work.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    ca, cert, key = make_tls(work / "tls")
    htpasswd = work / "htpasswd"
    subprocess.run(["htpasswd", "-Bic", str(htpasswd), username], input=password, text=True, check=True,
                   capture_output=True)  # -B bcrypt, -i the password from stdin (never on a command line)
    port = _free_port()
    host = f"127.0.0.1:{port}"
    trust = CERTS_D / host
    trust.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, trust / "ca.crt")
    log = work / "registry.log"
    proc = subprocess.Popen([REGISTRY, "serve", str(_config(work, port, cert, key, htpasswd, delete))],
                            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait(f"https://{host}/v2/", ca, proc, log)
        yield Registry(host=host, username=username, password=password, ca=ca, storage=work / "storage")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(trust, ignore_errors=True)
        shutil.rmtree(work / "storage", ignore_errors=True)
