"""Image signatures in cosign's format, written to and read from the registry.

Why not skopeo: Debian's skopeo 1.9.3 lists `copy --sign-by-sigstore-private-key`, but sigstore is
compiled out by a Debian-local change (a `sigstoreSigned` policy answers "Debian-local change:
sigstore disabled"), it has no key generation, and it verifies only while copying a whole image.
So dlbox writes and reads the same objects cosign does, with plain PEM keys that openssl makes and
openssl's ECDSA (`openssl dgst -sha256 -sign/-verify`), so nothing new is installed:

- the payload is "simple signing" JSON naming the repository and the manifest digest;
- the signature is ECDSA P-256 over SHA-256 of the payload (DER, base64), made by `openssl dgst`;
- they are one layer of an OCI manifest at the tag `sha256-<hex>.sig` of the same repository
  (media type application/vnd.dev.cosign.simplesigning.v1+json, the signature in the layer's
  annotation dev.cosignproject.cosign/signature). Signing again adds a layer, as cosign does.

Keys: `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out key.pem`,
`openssl ec -in key.pem -pubout -out key.pub`.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
from pathlib import Path

from dlbox.errors import DlboxError
from dlbox.supply.registry import Client, Ref

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MOST_SIGNATURES = 32  # layers read from one signature manifest


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-", 1) + ".sig"


def is_signature_tag(tag: str) -> bool:
    return re.fullmatch(r"sha256-[0-9a-f]{64}\.sig", tag) is not None


def payload(repository: str, digest: str) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": repository},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}, separators=(",", ":")).encode()


def _openssl(args: list[str], data: bytes, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise DlboxError(f"{what} needs openssl (apt-get install openssl)") from None


def _key_file(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise DlboxError(f"{flag}: no key file at {path}", code="invalid")
    return path


def sign_bytes(key: Path, data: bytes) -> str:
    done = _openssl(["dgst", "-sha256", "-sign", str(_key_file(key, "--sign"))], data, "signing")
    if done.returncode != 0:  # openssl's words may quote the key file's content: not shown
        raise DlboxError(f"--sign: {key} is no private key openssl can sign with (an EC P-256 PEM key)",
                         code="invalid")
    return base64.b64encode(done.stdout).decode()


def verify_bytes(public_key: Path, data: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return False
    with tempfile.NamedTemporaryFile(prefix="dlbox-sig-") as sig:
        sig.write(signature)
        sig.flush()
        done = _openssl(["dgst", "-sha256", "-verify", str(public_key), "-signature", sig.name], data, "verifying")
    return done.returncode == 0 and b"Verified OK" in done.stdout


def check_public_key(public_key: Path, flag: str = "--verify") -> Path:
    _key_file(public_key, flag)
    if _openssl(["pkey", "-pubin", "-in", str(public_key), "-noout"], b"", "verifying").returncode != 0:
        raise DlboxError(f"{flag}: {public_key} is no public key (a PEM EC public key)", code="invalid")
    return public_key


def sign(client: Client, ref: Ref, digest: str, key: Path) -> dict:
    """Sign `digest` of ref's repository and attach the signature in the registry."""
    data = payload(ref.repository, digest)
    signature = sign_bytes(key, data)
    name = ref.name
    tag = signature_tag(digest)
    layers = []
    existing = client.manifest(name, tag)
    if existing is not None:
        layers = [layer for layer in json.loads(existing[1]).get("layers", [])
                  if layer.get("mediaType") == PAYLOAD_TYPE][:MOST_SIGNATURES - 1]
    payload_digest = client.put_blob(name, data)
    layers = [layer for layer in layers if layer.get("annotations", {}).get(SIGNATURE_ANNOTATION) != signature]
    layers.append({"mediaType": PAYLOAD_TYPE, "size": len(data), "digest": payload_digest,
                   "annotations": {SIGNATURE_ANNOTATION: signature}})
    config = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z", "os": "", "config": {},
                         "history": [{"created": "0001-01-01T00:00:00Z"}],
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}},
                        separators=(",", ":")).encode()
    config_digest = client.put_blob(name, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
                           "layers": layers}, separators=(",", ":")).encode()
    client.put_manifest(name, tag, manifest, OCI_MANIFEST)
    return {"signature_tag": f"{ref.repository}:{tag}", "signatures": len(layers)}


def verify(client: Client, ref: Ref, digest: str, public_key: Path, *, flag: str = "--verify") -> dict:
    """The first signature of `digest` that `public_key` made and whose payload names this digest and
    repository; signature_refused when there is none. `flag` names where the key came from, for errors."""
    check_public_key(public_key, flag)
    found = client.manifest(ref.name, signature_tag(digest))
    if found is None:
        raise DlboxError(f"{ref.repository}@{digest[:19]} is not signed (no {signature_tag(digest)[:23]}... "
                         "in the registry); refusing it", code="signature_refused")
    why = "no signature by that key"
    for layer in json.loads(found[1]).get("layers", [])[:MOST_SIGNATURES]:
        signature = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if layer.get("mediaType") != PAYLOAD_TYPE or not signature:
            continue
        data = client.blob(ref.name, layer["digest"])
        if not verify_bytes(public_key, data, signature):
            continue
        try:
            critical = json.loads(data)["critical"]
            signed_digest = critical["image"]["docker-manifest-digest"]
            signed_repo = critical["identity"]["docker-reference"]
        except (ValueError, KeyError, TypeError):
            why = "a signed payload that is not simple signing"
            continue
        if signed_digest != digest:
            why = f"the signature is for another digest ({signed_digest[:19]})"
            continue
        if signed_repo != ref.repository and not signed_repo.startswith(ref.repository + ":"):
            why = f"the signature is for another repository ({signed_repo[:80]})"
            continue
        return {"verified": True, "digest": digest, "key": str(public_key)}
    raise DlboxError(f"{ref.repository}@{digest[:19]}: {why}; refusing it", code="signature_refused")
