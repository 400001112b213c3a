"""A registry: log in, push an image (immutable tags, optionally signed), pull one by digest (optionally
verified). These run on the engine's machine: the engine pushes and pulls, with the credentials kept in
its usual store."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dlbox.cli.output import answers

KEY = click.Path(dir_okay=False, exists=True, path_type=Path)


@click.command()
@click.argument("registry")
@click.option("-u", "--username", metavar="U", help="The user name (asked for when not given).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else it is asked for, "
                                                     "not shown).")
@answers(lambda r, **_: f"logged in to {r['registry']} as {r['username']} (kept in {r['store']})")
def login(backend, registry: str, username: str | None, password_stdin: bool):
    """Log in to REGISTRY (HOST[:PORT]) as docker login does: the registry checks the credentials, which are
    then kept in the engine's credential store (~/.docker/config.json or its helper). They are never printed."""
    if username is None:
        username = click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, err=True)
    return backend.login(registry, username=username, password=password)


@click.command()
@click.argument("image")
@click.option("--registry", "target", required=True, metavar="HOST:PORT[/PROJECT]",
              help="Where to push; the image keeps its repository path under it.")
@click.option("--force", is_flag=True, help="Move a tag that already points at another image (tags are immutable "
                                            "otherwise).")
@click.option("--sign", "sign_key", metavar="KEY", type=KEY,
              help="Sign the pushed digest with this EC P-256 private key (PEM); cosign's signature format.")
@answers(lambda r, **_: r["ref"] + (f"\nsigned ({r['signed']['signature_tag']})" if r["signed"] else ""))
def push(backend, image: str, target: str, force: bool, sign_key: Path | None):
    """Push IMAGE to a registry and print its repository digest (REPO@sha256:...), by which `dlbox pull`,
    runs and deployments find it again."""
    return backend.push(image, target, force=force, sign_key=sign_key)


@click.command()
@click.argument("ref", metavar="REF@sha256:DIGEST")
@click.option("--verify", "verify_key", metavar="PUBKEY", type=KEY,
              help="Refuse the image unless a signature by this public key (PEM) names its digest.")
@answers(lambda r, **_: f"{r['ref']}  {r['id']}" + ("  (signature verified)" if r["verified"] else ""))
def pull(backend, ref: str, verify_key: Path | None):
    """Pull an image by its digest (what `dlbox push` printed)."""
    return backend.pull(ref, verify_key=verify_key)
