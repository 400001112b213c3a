"""`dlbox run`'s own argument reading (dlbox.submit.parse) against click's `run` command."""

import click
import pytest

from dlbox.cli import submit
from dlbox.cli.main import cli
from dlbox.cli.main import run as click_run


def by_click(argv):
    """click's reading of argv, in submit's keywords. click drops the `--`, so only forms whose
    words before it are all options can be compared."""
    parent = click.Context(cli, info_name="dlbox", **cli.context_settings)  # as under the group
    params = click_run.make_context("run", list(argv), parent=parent).params
    return {"preset": params["preset"], "image": params["image"], "workspace": params["workspace"],
            "name": params["name"], "mounts": list(params["mounts"]), "memory": params["memory"],
            "cpus": params["cpus"], "gpus": params["gpus"], "params": list(params["params"]),
            "as_json": params["as_json"], "code": params["code"], "no_code": params["no_code"], "spec": [],
            "command": list(params["args"])}


def test_the_table_is_clicks_options():
    options = {o.opts[0]: o for o in click_run.params if isinstance(o, click.Option) and o.opts[0] != "--help"}
    assert set(options) == set(submit.OPTIONS) | set(submit.FLAGS)
    for flag, name in submit.OPTIONS.items():
        assert options[flag].name == name and not options[flag].is_flag
        assert options[flag].multiple == (name in submit.REPEATABLE)
        assert isinstance(options[flag].type, click.types.FloatParamType) == (name == "cpus")
    for flag, name in submit.FLAGS.items():
        assert options[flag].name == name and options[flag].is_flag


@pytest.mark.parametrize("argv", [
    ["--image", "x", "--", "sleep", "3"],
    ["--image=x", "--json", "--", "python", "-c", "1", "--cpus", "3"],
    ["--image", "x", "--cpus", "0.5", "--memory", "1g", "--gpus", "all", "--name", "n", "--", "true"],
    ["--mount", "a:/b", "--mount=c:/d:ro", "--param", "lr=0.1", "--param", "seed=1", "--image", "x", "--", "t"],
    ["--image", "x", "--image", "y", "--", "a"],           # the last one counts
    ["--name", "-x", "--image", "i", "--", "true"],       # a value may start with a dash
    ["--", "a", "--", "b"],                                # only the first -- separates
    ["--image", "x", "--", "--json"],
    ["--cpus", "1e0", "--", "true"],
])
def test_reads_like_click(argv):
    assert submit.parse(argv) == by_click(argv)


def test_spec_before_the_separator():
    got = submit.parse(["dlbox.yaml", "--cpus", "2", "--", "python", "train.py", "--cpus", "3"])
    assert got["spec"] == ["dlbox.yaml"] and got["cpus"] == 2.0
    assert got["command"] == ["python", "train.py", "--cpus", "3"]
    got = submit.parse(["--name", "n", "a.yaml", "--json", "--mount=a:/b", "--cpus", "1", "--", "x"])
    assert got["spec"] == ["a.yaml"] and got["as_json"] and got["mounts"] == ["a:/b"] and got["command"] == ["x"]


@pytest.mark.parametrize("argv, command", [
    (["--image", "x", "python", "--", "t.py"], ["python", "--", "t.py"]),        # CMD's own `--`
    (["--image", "x", "git", "diff", "--", "f"], ["git", "diff", "--", "f"]),
    (["--image", "x", "torchrun", "--nproc", "2", "--", "train.py"], ["torchrun", "--nproc", "2", "--", "train.py"]),
])
def test_a_separator_inside_the_command_is_the_commands(argv, command):
    got = submit.parse(argv)
    assert got["spec"] == [] and got["image"] == "x" and got["command"] == command


def test_without_separator_the_command_starts_at_the_first_word():
    got = submit.parse(["--image", "x", "python", "-u", "train.py", "--name", "keep"])
    assert got["image"] == "x" and got["name"] is None and got["spec"] == []
    assert got["command"] == ["python", "-u", "train.py", "--name", "keep"]
    assert submit.parse(["--image", "x"])["command"] == []  # submit() says: usage


@pytest.mark.parametrize("argv", [
    ["--help"], ["-h", "--image", "x", "--", "t"], ["--image", "x", "--help", "--", "t"],
    ["--imag", "x", "--", "t"], ["-i", "x", "--", "t"], ["--cpus", "two", "--", "t"], ["--json=1", "--", "t"],
    ["--image"], ["--image", "--", "t"],
])
def test_leaves_help_and_mistakes_to_click(argv, capsys):
    """click shows the help or refuses (its run body refuses what its parser lets through)."""
    assert submit.parse(argv) is None
    if any(word in ("-h", "--help") for word in argv):
        assert cli.main(["run", *argv], prog_name="dlbox", standalone_mode=False) == 0
        assert "Submit CMD as a detached job" in capsys.readouterr().out
        return
    with pytest.raises((click.UsageError, submit.UsageError)):
        cli.main(["run", *argv], prog_name="dlbox", standalone_mode=False)


def test_submit_refuses_before_any_request():
    with pytest.raises(submit.UsageError, match="usage: dlbox run"):
        submit.submit(spec=["a.yaml", "b.yaml"], command=["x"])
    with pytest.raises(submit.UsageError, match="usage: dlbox run"):
        submit.submit(spec=[], command=[], image="x")
    with pytest.raises(submit.UsageError, match="--param: 'novalue' is not KEY=VALUE"):
        submit.parse_params(["novalue"])
