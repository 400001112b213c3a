"""One error model: every code in the table with its status and exit code; the engine's and the
database's failures translated at their boundary; the API answering each in one shape.

The engine errors are the Docker SDK's own exception classes (docker.errors.NotFound, APIError)
built over a requests.Response of a chosen status, as the SDK builds them; the database errors are
SQLAlchemy's, raised by a real engine over a file that cannot be opened.
"""

from __future__ import annotations

import re
from pathlib import Path

import docker.errors
import pytest
import requests
from fastapi.testclient import TestClient

from dlbox import errors
from dlbox.engine import api as engine
from dlbox.errors import CODES, DlboxError, Forbidden, NotFound, Unauthorized, UsageError
from dlbox.store.db import Store

SRC = Path(__file__).resolve().parents[2] / "src" / "dlbox"


# --- the table ------------------------------------------------------------------------------------


def codes_in_src() -> dict[str, list[str]]:
    """Every error code written as a literal in src: `code="..."`, and bodylimit's refuse(send, N, "...")."""
    found: dict[str, list[str]] = {}
    patterns = [re.compile(r"""\bcode\s*=\s*["']([a-z_]+)["']"""),
                re.compile(r"""refuse\(send,\s*\d+,\s*["']([a-z_]+)["']"""),
                re.compile(r"""["']code["']\s*:\s*["']([a-z_]+)["']""")]
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for pattern in patterns:
            for code in pattern.findall(text):
                found.setdefault(code, []).append(str(path.relative_to(SRC)))
    return found


def test_every_code_written_in_src_is_in_the_table():
    found = codes_in_src()
    assert len(found) >= 20, found  # the scan sees the codes (a broken pattern would pass anything)
    missing = {code: where for code, where in found.items() if code not in CODES}
    assert not missing, f"codes used in src but not in dlbox.errors.CODES: {missing}"


def test_an_unknown_code_cannot_be_raised():
    with pytest.raises(ValueError, match="unknown dlbox error code 'no_such_code'"):
        DlboxError("x", code="no_such_code")
    with pytest.raises(ValueError):
        Forbidden("x", code="forbiden")
    # codes from elsewhere (a newer server's answer) are checked, not trusted
    assert errors.known("no_such_code") == "failed" and errors.known("gpu_busy") == "gpu_busy"
    assert errors.known(None, "invalid") == "invalid"
    assert errors.status_of("no_such_code") == 500


def test_the_table_follows_the_rule():
    for code, row in CODES.items():
        assert 400 <= row.status < 600, code
        assert row.exit == (2 if code == "invalid" else 1), code  # 2 only for a malformed request
        assert row.meaning, code
    engine_or_store = {"engine_error": 502, "engine_unavailable": 503, "store_unavailable": 503, "no_network": 503}
    assert {code: CODES[code].status for code in engine_or_store} == engine_or_store
    assert CODES["failed"].status == CODES["internal"].status == 500


@pytest.mark.parametrize("error, status, exit_code", [
    (UsageError("--cpus: not a number"), 400, 2),
    (Unauthorized(), 401, 1),
    (Forbidden("only an admin"), 403, 1),
    (Forbidden("--mount: no", code="mount_refused"), 403, 1),
    (DlboxError("over quota", code="quota_exceeded"), 403, 1),
    (NotFound("no job"), 404, 1),
    (DlboxError("taken", code="exists"), 409, 1),
    (engine.PortInUse("0.0.0.0:8888"), 409, 1),
    (engine.BuildFailed("pip failed", []), 422, 1),
    (DlboxError("too many", code="too_many_followers"), 429, 1),
    (DlboxError("something broke"), 500, 1),
    (errors.EngineError("the engine said no"), 502, 1),
    (engine.unreachable(), 503, 1),
    (errors.StoreUnavailable("the database failed"), 503, 1),
])
def test_each_kind_of_error_has_its_status_and_exit_code(error, status, exit_code):
    from dlbox.server import errors as http_errors

    assert (error.status, error.exit_code) == (status, exit_code)
    answer = http_errors.error_response(error)
    assert answer.status_code == status and http_errors.STATUS[error.code] == status


