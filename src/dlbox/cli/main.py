"""The `dlbox` command line: the click group, with each noun's commands registered from its module.

A command parses flags, makes one call to a backend (cli/backend.py: this machine, or the
team server at DLBOX_URL) and prints the answer (cli/output.py). Heavy modules (the Docker
SDK, pydantic models, Rich) are imported inside commands so that `dlbox --help` stays fast.
"""

from __future__ import annotations

import sys

import click

from dlbox import __version__
from dlbox.cli.output import report

__all__ = ["cli", "main", "report"]

# command name -> (module in dlbox.cli, attribute): a command's module is imported only when that
# command runs (or help lists them all), so `dlbox up` loads one noun's commands, not eleven
COMMANDS = {
    "presets": ("specs", "presets"), "init": ("specs", "init"),
    "build": ("images", "build"), "images": ("images", "images_cmd"), "inspect": ("images", "inspect"),
    "verify": ("images", "verify"), "rmi": ("images", "rmi"),
    "scan": ("supply", "scan"), "sbom": ("supply", "sbom"),
    "login": ("registry", "login"), "push": ("registry", "push"), "pull": ("registry", "pull"),
    "up": ("workspaces", "up"), "ls": ("workspaces", "ls_cmd"), "stop": ("workspaces", "stop"),
    "start": ("workspaces", "start"), "restart": ("workspaces", "restart"), "rm": ("workspaces", "rm"),
    "logs": ("workspaces", "logs"), "exec": ("workspaces", "exec_cmd"), "ssh": ("workspaces", "ssh"),
    "ssh-config": ("workspaces", "ssh_config"), "open": ("workspaces", "open_cmd"), "token": ("workspaces", "token"),
    "run": ("jobs", "run"), "jobs": ("jobs", "jobs_cmd"), "wait": ("jobs", "wait"), "cancel": ("jobs", "cancel"),
    "runs": ("runs", "runs"), "reproduce": ("runs", "reproduce"), "gc": ("runs", "gc"),
    "models": ("models", "models"), "serve": ("deployments", "serve"), "deployments": ("deployments", "deployments"),
    "pipeline": ("pipelines", "pipeline"), "hooks": ("pipelines", "hooks"),
    "server": ("server", "server"), "users": ("users", "users"), "tokens": ("users", "tokens"),
    "service": ("server", "service"),
}


def command_of(name: str) -> click.Command | None:
    found = COMMANDS.get(name)
    if found is None:
        return None
    module, attribute = found
    __import__(f"dlbox.cli.{module}")  # not importlib.import_module: `python -X importtime` sees this one
    return getattr(sys.modules[f"dlbox.cli.{module}"], attribute)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return command_of(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def __getattr__(name: str):
    if name == "run":  # tests read click's `run` options against cli/submit.py's table
        return command_of("run")
    raise AttributeError(name)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except BaseException as exc:  # noqa: BLE001 - report() lets SystemExit through
        report(exc)
