"""Talking to an OCI registry over its HTTP API (distribution-spec v2), for what the engine does not
do: read which digest a tag points at (immutable tags), read and write signature manifests, and
list and delete manifests for retention.

TLS trusts what the engine trusts for that registry (/etc/docker/certs.d/HOST/ca.crt) on top of the
system's CAs. Credentials are the ones `dlbox login` kept (engine/registry.py): Basic, or the bearer
token a registry's token service gives for them. Neither is ever put in an error.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from dlbox.engine import registry as engine_registry
from dlbox.errors import DlboxError, NotFound

CERTS_D = Path("/etc/docker/certs.d")
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"])
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Ref:
    host: str
    name: str  # the repository path inside the registry
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.name}"

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse(ref: str, *, what: str = "REF") -> Ref:
    """HOST[:PORT]/NAME[:TAG][@sha256:DIGEST]: a reference that names its registry."""
    rest, _, digest = ref.partition("@")
    host, slash, path = rest.partition("/")
    if not slash or not path:
        raise DlboxError(f"{what}: {ref[:200]!r} names no registry (HOST:PORT/NAME[:TAG][@sha256:DIGEST])",
                         code="invalid")
    name, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    engine_registry.check_host(host)
    if not NAME.fullmatch(name) or (colon and not TAG.fullmatch(tag)) or (digest and not DIGEST.fullmatch(digest)):
        raise DlboxError(f"{what}: {ref[:200]!r} is not a valid image reference (lower-case NAME, TAG of letters, "
                         "digits, '_', '.', '-', DIGEST sha256:<64 hex>)", code="invalid")
    return Ref(host, name, tag or None, digest or None)


def _context(host: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca = CERTS_D / host / "ca.crt"
    if ca.is_file():
        context.load_verify_locations(cafile=str(ca))
    return context


class Client:
    """One registry, with the kept credentials (if any)."""

    def __init__(self, host: str, timeout: float = 60):
        import httpx

        self.host = host
        self._creds = engine_registry.credentials(host)
        self._http = httpx.Client(base_url=f"https://{host}", verify=_context(host), timeout=timeout)
        self._bearer: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, method: str, path: str, **kw):
        import httpx

        headers = dict(kw.pop("headers", {}))
        for attempt in range(2):
            if self._bearer:
                headers["Authorization"] = f"Bearer {self._bearer}"
            try:
                answer = self._http.request(method, path, headers=headers,
                                            auth=self._basic() if not self._bearer else None, **kw)
            except httpx.HTTPError as exc:
                raise DlboxError(f"registry {self.host} does not answer: {type(exc).__name__}",
                                 code="registry_unavailable") from None
            if answer.status_code == 401 and attempt == 0 and self._token(answer):
                continue
            break
        if answer.status_code in (401, 403):
            raise DlboxError(f"registry {self.host} refused the credentials (wrong username or password, or none "
                             f"kept: `dlbox login {self.host}`)", code="registry_auth")
        return answer

    def _basic(self):
        return (self._creds["username"], self._creds["password"]) if self._creds else None

    def _token(self, answer) -> bool:
        """A bearer token from the registry's token service, when it asks for one."""
        challenge = answer.headers.get("www-authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if not params.get("realm", "").startswith("https://"):
            return False
        import httpx

        try:
            got = httpx.get(params["realm"], params={k: v for k, v in params.items() if k in ("service", "scope")},
                            auth=self._basic(), verify=_context(self.host), timeout=30)
        except httpx.HTTPError:
            return False
        if got.status_code != 200:
            return False
        body = got.json()
        self._bearer = body.get("token") or body.get("access_token")
        return bool(self._bearer)

    def _failed(self, answer, what: str) -> DlboxError:
        if answer.status_code == 404:
            return NotFound(f"registry {self.host} has no {what}")
        return DlboxError(f"registry {self.host} answered {answer.status_code} to {what}", code="registry_unavailable")

    # --- manifests and blobs

    def manifest(self, name: str, reference: str) -> tuple[str, bytes, str] | None:
        """(digest, body, media type) of NAME:reference (a tag or a digest), or None when there is none."""
        answer = self._request("GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise self._failed(answer, f"manifest {name}:{reference}")
        body = answer.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()  # the body's own digest, never the header's word
        if DIGEST.fullmatch(reference) and digest != reference:
            raise DlboxError(f"registry {self.host} answered {name}@{reference} with other content",
                             code="signature_refused")
        return digest, body, answer.headers.get("content-type", "").split(";")[0]

    def blob(self, name: str, digest: str, *, most: int = 1 << 20) -> bytes:
        answer = self._request("GET", f"/v2/{name}/blobs/{digest}", follow_redirects=True)
        if answer.status_code != 200:
            raise self._failed(answer, f"blob {digest}")
        if len(answer.content) > most or "sha256:" + hashlib.sha256(answer.content).hexdigest() != digest:
            raise DlboxError(f"registry {self.host}: blob {digest[:19]} is not what its digest says",
                             code="signature_refused")
        return answer.content

    def put_blob(self, name: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self._request("HEAD", f"/v2/{name}/blobs/{digest}").status_code == 200:
            return digest
        started = self._request("POST", f"/v2/{name}/blobs/uploads/")
        if started.status_code != 202:
            raise self._failed(started, "blob upload")
        location = started.headers["location"]  # it carries the upload's state in its query: keep it
        location += ("&" if "?" in location else "?") + f"digest={digest}"
        done = self._request("PUT", location, content=data,
                             headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise self._failed(done, "blob upload")
        return digest

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        answer = self._request("PUT", f"/v2/{name}/manifests/{reference}", content=body,
                               headers={"Content-Type": media_type})
        if answer.status_code != 201:
            raise self._failed(answer, f"manifest {name}:{reference}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    # --- listing and deleting (`images prune --registry`)

    def _pages(self, path: str, key: str, what: str, most: int = 10_000) -> list[str]:
        """Every entry of a paged list (the distribution API's n= and Link: <...>; rel="next")."""
        found: list[str] = []
        url: str | None = f"{path}?n=1000"
        while url:
            answer = self._request("GET", url)
            if answer.status_code == 404 and key == "tags":
                return []  # a repository whose tags were all deleted
            if answer.status_code != 200:
                raise self._failed(answer, what)
            try:
                found.extend(str(entry) for entry in (answer.json().get(key) or []))
            except ValueError:
                raise DlboxError(f"registry {self.host} answered {what} with no JSON", code="registry_unavailable") from None
            if len(found) > most:
                raise DlboxError(f"registry {self.host} lists more than {most} {key}; prune a narrower --registry "
                                 "project", code="invalid")
            link = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', answer.headers.get("link", ""))
            url = link.group(1) if link else None
            if url and not url.startswith("/v2/"):
                raise DlboxError(f"registry {self.host} paged {what} off its own API", code="registry_unavailable")
        return found

    def repositories(self) -> list[str]:
        return self._pages("/v2/_catalog", "repositories", "the repository catalog")

    def tags(self, name: str) -> list[str]:
        return self._pages(f"/v2/{name}/tags/list", "tags", f"the tags of {name}")

    def delete_manifest(self, name: str, digest: str) -> None:
        """Delete NAME@digest (every tag on it goes too); a clear line when the registry allows no deletes."""
        answer = self._request("DELETE", f"/v2/{name}/manifests/{digest}")
        if answer.status_code == 405:
            raise DlboxError(f"registry {self.host} does not allow deletion (its storage: delete: enabled is "
                             "false)", code="registry_unavailable")
        if answer.status_code not in (200, 202):
            raise self._failed(answer, f"manifest {name}@{digest}")


def config_digest(manifest: bytes) -> str | None:
    """The image config's digest (the engine's image ID) in a single-image manifest; None for an index."""
    import json

    try:
        return (json.loads(manifest).get("config") or {}).get("digest")
    except ValueError:
        return None
