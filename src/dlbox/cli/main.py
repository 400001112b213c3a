"""The `dlbox` command line: the click group, with each noun's commands registered from its module.

A command parses flags, makes one call to a backend (cli/backend.py: this machine, or the
team server at DLBOX_URL) and prints the answer (cli/output.py). Heavy modules (the Docker
SDK, pydantic models, Rich) are imported inside commands so that `dlbox --help` stays fast.
"""

from __future__ import annotations

import click

from dlbox import __version__
from dlbox.cli import (deployments, images, jobs, models, pipelines, registry, runs, server, specs, supply, users,
                       workspaces)
from dlbox.cli.output import report

__all__ = ["cli", "main", "report"]


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
      dlbox verify --workspace NAME          what its user pip-installed beyond the image

    The engine is the Docker Engine at DOCKER_HOST (default unix:///var/run/docker.sock).
    """


for command in (
    specs.presets, specs.init,
    images.build, images.images_cmd, images.inspect, images.verify, images.rmi,
    supply.scan, supply.sbom, registry.login, registry.push, registry.pull,
    workspaces.up, workspaces.ls_cmd, workspaces.stop, workspaces.start, workspaces.restart, workspaces.rm,
    workspaces.logs, workspaces.exec_cmd, workspaces.ssh, workspaces.ssh_config, workspaces.open_cmd,
    workspaces.token,
    jobs.run, jobs.jobs_cmd, jobs.wait, jobs.cancel,
    runs.runs, runs.reproduce, runs.gc, models.models, deployments.serve, deployments.deployments,
    pipelines.pipeline, pipelines.hooks,
    server.server, users.users, users.tokens, server.service,
):
    cli.add_command(command)
del command

run = jobs.run  # tests read click's `run` options against cli/submit.py's table


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except BaseException as exc:  # noqa: BLE001 - report() lets SystemExit through
        report(exc)
