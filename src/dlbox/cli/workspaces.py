"""Workspaces: up, ls, stop/start/restart, rm, logs, exec, ssh, ssh-config, open, token."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dlbox.cli.output import emit, json_option, more_hint, page_options, print_workspace, write_chunks
from dlbox.errors import UsageError


@click.command()
@click.argument("name")
@click.argument("spec_file", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", metavar="NAME", help="Use a built-in spec (see `dlbox presets`).")
@click.option("--image", metavar="REF", help="Use an image dlbox built (see `dlbox images`).")
@click.option("--jupyter/--no-jupyter", default=None, help="Run Jupyter (default: when the image has it).")
@click.option("--ssh", is_flag=True, help="Run an SSH server: key-only, for the workspace user, never root.")
@click.option("--ssh-key", type=click.Path(dir_okay=False, path_type=Path), metavar="PUBKEY_FILE",
              help="Public key allowed to log in (default ~/.ssh/id_ed25519.pub or id_rsa.pub).")
@click.option("--mount", "mounts", multiple=True, metavar="SRC:DST[:ro]", help="Mount a host directory (repeatable).")
@click.option("--memory", metavar="SIZE", help="Memory limit, e.g. 8g; past it the kernel kills inside the workspace.")
@click.option("--cpus", type=float, help="CPU quota, e.g. 4 or 0.5.")
@click.option("--gpus", metavar="all|N|ID,ID", help="GPUs to give (NVIDIA container toolkit).")
@click.option("--share-gpus", is_flag=True, help="Allow GPUs that another workspace or job holds.")
@click.option("--shm-size", metavar="SIZE", help="/dev/shm size (default 1g; Docker's 64m breaks data loaders).")
@click.option("--pids", type=int, help="Process-count limit (default 4096).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to publish ports on.")
@click.option("--jupyter-port", type=int, help="Host port for Jupyter (default: a free one).")
@click.option("--ssh-port", type=int, help="Host port for SSH (default: a free one).")
@click.option("--idle-stop", metavar="DURATION",
              help="Stop it after this long idle (90s, 30m, 2h; off: never): no Jupyter activity or busy kernel, "
                   "no SSH session, no process of yours using CPU. Default: the spec's, else the server's.")
@json_option
def up(name, spec_file, preset, image, jupyter, ssh, ssh_key, mounts, memory, cpus, gpus, share_gpus, shm_size,
       pids, host, jupyter_port, ssh_port, idle_stop, as_json) -> None:
    """Start workspace NAME and return when its services answer.

    The image comes from SPEC, --preset or --image (default ./dlbox.yaml, else the
    tensorflow-2.9 preset) and is built first if missing. The workspace keeps its files in a
    volume at /workspace that survives `dlbox rm` (unless --purge-data). Prints the Jupyter
    URL with its token, and the SSH command.
    """
    from dlbox.cli.backend import backend

    idle = duration_flag(idle_stop, "--idle-stop")
    ws = backend().up(name, spec_file=spec_file, preset=preset, image=image, jupyter=jupyter, ssh=ssh,
                      ssh_key=ssh_key, mounts=mounts, memory=memory, cpus=cpus, gpus=gpus, share_gpus=share_gpus,
                      shm_size=shm_size, pids=pids, host=host, jupyter_port=jupyter_port, ssh_port=ssh_port,
                      idle_stop=idle)
    if as_json:
        emit(ws)
    else:
        print_workspace(ws, secrets_shown=True)


def duration_flag(text: str | None, flag: str) -> int | None:
    """A duration flag's seconds (0: off), or a one-line usage error."""
    from dlbox.sizes import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


@click.command(name="ls")
@page_options()
@json_option
def ls_cmd(limit: int, offset: int, as_json: bool) -> None:
    """List workspaces (no secrets: use `dlbox token NAME` for a Jupyter token)."""
    from dlbox.cli.backend import backend

    rows = backend().workspaces(limit=limit, offset=offset)
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit, offset)
    if not rows:
        click.echo("no workspaces; start one with `dlbox up NAME`")
        return
    states = {r["name"]: (r.get("stopped") or {}).get("text") or r["state"] for r in rows}  # "stopped: idle for 2h"
    wide = max(9, *map(len, states.values()))
    click.echo(f"{'NAME':<16} {'STATE':<{wide}} {'JUPYTER':<28} {'SSH':<7} {'MEMORY':<7} {'CPUS':<5} {'OOM':<4} IMAGE")
    for r in rows:
        res = r["resources"]
        click.echo(f"{r['name']:<16} {states[r['name']]:<{wide}} {(r['jupyter'] or {}).get('url', '-'):<28} "
                   f"{(r['ssh'] or {}).get('port', '-'):<7} {res['memory'] or '-':<7} {res['cpus'] or '-':<5} "
                   f"{r['oom']['kills']:<4} {r['image']}")


