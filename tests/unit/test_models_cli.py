"""`dlbox models` end to end in-process: the CLI, its backend, the API and the registry (the
signature helper faked at the engine's edge)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dlbox.cli import client
from dlbox.cli.main import cli, main

from test_models_api import api  # noqa: F401  (the fixture)


@pytest.fixture
def dlbox(api, monkeypatch):  # noqa: F811
    http, tokens = api
    monkeypatch.setenv("DLBOX_URL", "http://dlbox.invalid:8700")

    def call(method, path, *, json=None, params=None):
        answer = http.request(method, path, json=json, params=params, headers=tokens["ann"])
        return client._result(answer.status_code, answer.content)

    monkeypatch.setattr(client, "call", call)

    def run(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=True, standalone_mode=False)

    return run


def test_register_show_alias_history(dlbox):
    made = dlbox("models", "register", "digits", "--run", "a1b2c3d4e5f6")
    assert made.exception is None and made.output.startswith("model digits:1 registered from run a1b2c3d4e5f6")
    dlbox("models", "register", "digits", "--run", "a1b2c3d4e5f6")
    assert "alias digits@champion -> version 1 (new)" in dlbox("models", "alias", "digits", "champion", "1").output
    assert "(was 1)" in dlbox("models", "alias", "digits", "champion", "2").output
    shown = json.loads(dlbox("models", "show", "digits@champion", "--json").output)
    assert shown["version"] == 2 and shown["aliases"] == ["champion"]
    text = dlbox("models", "show", "digits:1").output
    assert "signature serving_default" in text and "input  x: DT_FLOAT [-1, 3]" in text
    listed = json.loads(dlbox("models", "ls", "--json").output)
    assert [(m["name"], m["latest"], m["aliases"]) for m in listed] == [("digits", 2, {"champion": 2})]
    history = dlbox("models", "history", "digits").output.splitlines()
    assert len(history) == 3 and "champion" in history[2] and "1 -> 2" in history[2]
    assert "deleted" in dlbox("models", "alias", "digits", "champion", "--delete").output


@pytest.mark.parametrize(("args", "code", "words"), [
    (["models", "register", "digits", "--run", "a1b2c3d4e5f6", "--path", "plain"], 1, "no SavedModel"),
    (["models", "register", "digits", "--run", "ffffffffffff"], 1, "no run"),
    (["models", "show", "digits:x"], 2, "not valid"),
    (["models", "show", "nothere"], 1, "no model 'nothere'"),
    (["models", "alias", "digits", "champion"], 2, "give a VERSION"),
])
def test_bad_input_is_one_line_and_its_exit_code(dlbox, args, code, words, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["dlbox", *args])
    with pytest.raises(SystemExit) as ended:
        main()
    err = capsys.readouterr().err
    assert ended.value.code == code and words in err and err.count("\n") == 1


def test_the_text_lists_of_models_and_runs(dlbox):
    """`models`, `models ls`, `models history` and `runs` print through output.table: a header, one line a
    row, and the --limit hint on stderr when the page is full."""
    dlbox("models", "register", "digits", "--run", "a1b2c3d4e5f6")
    dlbox("models", "alias", "digits", "champion", "1")
    header = f"{'MODEL':<32} {'OWNER':<12} {'LATEST':<7} {'VERSIONS':<9} ALIASES"
    row = f"{'digits':<32} {'ann':<12} {'1':<7} {1:<9} champion=1"
    assert dlbox("models").output.splitlines() == dlbox("models", "ls").output.splitlines() == [header, row]
    moves = dlbox("models", "history", "digits").output.splitlines()
    assert moves[0] == f"{'WHEN':<25} {'WHO':<12} {'ALIAS':<16} FROM -> TO"
    assert moves[1].split()[1:] == ["ann", "champion", "-", "->", "1"]
    runs = dlbox("runs").output.splitlines()
    assert runs[0] == f"{'ID':<13} {'STATE':<11} {'EXIT':<5} {'IMAGE':<19} {'LOCK':<12} {'GIT':<9} METRICS"
    listed = json.loads(dlbox("runs", "--json").output)
    assert len(runs) == 1 + len(listed) and runs[1].split()[:2] == [listed[-1]["id"], listed[-1]["state"]]
    one = dlbox("runs", "--limit", "1")
    assert one.stderr == "(rows 1-1 shown; --offset 1 for the next page)\n" and len(one.stdout.splitlines()) == 2
