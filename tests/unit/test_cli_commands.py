"""The CLI's lazily loaded commands: the table names each command as the command names itself, and
a command's module is imported only when that command runs."""

from __future__ import annotations

import subprocess
import sys

from dlbox.cli import main


def test_the_table_names_every_command_as_it_names_itself():
    for name in main.COMMANDS:
        assert main.command_of(name).name == name
    assert main.command_of("nope") is None


def test_a_command_loads_only_its_own_module():
    code = ("import sys; from click.testing import CliRunner; from dlbox.cli.main import cli; "
            "CliRunner().invoke(cli, ['up', '--help'], catch_exceptions=False); "
            "print(sorted(m for m in sys.modules if m.startswith('dlbox.cli.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'dlbox.cli.workspaces'" in loaded
    for other in ("images", "jobs", "models", "deployments", "pipelines", "runs", "server", "supply", "users"):
        assert f"'dlbox.cli.{other}'" not in loaded, loaded
