"""cli/output.answers: the one body of a command that asks the backend and prints its answer."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from dlbox.cli import backend as backends
from dlbox.cli.output import answers, page_options, table


class Backend:
    """Stands in for the backend (not what is tested here): answers `listing` with the rows it was given."""

    def __init__(self, rows):
        self.rows = rows

    def listing(self, limit, offset):
        return self.rows[offset:offset + limit]


@click.command()
@page_options(default=2)
@answers(table("NAME", lambda row: row["name"], empty="none yet"), ok=lambda rows: bool(rows))
def listing(backend, limit, offset):
    """List."""
    return backend.listing(limit, offset)


@pytest.mark.parametrize("rows, exit_code, text", [
    ([{"name": "a"}], 0, "NAME\na\n"),
    ([{"name": "a"}, {"name": "b"}, {"name": "c"}], 0, "(rows 1-2 shown; --offset 2 for the next page)\nNAME\na\nb\n"),
    ([], 1, "none yet\n"),
])
def test_an_answer_is_printed_as_text_or_json_and_ok_decides_the_exit(monkeypatch, rows, exit_code, text):
    monkeypatch.setattr(backends, "backend", lambda: Backend(rows))
    shown = CliRunner().invoke(listing, [])
    assert (shown.exit_code, shown.output) == (exit_code, text)
    as_json = CliRunner().invoke(listing, ["--json"])
    assert as_json.exit_code == exit_code and json.loads(as_json.output) == rows[:2]


def test_the_json_flag_is_the_commands_last_option_and_the_docstring_its_help():
    assert [p.name for p in listing.params] == ["limit", "offset", "as_json"]
    assert listing.help == "List."
