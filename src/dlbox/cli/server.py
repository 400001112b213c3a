"""Serving dlbox: `dlbox server` (the team server) and the hidden `dlbox service` (the local one)."""

from __future__ import annotations

from pathlib import Path

import click

from dlbox.errors import UsageError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--mount-root", "mount_roots", multiple=True, metavar="DIR",
              help="A directory below which users may mount (repeatable; none: no user mounts). "
                   "Also $DLBOX_MOUNT_ROOTS, colon-separated.")
@click.option("--workspace-host", default="127.0.0.1", show_default=True,
              help="Address workspaces publish Jupyter and SSH on (0.0.0.0 to reach them from other machines).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="Serve HTTPS with this certificate (PEM, with its chain); use TLS beyond localhost.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="The certificate's private key (PEM).")
@click.option("--allow-containers", is_flag=True,
              help="Let dlbox containers (workspaces, jobs) reach this port; by default an iptables rule rejects them.")
@click.option("--allow-foreign-images", is_flag=True,
              help="Let jobs run images dlbox did not build (default: only images with a dlbox lock).")
@click.option("--verify-key", type=click.Path(dir_okay=False, path_type=Path), metavar="PUBKEY",
              help="Pull only images signed by this public key (PEM; `dlbox push --sign`): deployments and "
                   "reproduced runs whose image comes from a registry. Also $DLBOX_VERIFY_KEY.")
@click.option("--idle-stop", metavar="DURATION",
              help="Stop workspaces idle this long (90s, 30m, 2h) unless their own `up --idle-stop` or spec says "
                   "otherwise (default: never).")
def server(host: str, port: int, mount_roots: tuple[str, ...], workspace_host: str, tls_cert: Path | None,
           tls_key: Path | None, allow_containers: bool, allow_foreign_images: bool, verify_key: Path | None,
           idle_stop: str | None) -> None:
    """Serve dlbox to a team: the HTTP API under /api/ and the dashboard, on HOST:PORT.

    Every API route but /api/health needs a token (Authorization: Bearer dlb_...). On this
    machine, the owner of the dlbox home manages users over the local socket:

    \b
      dlbox users add alice --cpus 4 --memory 16g     prints alice's first token, once
      DLBOX_URL=http://HOST:PORT DLBOX_TOKEN=dlb_... dlbox ls     (on alice's machine)

    It replaces a background service the CLI started for the same dlbox home.
    """
    import os

    from dlbox.cli.workspaces import duration_flag
    from dlbox.containers import mount_policy
    from dlbox.server import app as svc

    if allow_foreign_images:
        os.environ["DLBOX_ALLOW_FOREIGN_IMAGES"] = "1"  # read at each submit (containers.foreign_images_allowed)
    if verify_key is not None:
        from dlbox.supply import signing

        signing.check_public_key(verify_key.resolve(), "--verify-key")
        os.environ["DLBOX_VERIFY_KEY"] = str(verify_key.resolve())  # read at each pull (config.verify_key)
    idle_default = duration_flag(idle_stop, "--idle-stop")
    roots = mount_policy.mount_roots(list(mount_roots) + [r for r in os.environ.get("DLBOX_MOUNT_ROOTS", "").split(":") if r])
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key: give both, or neither")
    if tls_cert:
        check_tls(tls_cert, tls_key)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: plain HTTP on {host}: tokens cross the network readable; use --tls-cert/--tls-key",
                   err=True)
    click.echo(f"dlbox server on {'https' if tls_cert else 'http'}://{host}:{port}/ (API under /api/, OpenAPI at "
               f"/openapi.json); mount roots: {', '.join(map(str, roots)) or 'none'}", err=True)
    svc.serve(host=host, port=port, mount_roots=roots, workspace_host=workspace_host, tls_cert=tls_cert,
              tls_key=tls_key, allow_containers=allow_containers, idle_stop=idle_default)


def check_tls(cert: Path, key: Path) -> None:
    """A clear error now rather than the server failing to start: the pair must load together."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"--tls-cert/--tls-key: {cert} and {key} do not load as a PEM certificate and its key "
                         f"({getattr(exc, 'reason', None) or exc.strerror or exc})") from None


@click.command(hidden=True)
def service() -> None:
    """Run the dlbox service in the foreground (the CLI starts it by itself when needed)."""
    from dlbox.server import app as svc

    svc.serve()