def _lifecycle_command(action: str, doc: str) -> click.Command:
    """stop, start and restart: the same flags and output, a different workspace call."""

    @click.argument("name")
    @json_option
    def command(name: str, as_json: bool) -> None:
        from dlbox.cli.backend import backend

        ws = backend().lifecycle(action, name)
        if as_json:
            emit(ws)
        else:
            print_workspace(ws, secrets_shown=False)

    command.__doc__ = doc
    return click.command(name=action)(command)


stop = _lifecycle_command("stop", "Stop workspace NAME; its container, data, URL and token stay.")
start = _lifecycle_command("start", "Start a stopped workspace NAME (same ports, same token) and wait for its services.")
restart = _lifecycle_command("restart", "Restart workspace NAME (its processes end; its data stays).")


@click.command()
@click.argument("name")
@click.option("--purge-data", is_flag=True, help="Also delete the workspace's data volume (cannot be undone).")
@json_option
def rm(name: str, purge_data: bool, as_json: bool) -> None:
    """Remove workspace NAME. Its /workspace volume is kept for the next `up NAME` unless --purge-data."""
    from dlbox.cli.backend import backend

    result = backend().rm(name, purge_data=purge_data)
    if as_json:
        emit(result)
    else:
        click.echo(f"removed workspace {name}; data {result['data']}")


@click.command()
@click.argument("target", metavar="NAME|JOB_ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until it ends.")
@click.option("--tail", default="all", show_default=True, help="Workspaces: only the last N lines.")
def logs(target: str, follow: bool, tail: str) -> None:
    """Print a workspace's service output, or a job's complete output (kept after it ends)."""
    if tail != "all" and not tail.isdigit():
        raise UsageError("--tail: a number of lines, or all")
    from dlbox.cli.backend import backend

    write_chunks(backend().logs(target, follow=follow, tail=tail))


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in workspace NAME as its user: dlbox exec NAME -- CMD [ARGS]...

    Exits with the command's exit code.
    """
    from dlbox.cli.backend import backend

    sys.exit(backend().exec(name, list(command)))


@click.command()
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, command: tuple[str, ...]) -> None:
    """Open an SSH session to workspace NAME (or run COMMAND there), with its pinned host key."""
    import os

    from dlbox.cli.backend import backend

    info = backend().ssh_target(name)
    os.execvp("ssh", ["ssh", "-F", info["config"], f"dlbox-{name}", *command])


@click.command(name="ssh-config")
@json_option
def ssh_config(as_json: bool) -> None:
    """Write an ssh_config with a `Host dlbox-NAME` per SSH workspace, with pinned host keys.

    Add `Include <file>` to ~/.ssh/config, then `ssh dlbox-NAME` and VS Code Remote-SSH work
    without flags.
    """
    from dlbox.cli.backend import backend

    info = backend().ssh_config()
    if as_json:
        emit(info)
    else:
        click.echo(f"wrote {info['config']} ({len(info['hosts'])} hosts: {', '.join(info['hosts']) or 'none'})")
        click.echo(f"add this line to ~/.ssh/config:  Include {info['config']}")


@click.command(name="open")
@click.argument("name")
@click.option("--browser", is_flag=True, help="Open it in a web browser instead of printing it.")
def open_cmd(name: str, browser: bool) -> None:
    """Print workspace NAME's Jupyter URL with its token (or open it)."""
    from dlbox.cli.backend import backend

    jupyter = backend().jupyter(name)
    if not jupyter:
        raise UsageError(f"workspace {name} runs no Jupyter server")
    if browser:
        import webbrowser

        webbrowser.open(jupyter["url"])
    click.echo(jupyter["url"])


@click.command()
@click.argument("name")
@click.option("--rotate", is_flag=True, help="Make a new token; the old one stops working at once.")
@json_option
def token(name: str, rotate: bool, as_json: bool) -> None:
    """Print workspace NAME's Jupyter token, or --rotate it (Jupyter restarts; kernels end)."""
    from dlbox.cli.backend import backend

    found = backend().token(name, rotate=rotate)
    if as_json:
        emit(found)
    else:
        click.echo(found["token"])
