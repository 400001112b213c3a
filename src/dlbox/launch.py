"""The `dlbox` command's entry point: `dlbox run` submits before click loads (see dlbox.cli.submit);
every other command, and any `run` that needs help or an error message, goes to dlbox.cli.main."""

from __future__ import annotations

import sys


def main() -> None:
    words = sys.argv[1:]
    keywords = None
    if words[:1] == ["run"]:
        from dlbox.cli import submit

        keywords = submit.parse(words[1:])
    if keywords is None:
        from dlbox.cli import main as cli

        cli.main()
        return
    try:
        submit.submit(**keywords)
    except BaseException as exc:  # noqa: BLE001 - reported as every other command's are
        from dlbox.cli import main as cli

        cli.report(exc)
