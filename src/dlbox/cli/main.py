"""The `dlbox` command line. Thin: parse flags, call a module, print text or JSON.

Heavy modules (the Docker SDK, pydantic models, Rich) are imported inside commands so that
`dlbox --help` stays fast.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from dlbox.containers import mount_policy
from dlbox import __version__
from dlbox.errors import DlboxError, UsageError

JSON_HELP = "Print a JSON document for scripts instead of text."


def emit(data) -> None:
    click.echo(json.dumps(data, indent=2))


def remote() -> str | None:
    """The team server's URL when DLBOX_URL is set: commands then act there, through its API."""
    from dlbox import config

    return config.remote_url()


def on_server(method: str, path: str, **kwargs):
    from dlbox.cli import client

    return client.call(method, path, **kwargs)


def local_only(what: str) -> None:
    if remote():
        raise UsageError(f"{what} works on the engine's own machine only; unset DLBOX_URL (or use the dashboard)")


def _images():
    from dlbox.build import images

    return images


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="dlbox")
def cli() -> None:
    """dlbox: deep-learning environments as versioned, reproducible artifacts.

    A spec (dlbox.yaml) describes an environment; `dlbox build` turns it into an image
    whose exact package set is written to a lock (dlbox.lock) and stamped on the image.

    \b
    Start here:
      dlbox init --preset tensorflow-2.9     write a dlbox.yaml
      dlbox build                            build it (bootstraps a base the first time)
      dlbox images                           what has been built
      dlbox verify dlbox/tensorflow-2.9      does the image still match its lock?

    The engine is the Docker Engine at DOCKER_HOST (default unix:///var/run/docker.sock).
    """


# --- specs and presets --------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def presets(as_json: bool) -> None:
    """List the built-in specs that `init --preset` and `build --preset` accept."""
    from dlbox.spec import presets as p

    rows = [{"name": name, "summary": p.summary(name)} for name in p.names()]
    if as_json:
        emit(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:<22} {row['summary']}")