# --- the engine translator, given the SDK's own exceptions -------------------------------------------


def response(status: int, body: bytes = b"") -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = body
    answer.url = "http+docker://localhost/v1.45/containers/x/json"
    return answer


@pytest.mark.parametrize("status, code", [(400, "invalid"), (404, "not_found"), (409, "engine_conflict"),
                                          (500, "engine_error"), (503, "engine_error"), (401, "engine_error")])
def test_engine_api_errors_take_the_code_of_their_status(status, code):
    exc = docker.errors.APIError("request failed", response=response(status), explanation="the engine's words")
    got = engine.translate(exc, "cannot start the container")
    assert isinstance(got, DlboxError) and got.code == code
    assert got.message == "cannot start the container: the engine's words"


def test_the_sdks_not_found_classes_become_not_found():
    for cls in (docker.errors.NotFound, docker.errors.ImageNotFound):
        got = engine.translate(cls("x", response=response(404), explanation="No such image: x"), "cannot tag")
        assert isinstance(got, NotFound) and got.status == 404 and got.message == "cannot tag: No such image: x"


def test_an_unreachable_engine_is_503():
    for exc in (requests.exceptions.ConnectionError("Connection aborted: FileNotFoundError(2)"),
                requests.exceptions.ReadTimeout("read timed out"), ConnectionRefusedError(111, "refused")):
        got = engine.translate(exc, "cannot stop the container")
        assert got.code == "engine_unavailable" and got.status == 503, exc
        assert got.message.startswith("no Docker Engine answers at ")
    other = engine.translate(docker.errors.DockerException("Error while fetching server API version"), "x")
    assert other.code == "engine_error"


def test_engine_messages_stay_one_line_and_short():
    long = "line one\nline two\r\n" + "x" * 5000
    got = engine.translate(docker.errors.APIError("e", response=response(500), explanation=long.encode()), "w")
    assert "\n" not in got.message and "\r" not in got.message
    assert got.message.startswith("w: line one line two") and len(got.message) < engine.MESSAGE_CHARS + 20


def test_other_exceptions_pass_the_translator_unchanged():
    bug = KeyError("Id")
    assert engine.translate(bug, "x") is bug
    with pytest.raises(KeyError):
        with engine.translated("x"):
            raise bug
    with pytest.raises(NotFound):  # dlbox errors go through as they are
        with engine.translated("x"):
            raise NotFound("no container")


