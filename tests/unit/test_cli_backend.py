"""The CLI behind one backend: commands make their call through cli/backend.py and never ask
where they run; the local and the remote backend are one interface."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlbox.cli import backend as backends
from dlbox.cli import client
from dlbox.cli.main import cli

CLI = Path(backends.__file__).parent


def public(cls) -> dict:
    return {name: fn for name, fn in vars(cls).items() if callable(fn) and not name.startswith("_")}


def test_local_backend_keeps_the_service_backends_interface():
    service = public(backends.ServiceBackend)
    for name, fn in public(backends.LocalBackend).items():
        assert name in service, f"LocalBackend.{name} is not part of the interface"
        assert list(inspect.signature(fn).parameters) == list(inspect.signature(service[name]).parameters), name


def test_commands_do_not_choose_where_they_run():
    for path in CLI.glob("*.py"):
        if path.name in ("backend.py", "client.py"):
            continue
        text = path.read_text()
        for word in ("remote_url", "client.call", "client.stream", "on_server", "local_only"):
            assert word not in text, f"{path.name} uses {word}: go through cli/backend.py"


@pytest.fixture
def server(monkeypatch):
    """DLBOX_URL set and the HTTP calls answered here: (method, path, kwargs) recorded."""
    calls, answers = [], {}
    monkeypatch.setenv("DLBOX_URL", "http://dlbox.invalid:8700")
    monkeypatch.setenv("DLBOX_TOKEN", "dlb_test")

    def call(method, path, **kwargs):
        calls.append((method, path, kwargs))
        return answers[(method, path)]

    monkeypatch.setattr(client, "call", call)
    return calls, answers


def test_a_command_is_one_backend_call_and_a_printer(server):
    calls, answers = server
    answers[("DELETE", "/api/images/dlbox/x:1")] = {"removed": "dlbox/x:1", "id": "sha256:ab"}
    answers[("GET", "/api/users")] = [{"name": "alice", "role": "user", "created_at": "2026-01-01T00:00:00Z",
                                       "quota": {"cpus": 4}}]
    runner = CliRunner()
    result = runner.invoke(cli, ["rmi", "dlbox/x:1", "--force"])
    assert result.exit_code == 0 and result.output == "removed dlbox/x:1\n"
    result = runner.invoke(cli, ["users", "ls"])
    assert result.exit_code == 0 and "alice" in result.output and "cpus=4" in result.output
    assert calls == [("DELETE", "/api/images/dlbox/x:1", {"params": {"force": True}}),
                     ("GET", "/api/users", {"params": {"limit": 100, "offset": 0}})]


def test_engine_only_commands_say_so_against_a_server(server):
    calls, _ = server
    result = CliRunner().invoke(cli, ["exec", "w", "--", "ls"], standalone_mode=False)
    assert "exec works on the engine's own machine only" in str(result.exception)
    assert calls == []


def test_scan_sbom_and_inspect_through_the_server(server, tmp_path, monkeypatch):
    from dlbox.supply import scan

    monkeypatch.setenv("DLBOX_CACHE_DIR", str(tmp_path))
    calls, answers = server
    advisories = Path(__file__).resolve().parent.parent / "data" / "advisories" / "osv"
    result = scan.scan_facts({"image": "dlbox/x:1", "id": "sha256:" + "ab" * 32, "python": [("protobuf", "3.19.6")],
                              "os": []}, advisories=str(advisories), fail_on="high")
    answers[("POST", "/api/images/dlbox/x:1/scan")] = result
    answers[("GET", "/api/images/dlbox/x:1/sbom")] = {"format": "cyclonedx-xml", "document": "<bom/>"}
    lock = {"base": {"ref": "b", "rootfs_sha256": None}, "python": {"version": "3.9.2", "packages": []},
            "os": {"packages": []}}
    answers[("GET", "/api/images/dlbox/x:1")] = {
        "ref": "dlbox/x:1", "id": result["id"], "lock_hash": "l", "spec_hash": "s", "git_commit": None,
        "created": "c", "size": 1, "lock": lock, "scan": scan.summary(result)}
    runner = CliRunner()
    scanned = runner.invoke(cli, ["scan", "dlbox/x:1", "--fail-on", "high"])
    assert scanned.exit_code == 1 and "GHSA-8qvm-5x2c-j2w7" in scanned.output
    assert "fail-on     high: 2 at or above" in scanned.output
    bom = runner.invoke(cli, ["sbom", "dlbox/x:1", "--format", "cyclonedx-xml"])
    assert bom.exit_code == 0 and bom.output == "<bom/>\n"
    shown = runner.invoke(cli, ["inspect", "dlbox/x:1"])
    assert shown.exit_code == 0 and "2 advisories (2 high)" in shown.output
    assert calls == [("POST", "/api/images/dlbox/x:1/scan", {"json": {"advisories": None, "fail_on": "high"}}),
                     ("GET", "/api/images/dlbox/x:1/sbom", {"params": {"format": "cyclonedx-xml"}}),
                     ("GET", "/api/images/dlbox/x:1", {})]


def test_verify_workspace_lists_the_users_packages_and_exits_1(server):
    calls, answers = server
    answers[("GET", "/api/workspaces/w/verify")] = {
        "ok": False, "workspace": "w", "image": "dlbox/x:1", "lock_hash": "ab" * 32, "dir": "/home/dl/.local/lib",
        "packages": [{"name": "tinypkg", "version": "0.1", "locked": None}]}
    result = CliRunner().invoke(cli, ["verify", "--workspace", "w"])
    assert result.exit_code == 1 and "1 packages installed beyond" in result.output
    assert "tinypkg==0.1" in result.output
    assert calls == [("GET", "/api/workspaces/w/verify", {})]


@pytest.mark.parametrize("args", [["verify"], ["verify", "dlbox/x:1", "--workspace", "w"]])
def test_verify_takes_an_image_or_a_workspace(server, args):
    calls, _ = server
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "give IMAGE or --workspace NAME" in result.output and calls == []


@pytest.mark.parametrize("args", [["up", "w", "--idle-stop", "soon"], ["server", "--idle-stop", "2x"]])
def test_a_bad_idle_stop_is_one_usage_line_before_anything_is_asked(server, args):
    from dlbox.errors import UsageError

    calls, _ = server
    result = CliRunner().invoke(cli, args)  # dlbox's main prints it as one `error:` line, exit 2 (code invalid)
    assert isinstance(result.exception, UsageError) and str(result.exception).startswith("--idle-stop: '")
    assert "\n" not in str(result.exception) and result.exception.code == "invalid" and calls == []


def test_up_sends_the_idle_stop_in_seconds(server):
    calls, answers = server
    answers[("POST", "/api/workspaces")] = {"name": "w", "state": "running", "jupyter": None, "ssh": None}
    CliRunner().invoke(cli, ["up", "w", "--preset", "tensorflow-2.9", "--idle-stop", "30m"])
    assert calls and calls[0][0:2] == ("POST", "/api/workspaces") and calls[0][2]["json"]["idle_stop"] == 1800