@cli.command()
@click.option("--preset", required=True, metavar="NAME", help="Preset to start from (see `dlbox presets`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("dlbox.yaml"),
              show_default=True, help="Where to write the spec.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def init(preset: str, output: Path, force: bool, as_json: bool) -> None:
    """Write a spec file from a preset, to edit and build."""
    from dlbox.spec import presets as p

    text = p.text(preset)
    if output.exists() and not force:
        raise UsageError(f"--output: {output} already exists (use --force to overwrite)")
    output.write_text(text)
    if as_json:
        emit({"spec": str(output), "preset": preset})
    else:
        click.echo(f"wrote {output} from preset {preset}; build it with `dlbox build {output}`")


# --- images -------------------------------------------------------------------------------


@cli.command()
@click.argument("spec_file", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", metavar="NAME", help="Build a built-in spec instead of a file.")
@click.option("--dry-run", is_flag=True, help="Print the rendered Dockerfile and stop; needs no engine.")
@click.option("--update-lock", is_flag=True, help="Resolve the spec's requirements again instead of using the lock.")
@click.option("--no-cache", is_flag=True, help="Do not use the engine's layer cache.")
@click.option("--ca-bundle", metavar="PATH|none",
              help="CA bundle the build trusts (default: $DLBOX_CA_BUNDLE or the host's); 'none' for no extra CA.")
@click.option("--tag", default="latest", show_default=True, help="Friendly tag, besides the content tag.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def build(spec_file, preset, dry_run, update_lock, no_cache, ca_bundle, tag, as_json) -> None:
    """Build an image from SPEC (default ./dlbox.yaml) or a --preset.

    The first build of a Debian base bootstraps it from the mirror (cached afterwards).
    If a lock next to the spec (dlbox.yaml -> dlbox.lock) matches the spec, the build
    installs exactly the locked packages and fails if the result differs; otherwise the
    requirements are resolved and a new lock is written. The image is tagged
    dlbox/NAME:<lock hash prefix> and dlbox/NAME:<tag>.
    """
    from dlbox import config
    from dlbox.build import bases
    from dlbox.build import render
    from dlbox.build import lock as locks

    if remote() and not dry_run:
        if spec_file or not preset:
            raise UsageError("against a server (DLBOX_URL), build a --preset; spec files build locally")
        result = on_server("POST", "/api/images", json={"preset": preset, "tag": tag})
        emit(result) if as_json else click.echo(f"{result['image']}  {result['id']}")
        return
    from dlbox.build.images import load_source

    spec, project_dir, lock_file = load_source(spec_file, preset)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise UsageError(f"--tag: {tag!r} is not a valid tag (letters, digits, '_', '.', '-')")
    if ca_bundle == "none":
        ca_path = None
    elif ca_bundle:
        ca_path = Path(ca_bundle)
        if not ca_path.is_file():
            raise UsageError(f"--ca-bundle: no file at {ca_bundle} (or 'none')")
    else:
        ca_path = config.default_ca_bundle()
    if dry_run:
        pinned = None
        if lock_file.exists() and not update_lock:
            candidate = locks.read(lock_file)
            pinned = candidate if candidate.spec_hash == spec.environment_hash() else None
        click.echo(render.render(spec, bases.ref(spec.base), lock=pinned, ca_bundle=ca_path is not None).dockerfile,
                   nl=False)
        return
    from dlbox.engine import api as engine
    from dlbox.build import images
    from dlbox.progress import Progress

    engine.client()  # fail fast, before any work, when no engine answers
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with Progress() as progress:
        result = images.build(spec, project_dir=project_dir, lock_file=lock_file, use_lock=not update_lock,
                              nocache=no_cache, ca_bundle=ca_path, tag=tag, progress=progress)
    if as_json:
        emit(result.to_json())
    else:
        click.echo(f"{result.image}  {result.id}\nlock {result.lock.hash}  {result.lock_file}")


@cli.command(name="images")
@click.option("--all", "show_all", is_flag=True, help="Include untagged images that a newer build replaced.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def images_cmd(show_all: bool, as_json: bool) -> None:
    """List the images dlbox has built, newest first."""
    rows = on_server("GET", "/api/images", params={"all": show_all}) if remote() else \
        _images().list_images(include_untagged=show_all)
    if as_json:
        emit(rows)
        return
    if not rows:
        click.echo("no dlbox images yet; build one with `dlbox build --preset tensorflow-2.9`")
        return
    click.echo(f"{'REF':<40} {'ID':<19} {'LOCK':<12} {'SIZE':>9}  CREATED")
    for r in rows:
        size = f"{(r['size'] or 0) / 1e6:.0f} MB"
        click.echo(f"{r['ref']:<40} {r['id'][:19]:<19} {(r['lock_hash'] or '')[:12]:<12} {size:>9}  {r['created']}")


@cli.command()
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def inspect(image: str, as_json: bool) -> None:
    """Show one image with its lock (IMAGE: a ref such as dlbox/NAME:latest, or an ID)."""
    data = on_server("GET", f"/api/images/{image}") if remote() else _images().inspect(image)
    if as_json:
        emit(data)
        return
    lock = data["lock"]
    for key in ("ref", "id", "lock_hash", "spec_hash", "git_commit", "created"):
        click.echo(f"{key:<11} {data[key]}")
    click.echo(f"{'size':<11} {(data['size'] or 0) / 1e6:.0f} MB")
    click.echo(f"{'base':<11} {lock['base']['ref']} (rootfs sha256 {lock['base']['rootfs_sha256']})")
    click.echo(f"{'python':<11} {lock['python']['version']}, {len(lock['python']['packages'])} packages")
    click.echo(f"{'os':<11} {len(lock['os']['packages'])} packages")
    for pkg in lock["python"]["packages"]:
        click.echo(f"  {pkg['name']}=={pkg['version']}")


@cli.command()
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def verify(image: str, as_json: bool) -> None:
    """Compare the packages actually in IMAGE with its lock; exit 1 on drift."""
    result = on_server("GET", f"/api/images/{image}/verify") if remote() else _images().verify(image)
    if as_json:
        emit(result)
    elif result["ok"]:
        click.echo(f"{image}: matches its lock {result['lock_hash'][:12]}")
    else:
        click.echo(f"{image}: {len(result['drift'])} packages differ from its lock {result['lock_hash'][:12]}")
        for d in result["drift"]:
            click.echo(f"  {d['kind']:<6} {d['name']}: locked {d['locked'] or '-'}, found {d['found'] or '-'}")
    if not result["ok"]:
        sys.exit(1)


@cli.command()
@click.argument("image")
@click.option("--force", is_flag=True, help="Remove even if a container uses it.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def rmi(image: str, force: bool, as_json: bool) -> None:
    """Remove a dlbox image (one tag; the layers go when no tag is left)."""
    if remote():
        result = on_server("DELETE", f"/api/images/{image}", params={"force": force})
    else:
        from dlbox.engine import api as engine
        from dlbox.build import images

        attrs = images.get(image)
        engine.remove_image(image, force=force)
        result = {"removed": image, "id": attrs["Id"]}
    if as_json:
        emit(result)
    else:
        click.echo(f"removed {image}")


# --- workspaces ---------------------------------------------------------------------------


def print_workspace(ws: dict, *, secrets_shown: bool) -> None:
    click.echo(f"workspace {ws['name']}: {ws['state']} ({ws['image']})")
    if ws["jupyter"]:
        click.echo(f"  Jupyter  {ws['jupyter']['url']}")
    if ws["ssh"]:
        ssh = ws["ssh"]
        click.echo(f"  SSH      ssh -p {ssh['port']} {ssh['user']}@{ssh['host']}   (or: dlbox ssh {ws['name']})")
    click.echo(f"  data     volume {ws['volume']['name']} at {ws['volume']['target']}")
    for m in ws["mounts"]:
        click.echo(f"  mount    {m['source']} -> {m['target']}{' (read-only)' if m['read_only'] else ''}")
    r = ws["resources"]
    click.echo(f"  limits   memory {r['memory'] or 'none'}, cpus {r['cpus'] or 'all'}, /dev/shm {r['shm_size']}, "
               f"pids {r['pids']}, gpus {','.join(r['gpus']) if r['gpus'] else 'none'}")
    if secrets_shown and ws["jupyter"]:
        click.echo("  (the token is shown only now and by `dlbox token`; keep it to yourself)")


@cli.command()
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
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def up(name, spec_file, preset, image, jupyter, ssh, ssh_key, mounts, memory, cpus, gpus, share_gpus, shm_size,
       pids, host, jupyter_port, ssh_port, as_json) -> None:
    """Start workspace NAME and return when its services answer.

    The image comes from SPEC, --preset or --image (default ./dlbox.yaml, else the
    tensorflow-2.9 preset) and is built first if missing. The workspace keeps its files in a
    volume at /workspace that survives `dlbox rm` (unless --purge-data). Prints the Jupyter
    URL with its token, and the SSH command.
    """
    if remote():
        if spec_file or host != "127.0.0.1":
            raise UsageError("against a server (DLBOX_URL), use --preset or --image; the server chooses the host")
        key = None
        if ssh:
            from dlbox.workspaces.manage import UpRequest, public_key

            key = public_key(UpRequest(name=name, ssh_key=ssh_key))[0]
        ws = on_server("POST", "/api/workspaces", json={
            "name": name, "preset": preset, "image": image, "jupyter": jupyter, "ssh": ssh, "ssh_public_key": key,
            "mounts": list(mounts), "memory": memory, "cpus": cpus, "gpus": gpus, "shm_size": shm_size, "pids": pids})
        emit(ws) if as_json else print_workspace(ws, secrets_shown=True)
        return
    from dlbox.engine import api as engine
    from dlbox.workspaces import manage as workspaces
    from dlbox.progress import Progress

    request = workspaces.UpRequest(
        name=name, spec_file=spec_file, preset=preset, image=image, jupyter=jupyter, ssh=ssh, ssh_key=ssh_key,
        mounts=list(mounts), memory=memory, cpus=cpus, gpus=gpus, share_gpus=share_gpus, shm_size=shm_size,
        pids=pids, host=host, jupyter_port=jupyter_port, ssh_port=ssh_port)
    engine.client()
    with Progress() as progress:
        ws = workspaces.up(request, progress)
    if as_json:
        emit(ws)
    else:
        print_workspace(ws, secrets_shown=True)


@cli.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def ls_cmd(as_json: bool) -> None:
    """List workspaces (no secrets: use `dlbox token NAME` for a Jupyter token)."""
    if remote():
        rows = on_server("GET", "/api/workspaces", params={"limit": 1000})  # the most a page holds
    else:
        from dlbox.workspaces import manage as workspaces

        rows = workspaces.ls()
    if as_json:
        emit(rows)
        return
    if not rows:
        click.echo("no workspaces; start one with `dlbox up NAME`")
        return
    click.echo(f"{'NAME':<16} {'STATE':<9} {'JUPYTER':<28} {'SSH':<7} {'MEMORY':<7} {'CPUS':<5} {'OOM':<4} IMAGE")
    for r in rows:
        res = r["resources"]
        click.echo(f"{r['name']:<16} {r['state']:<9} {(r['jupyter'] or {}).get('url', '-'):<28} "
                   f"{(r['ssh'] or {}).get('port', '-'):<7} {res['memory'] or '-':<7} {res['cpus'] or '-':<5} "
                   f"{r['oom']['kills']:<4} {r['image']}")


def _lifecycle_command(action: str, doc: str) -> None:
    """stop, start and restart: the same flags and output, a different workspace call."""

    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
    def command(name: str, as_json: bool) -> None:
        if remote():
            ws = on_server("POST", f"/api/workspaces/{name}/{action}")
        else:
            from dlbox.workspaces import manage as workspaces
            from dlbox.progress import Progress

            with Progress() as progress:
                ws = getattr(workspaces, action)(name, progress)
        if as_json:
            emit(ws)
        else:
            print_workspace(ws, secrets_shown=False)

    command.__doc__ = doc
    cli.command(name=action)(command)


_lifecycle_command("stop", "Stop workspace NAME; its container, data, URL and token stay.")
_lifecycle_command("start", "Start a stopped workspace NAME (same ports, same token) and wait for its services.")
_lifecycle_command("restart", "Restart workspace NAME (its processes end; its data stays).")


@cli.command()
@click.argument("name")
@click.option("--purge-data", is_flag=True, help="Also delete the workspace's data volume (cannot be undone).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def rm(name: str, purge_data: bool, as_json: bool) -> None:
    """Remove workspace NAME. Its /workspace volume is kept for the next `up NAME` unless --purge-data."""
    if remote():
        result = on_server("DELETE", f"/api/workspaces/{name}", params={"purge_data": purge_data})
    else:
        from dlbox.workspaces import manage as workspaces

        result = workspaces.rm(name, purge_data=purge_data)
    if as_json:
        emit(result)
    else:
        click.echo(f"removed workspace {name}; data {result['data']}")


@cli.command()
@click.argument("target", metavar="NAME|JOB_ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until it ends.")
@click.option("--tail", default="all", show_default=True, help="Workspaces: only the last N lines.")
def logs(target: str, follow: bool, tail: str) -> None:
    """Print a workspace's service output, or a job's complete output (kept after it ends)."""
    if tail != "all" and not tail.isdigit():
        raise UsageError("--tail: a number of lines, or all")
    if remote():
        from dlbox.cli import client

        for chunk in client.stream(f"/api/jobs/{target}/logs", {"follow": follow}):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        return
    from dlbox.engine import api as engine
    from dlbox.workspaces import manage as workspaces

    attrs = engine.container_attrs(workspaces.container_name(target)) if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", target) \
        else None
    if attrs is None and re.fullmatch(r"[0-9a-f]{4,32}", target):
        from dlbox.cli import client

        for chunk in client.stream(f"/api/jobs/{target}/logs", {"follow": follow}):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        return
    attrs = workspaces._attrs(target)
    for chunk in engine.logs(attrs["Id"], follow=follow, tail=int(tail) if tail.isdigit() else "all"):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in workspace NAME as its user: dlbox exec NAME -- CMD [ARGS]...

    Exits with the command's exit code.
    """
    local_only("exec")
    from dlbox.engine import api as engine
    from dlbox.workspaces import manage as workspaces

    sys.exit(engine.exec_stream(workspaces.container_of(name), list(command)))


@cli.command()
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, command: tuple[str, ...]) -> None:
    """Open an SSH session to workspace NAME (or run COMMAND there), with its pinned host key."""
    import os
    import shutil

    local_only("ssh")
    from dlbox.workspaces import manage as workspaces

    if shutil.which("ssh") is None:
        raise DlboxError("no ssh client here (apt-get install openssh-client)")
    ws = workspaces.show(name)
    if not ws["ssh"]:
        raise UsageError(f"workspace {name} has no SSH (start it with `dlbox up {name} --ssh`)")
    info = workspaces.write_ssh_config()
    os.execvp("ssh", ["ssh", "-F", info["config"], f"dlbox-{name}", *command])


@cli.command(name="ssh-config")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def ssh_config(as_json: bool) -> None:
    """Write an ssh_config with a `Host dlbox-NAME` per SSH workspace, with pinned host keys.

    Add `Include <file>` to ~/.ssh/config, then `ssh dlbox-NAME` and VS Code Remote-SSH work
    without flags.
    """
    local_only("ssh-config")
    from dlbox.workspaces import manage as workspaces

    info = workspaces.write_ssh_config()
    if as_json:
        emit(info)
    else:
        click.echo(f"wrote {info['config']} ({len(info['hosts'])} hosts: {', '.join(info['hosts']) or 'none'})")
        click.echo(f"add this line to ~/.ssh/config:  Include {info['config']}")


@cli.command(name="open")
@click.argument("name")
@click.option("--browser", is_flag=True, help="Open it in a web browser instead of printing it.")
def open_cmd(name: str, browser: bool) -> None:
    """Print workspace NAME's Jupyter URL with its token (or open it)."""
    if remote():
        ws = {"jupyter": on_server("GET", f"/api/workspaces/{name}/token")}
    else:
        from dlbox.workspaces import manage as workspaces

        ws = workspaces.show(name, with_token=True)
    if not ws["jupyter"]:
        raise UsageError(f"workspace {name} runs no Jupyter server")
    if browser:
        import webbrowser

        webbrowser.open(ws["jupyter"]["url"])
    click.echo(ws["jupyter"]["url"])


@cli.command()
@click.argument("name")
@click.option("--rotate", is_flag=True, help="Make a new token; the old one stops working at once.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def token(name: str, rotate: bool, as_json: bool) -> None:
    """Print workspace NAME's Jupyter token, or --rotate it (Jupyter restarts; kernels end)."""
    if remote():
        found = on_server("POST" if rotate else "GET", f"/api/workspaces/{name}/token")
        emit(found) if as_json else click.echo(found["token"])
        return
    from dlbox.workspaces import manage as workspaces
    from dlbox.progress import Progress

    if rotate:
        with Progress() as progress:
            ws = workspaces.rotate_token(name, progress)
    else:
        ws = workspaces.show(name, with_token=True)
    if not ws["jupyter"]:
        raise UsageError(f"workspace {name} runs no Jupyter server")
    if "token" not in ws["jupyter"]:
        raise DlboxError(f"workspace {name}'s token is not in this dlbox home; `dlbox token {name} --rotate` makes one")
    if as_json:
        emit({"name": name, "token": ws["jupyter"]["token"], "url": ws["jupyter"]["url"], "rotated": rotate})
    else:
        click.echo(ws["jupyter"]["token"])


# --- jobs and runs -------------------------------------------------------------------------


def print_job(job: dict) -> None:
    click.echo(f"job {job['id']}: {job['state']}{' (' + job['reason'] + ')' if job.get('reason') else ''}")


@cli.command()
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[SPEC] -- CMD...")
@click.option("--preset", metavar="NAME", help="Run in a built-in spec's image.")
@click.option("--image", metavar="REF", help="Run in this image.")
@click.option("--workspace", metavar="NAME", help="Run in a workspace's image with its /workspace volume.")
@click.option("--name", help="A name for the job.")
@click.option("--mount", "mounts", multiple=True, metavar="SRC:DST[:ro]", help="Mount a host directory (repeatable).")
@click.option("--memory", metavar="SIZE", help="Memory limit; past it the job ends as oom-killed.")
@click.option("--cpus", type=float, help="CPUs the job needs (default 1); it waits until they are free.")
@click.option("--gpus", metavar="all|N|ID,ID", help="GPUs the job needs.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter, recorded with the run and given as $DLBOX_PARAM_KEY (repeatable).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def run(args, preset, image, workspace, name, mounts, memory, cpus, gpus, params, as_json) -> None:
    """Submit CMD as a detached job and return at once with its id.

    The job runs in its own container and keeps running when this command, the terminal or
    dlbox's service ends. Its record keeps the exact image ID, lock, git commit and metrics
    written to $DLBOX_RUN_DIR/metrics.jsonl.

    SPEC is a .yaml/.yml (or existing) file followed by options only, then `--`. Otherwise CMD
    starts at the first word that is not an option; the options and `--` after it are CMD's own.

    \b
    dlbox run --preset tensorflow-2.9 --mount examples/digits:/code:ro -- python /code/train.py
    """
    # dlbox.launch hands every well-formed `dlbox run` to dlbox.submit before click loads, and
    # comes here only for --help and for what click refuses; click also drops the `--` that
    # separates SPEC from CMD, so it could not read them apart.
    from dlbox.cli.submit import USAGE

    raise UsageError(USAGE)


def limit_option(default: int = 100, most: int = 1000):
    return click.option("--limit", default=default, show_default=True, type=click.IntRange(1, most),
                        help="At most this many rows (the newest, for jobs and runs).")


def more_hint(rows: list, limit: int) -> None:
    if len(rows) >= limit:
        click.echo(f"(the first {limit} shown; --limit for more)", err=True)


@cli.command(name="jobs")
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@limit_option()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def jobs_cmd(show_all: bool, limit: int, as_json: bool) -> None:
    """List queued and running jobs (--all: finished ones too), the newest last."""
    from dlbox.cli import client

    rows = client.call("GET", "/api/jobs", params={"all": show_all, "limit": limit})
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit)
    if not rows:
        click.echo("no jobs; submit one with `dlbox run ... -- CMD`")
        return
    click.echo(f"{'ID':<13} {'STATE':<11} {'USER':<10} {'CPUS':<5} {'SUBMITTED':<21} COMMAND")
    for j in rows:
        click.echo(f"{j['id']:<13} {j['state']:<11} {j['user']:<10} {j['resources']['cpus']:<5g} "
                   f"{j['submitted_at']:<21} {' '.join(j['command'])[:60]}")


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def wait(job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a job to end; exit with its exit code."""
    import time

    from dlbox.cli import client

    deadline = time.monotonic() + timeout if timeout is not None else None
    while True:
        job = client.call("GET", f"/api/jobs/{job_id}")
        if job["state"] in ("succeeded", "failed", "cancelled", "oom-killed", "lost"):
            break
        if deadline is not None and time.monotonic() > deadline:
            raise DlboxError(f"job {job_id} is still {job['state']} after {timeout:g}s")
        time.sleep(0.2)
    if as_json:
        emit({"id": job["id"], "state": job["state"], "exit_code": job["exit_code"], "reason": job["reason"]})
    else:
        print_job(job)
    code = job["exit_code"]
    sys.exit(code if isinstance(code, int) and 0 <= code < 256 else (0 if job["state"] == "succeeded" else 1))


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job: SIGTERM, then SIGKILL after 10 s; a queued job never starts."""
    from dlbox.cli import client

    job = client.call("POST", f"/api/jobs/{job_id}/cancel")
    if as_json:
        emit(job)
    else:
        click.echo(f"job {job['id']}: cancel requested ({job['state']})")


@cli.group(invoke_without_command=True)
@limit_option(default=1000, most=10_000)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def runs(ctx, limit: int, as_json: bool) -> None:
    """Run records, newest first: what each job ran on (image ID, lock, git commit), params, last metrics.

    `dlbox runs show ID` has the whole record: environment, code diff, metric history, artifacts.
    """
    if ctx.invoked_subcommand is not None:
        return
    from dlbox.cli import client

    rows = client.call("GET", "/api/runs", params={"limit": limit})
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit)
    click.echo(f"{'ID':<13} {'STATE':<11} {'EXIT':<5} {'IMAGE':<19} {'LOCK':<12} {'GIT':<9} METRICS")
    for r in rows:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items())
        click.echo(f"{r['id']:<13} {r['state']:<11} {str(r['exit_code'] if r['exit_code'] is not None else '-'):<5} "
                   f"{r['image_id'][:19]:<19} {(r['lock_hash'] or '-')[:12]:<12} "
                   f"{(r['git_commit'] or '-')[:8] + ('*' if r['git_dirty'] else ''):<9} {metrics}")


@runs.command(name="show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one run record in full."""
    from dlbox.cli import client

    record = client.call("GET", f"/api/runs/{run_id}")
    if as_json:
        emit(record)
        return
    for key in ("id", "state", "reason", "exit_code", "image", "image_id", "lock_hash", "spec_hash", "git_commit",
                "git_dirty", "submitted_at", "started_at", "ended_at", "peak_memory"):
        click.echo(f"{key:<13} {record[key]}")
    click.echo(f"{'command':<13} {' '.join(record['command'])}")
    click.echo(f"{'params':<13} {record['params']}")
    click.echo(f"{'metrics':<13} {record['metrics']}")
    click.echo(f"{'artifacts':<13} {', '.join(record['artifacts']) or '-'} (in {record['artifacts_dir']})")
    for link in record.get("artifact_links") or []:
        click.echo(f"{'':<13} {link['path']} -> {link['target']} (a link: recorded, not followed)")
    for note in record.get("notes") or []:
        click.echo(f"{'note':<13} {note}")


@runs.command(name="diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def runs_diff(a: str, b: str, as_json: bool) -> None:
    """What differs between runs A and B: image, lock packages, params, code, metrics."""
    from dlbox.cli import client
    from dlbox.runs import diff as rundiff

    result = rundiff.diff(client.call("GET", f"/api/runs/{a}"), client.call("GET", f"/api/runs/{b}"))
    if as_json:
        emit(result)
        return
    for section, changes in result.items():
        if section in ("a", "b"):
            continue
        if not changes:
            click.echo(f"{section}: same")
            continue
        click.echo(f"{section}:")
        for change in changes:
            click.echo(f"  {change['name']}: {change['a']} -> {change['b']}")


@runs.command(name="export")
@click.argument("run_id")
@click.option("--mlflow", "uri", required=True, metavar="URI", help="MLflow tracking server, e.g. http://mlflow:5000.")
@click.option("--experiment", default="dlbox", show_default=True, help="MLflow experiment (made if missing).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def runs_export(run_id: str, uri: str, experiment: str, as_json: bool) -> None:
    """Export a run record to MLflow: params, metric history, and the image ID and git commit tags."""
    from dlbox.cli import client
    from dlbox.runs import mlflow_export

    result = mlflow_export.export(client.call("GET", f"/api/runs/{run_id}"), uri, experiment)
    if as_json:
        emit(result)
    else:
        click.echo(f"exported run {result['run']} to {uri} as MLflow run {result['mlflow_run_id']}")


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def reproduce(run_id: str, as_json: bool) -> None:
    """Run a recorded run again: same command and params on the exact image ID.

    If that image is gone, it is rebuilt from the run's stored lock; the job runs only if the
    rebuilt lock hash is the recorded one.
    """
    from dlbox.cli import client
    from dlbox.runs import reproduce as reproduction
    from dlbox.progress import Progress

    record = client.call("GET", f"/api/runs/{run_id}")
    with Progress() as progress:
        body = reproduction.request_for(record, progress)
    job = client.call("POST", "/api/jobs", json=body)
    if as_json:
        emit(job)
    else:
        click.echo(f"job {job['id']} {job['state']}: reproduces run {record['id']} on {job['image_id'][:19]}")


# --- the team server, users and tokens ----------------------------------------------------------


@cli.command()
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
def server(host: str, port: int, mount_roots: tuple[str, ...], workspace_host: str, tls_cert: Path | None,
           tls_key: Path | None, allow_containers: bool, allow_foreign_images: bool) -> None:
    """Serve dlbox to a team: the HTTP API under /api/ and the dashboard, on HOST:PORT.

    Every API route but /api/health needs a token (Authorization: Bearer dlb_...). On this
    machine, the owner of the dlbox home manages users over the local socket:

    \b
      dlbox users add alice --cpus 4 --memory 16g     prints alice's first token, once
      DLBOX_URL=http://HOST:PORT DLBOX_TOKEN=dlb_... dlbox ls     (on alice's machine)

    It replaces a background service the CLI started for the same dlbox home.
    """
    import os

    from dlbox.server import app as svc

    if allow_foreign_images:
        os.environ["DLBOX_ALLOW_FOREIGN_IMAGES"] = "1"  # read at each submit (containers.foreign_images_allowed)
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
              tls_key=tls_key, allow_containers=allow_containers)


def check_tls(cert: Path, key: Path) -> None:
    """A clear error now rather than the server failing to start: the pair must load together."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"--tls-cert/--tls-key: {cert} and {key} do not load as a PEM certificate and its key "
                         f"({getattr(exc, 'reason', None) or exc.strerror or exc})") from None


def quota_flags(command):
    for flag, kind, text in (("--workspaces", int, "workspaces at once"), ("--cpus", float, "CPUs"),
                             ("--memory", str, "memory, e.g. 16g"), ("--gpus", int, "GPUs"),
                             ("--storage", str, "bytes of run artifacts kept, e.g. 50g")):
        command = click.option(flag, type=kind, help=f"Quota: {text}.")(command)
    return command


@cli.group()
def users() -> None:
    """Users of the team server (admins only): add, list, set quotas, remove."""


@users.command(name="add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May manage users and see everything.")
@quota_flags
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def users_add(name, admin, gpus, memory, cpus, workspaces, storage, as_json) -> None:
    """Add user NAME and print their first API token (shown once: hand it over safely)."""
    quota = {"workspaces": workspaces, "cpus": cpus, "memory": memory, "gpus": gpus, "storage": storage}
    user = on_server("POST", "/api/users", json={"name": name, "admin": admin, "quota": quota})
    if as_json:
        emit(user)
    else:
        click.echo(f"added {user['role']} {user['name']}; their token (shown only now):\n{user['token']}")


@users.command(name="ls")
@limit_option()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def users_ls(limit: int, as_json: bool) -> None:
    """List users with their roles and quotas, by name."""
    rows = on_server("GET", "/api/users", params={"limit": limit})
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit)
    click.echo(f"{'NAME':<16} {'ROLE':<6} {'CREATED':<21} QUOTA")
    for u in rows:
        quota = ", ".join(f"{k}={v}" for k, v in u["quota"].items()) or "-"
        click.echo(f"{u['name']:<16} {u['role']:<6} {u['created_at']:<21} {quota}")


@users.command(name="quota")
@click.argument("name")
@quota_flags
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def users_quota(name, gpus, memory, cpus, workspaces, storage, as_json) -> None:
    """Set NAME's quotas (the flags given; the others are lifted)."""
    user = on_server("PUT", f"/api/users/{name}/quota", json={"workspaces": workspaces, "cpus": cpus,
                                                             "memory": memory, "gpus": gpus, "storage": storage})
    emit(user) if as_json else click.echo(f"{name}: quota {user['quota'] or 'none'}")


@users.command(name="rm")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def users_rm(name: str, as_json: bool) -> None:
    """Remove user NAME; their tokens stop working at once."""
    result = on_server("DELETE", f"/api/users/{name}")
    emit(result) if as_json else click.echo(f"removed user {name}")


@cli.group()
def tokens() -> None:
    """Your API tokens for the team server: create, list, revoke."""


@tokens.command(name="create")
@click.option("--name", help="A label to tell tokens apart.")
@click.option("--expires", default="90d", show_default=True, metavar="30d|12h|90m|never", help="When it stops working.")
@click.option("--user", help="Admins: a token for another user.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def tokens_create(name, expires, user, as_json) -> None:
    """Create a token and print it (shown once)."""
    row = on_server("POST", "/api/tokens", json={"name": name, "expires": expires, "user": user})
    emit(row) if as_json else click.echo(row["token"])


@tokens.command(name="ls")
@click.option("--all", "show_all", is_flag=True, help="Admins: everyone's tokens.")
@limit_option()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def tokens_ls(show_all: bool, limit: int, as_json: bool) -> None:
    """List tokens (never the secrets themselves), oldest first."""
    rows = on_server("GET", "/api/tokens", params={"all": show_all, "limit": limit})
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit)
    click.echo(f"{'ID':<13} {'USER':<12} {'NAME':<12} {'STATE':<8} {'EXPIRES':<21} CREATED")
    for t in rows:
        click.echo(f"{t['id']:<13} {t['user']:<12} {t['name'] or '-':<12} {t['state']:<8} "
                   f"{t['expires_at'] or 'never':<21} {t['created_at']}")


@tokens.command(name="revoke")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def tokens_revoke(token_id: str, as_json: bool) -> None:
    """Revoke token TOKEN_ID (see `dlbox tokens ls`); it stops working at once."""
    row = on_server("DELETE", f"/api/tokens/{token_id}")
    emit(row) if as_json else click.echo(f"revoked token {row['id']}")


@cli.command(hidden=True)
def service() -> None:
    """Run the dlbox service in the foreground (the CLI starts it by itself when needed)."""
    from dlbox.server import app as svc

    svc.serve()


# --- entry point --------------------------------------------------------------------------


def fail(message: str, exit_code: int) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(exit_code)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except BaseException as exc:  # noqa: BLE001 - report() lets SystemExit through
        report(exc)


def report(exc: BaseException) -> None:
    """End the process for `exc`: one line on stderr and its exit code (2 for usage errors)."""
    if isinstance(exc, click.exceptions.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
        fail("interrupted", 130)
    if isinstance(exc, click.UsageError):
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        fail(exc.format_message() + where, 2)
    if isinstance(exc, click.ClickException):
        fail(exc.format_message(), exc.exit_code)
    if isinstance(exc, DlboxError):
        fail(exc.message, exc.exit_code)
    if not isinstance(exc, Exception):  # SystemExit and the like
        raise exc
    import os

    if os.environ.get("DLBOX_DEBUG"):  # a bug or an engine surprise: one line, the trace on request
        raise exc
    origin = type(exc).__module__.split(".")[0]
    what = {"docker": "the engine", "requests": "the engine", "http": "the dlbox service"}.get(origin)
    detail = f"{what} failed: {exc}" if what else f"internal error: {type(exc).__name__}: {exc}"
    fail(detail.splitlines()[0] + " (DLBOX_DEBUG=1 shows the traceback)", 1)