class RaisingApi:
    """Stands in for the SDK's APIClient: every call raises `exc` (an SDK exception, built as the SDK does)."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise self.exc
        return call


class RaisingClient:
    def __init__(self, exc: Exception):
        self.api = RaisingApi(exc)


@pytest.mark.parametrize("call", [
    lambda: engine.tag("sha256:abc", "repo", "t"),
    lambda: engine.stop("c"),
    lambda: engine.restart("c"),
    lambda: list(engine.logs("c")),
    lambda: engine.set_restart_policy("c", {"Name": "no"}),
    lambda: engine.list_images(),
    lambda: engine.capacity(),
    lambda: engine.container_summaries(["dlbox.managed=true"]),
    lambda: engine.put_files("c", [("/etc/x", b"x", 0o644, 0)]),
    lambda: engine.exec_stream("c", ["true"]),
    lambda: engine.remove_volume("v"),
    lambda: engine.ensure_volume("v", {}),
])
def test_every_engine_function_translates(monkeypatch, call):
    failing = docker.errors.APIError("boom", response=response(500), explanation="engine is on fire")
    monkeypatch.setattr(engine, "client", lambda: RaisingClient(failing))
    with pytest.raises(DlboxError) as caught:
        call()
    assert caught.value.code == "engine_error" and caught.value.message.endswith(": engine is on fire")
    gone = requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file'))")
    monkeypatch.setattr(engine, "client", lambda: RaisingClient(gone))
    with pytest.raises(DlboxError) as caught:
        call()
    assert caught.value.code == "engine_unavailable"


# --- the API ---------------------------------------------------------------------------------------


@pytest.fixture
def service(tmp_path, app_of):
    store = Store(f"sqlite:///{tmp_path}/t.db")
    app = app_of(store)
    return app, store, TestClient(app, raise_server_exceptions=False)


def one_shape(answer) -> dict:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "\n" not in body["error"]["message"]
    return body["error"]


def test_an_unreachable_engine_answers_503(service, no_engine):
    """The real SDK against a socket nobody listens on."""
    _, _, client = service
    answer = client.get("/api/images")
    assert answer.status_code == 503, answer.text
    error = one_shape(answer)
    assert error["code"] == "engine_unavailable" and no_engine in error["message"]


def test_an_engine_failure_answers_502(service, monkeypatch):
    _, _, client = service
    failing = docker.errors.APIError("boom", response=response(500), explanation="layer store broke")
    monkeypatch.setattr(engine, "client", lambda: RaisingClient(failing))
    answer = client.get("/api/images")
    assert answer.status_code == 502, answer.text
    assert one_shape(answer) == {"code": "engine_error", "message": "cannot list images: layer store broke"}


def test_a_database_failure_answers_503_without_the_sql(service, tmp_path):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    _, store, client = service
    broken = create_engine(f"sqlite:///{tmp_path}/no/such/dir/t.db")  # SQLAlchemy's OperationalError at connect
    store.sessions = sessionmaker(broken, expire_on_commit=False)
    answer = client.get("/api/jobs")
    assert answer.status_code == 503, answer.text
    error = one_shape(answer)
    assert error["code"] == "store_unavailable" and "OperationalError" in error["message"]
    assert "SELECT" not in error["message"] and "sqlalche.me" not in error["message"]


def test_an_unknown_dlbox_error_answers_500_not_409(service):
    app, _, client = service

    class Unforeseen(DlboxError):  # a subclass nobody gave a code
        pass

    @app.get("/api/test-unforeseen")
    def unforeseen():
        raise Unforeseen("the thing broke")

    @app.get("/api/test-bug")
    def bug():
        raise RuntimeError("secret=hunter2\nsecond line")

    answer = client.get("/api/test-unforeseen")
    assert answer.status_code == 500 and one_shape(answer) == {"code": "failed", "message": "the thing broke"}
    answer = client.get("/api/test-bug")
    assert answer.status_code == 500
    error = one_shape(answer)
    assert error["code"] == "internal" and "RuntimeError" in error["message"] and "hunter2" not in error["message"]


def test_the_dashboard_page_carries_the_same_status(tmp_path, monkeypatch, app_of):
    """An engine failure behind a page: the error page has the API's status (502), not 409."""
    from dlbox.server import accounts, deps

    store = Store(f"sqlite:///{tmp_path}/t.db")
    app = app_of(store, mode="server")
    accounts.add_user(store, "ann", admin=True)
    token = accounts.create_token(store, "ann")[1]
    client = TestClient(app, raise_server_exceptions=False)
    client.cookies.set(deps.COOKIE, deps.new_session(app.state.ctx, token))
    failing = docker.errors.APIError("boom", response=response(500), explanation="layer store broke")
    monkeypatch.setattr(engine, "client", lambda: RaisingClient(failing))
    answer = client.get("/images")
    assert answer.status_code == 502, answer.text
    assert "layer store broke" in answer.text


def test_the_architecture_docs_list_the_table_as_it_is():
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    rows = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \| (\d) \|", doc, re.M)}
    assert rows == {code: (row.status, row.exit) for code, row in CODES.items()}
