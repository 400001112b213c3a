"""Secret-looking params and URL credentials never show in records, diffs or exports."""

from __future__ import annotations

import pytest

from dlbox import redact
from dlbox.runs import diff as rundiff


@pytest.mark.parametrize("name", ["DB_PASSWORD", "db_pass", "passwd", "API_KEY", "apikey", "ssh_key_file",
                                  "HF_TOKEN", "github_token", "AWS_SECRET_ACCESS_KEY", "client_secret",
                                  "GOOGLE_APPLICATION_CREDENTIALS", "credential", "PRIVATE_PEM", "Api_Key"])
def test_secret_looking_names_are_hidden_whole(name):
    assert redact.mapping({name: "hunter2-https://a:b@c", "epochs": "10"}) == {name: "***", "epochs": "10"}


@pytest.mark.parametrize("value, shown", [
    ("postgresql://u:PW@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg://admin:p@ss:w0rd@db.example:5432/x?sslmode=require",
     "postgresql+psycopg://admin:***@db.example:5432/x?sslmode=require"),
    ("https://ghp_abc123@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("--url=https://user:pw@host/a and s3://k:s@bucket", "--url=https://user:***@host/a and s3://k:***@bucket"),
    ("jdbc:mysql://root:toor@10.0.0.1/db", "jdbc:mysql://root:***@10.0.0.1/db"),
    ("https://host/path?email=a@b.c", "https://host/path?email=a@b.c"),
    ("alice@example.com", "alice@example.com"),
    ("https://host:8080/x", "https://host:8080/x"),
    ("10", "10"),
])
def test_credentials_in_urls_are_hidden_in_any_value(value, shown):
    assert redact.text(value) == shown
    assert redact.mapping({"DATABASE_URL": value}) == {"DATABASE_URL": shown}
    assert redact.words(["python", value]) == ["python", shown]


def test_values_that_are_not_text_are_left_as_they_are():
    assert redact.mapping(None) == {} and redact.words(None) == []
    assert redact.mapping({"n": 3}) == {"n": 3}


def test_a_diff_never_shows_a_secret_even_of_an_unredacted_record():
    def record(run_id, **params):
        return {"id": run_id, "command": ["train", f"--db=pg://u:{run_id}pw@h/d"], "params": params}

    a = record("a", API_KEY="key-of-a", lr="0.1", DATABASE_URL="pg://u:apw@h/d")
    b = record("b", API_KEY="key-of-b", lr="0.2", DATABASE_URL="pg://u:bpw@h/d", HF_TOKEN="tok-of-b")
    result = rundiff.diff(a, b)
    text = repr(result)
    for secret in ("key-of-a", "key-of-b", "apw", "bpw", "tok-of-b"):
        assert secret not in text
    assert {c["name"] for c in result["params"]} == {"lr", "HF_TOKEN"}  # hidden values look alike
    assert result["command"] == []


def test_reproduce_refuses_a_run_whose_secrets_were_held_back():
    from dlbox.runs import reproduce as reproduction
    from dlbox.errors import DlboxError

    record = {"id": "abc", "params": {"DB_PASSWORD": "***", "lr": "0.1"}, "command": ["train"]}
    with pytest.raises(DlboxError, match=r"run abc: its secrets are not kept \(DB_PASSWORD\)"):
        reproduction.request_for(record, progress=None)
    record = {"id": "abc", "params": {}, "command": ["train", "--db=pg://u:***@h/d"]}
    with pytest.raises(DlboxError, match="its secrets are not kept"):
        reproduction.request_for(record, progress=None)


def test_an_mlflow_export_sends_no_secret():
    """A real HTTP exchange with a small stand-in tracking server that keeps every body it gets."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from dlbox.runs import mlflow_export

    bodies = []

    class Tracking(BaseHTTPRequestHandler):
        def _answer(self, data: dict) -> None:
            raw = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            bodies.append(self.path)
            self._answer({"experiment": {"experiment_id": "1"}})

        def do_POST(self):
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self._answer({"run": {"info": {"run_id": "r1"}}})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tracking)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    record = {"id": "abc", "name": None, "user": "alice", "state": "succeeded", "image": "i", "image_id": "sha256:x",
              "command": ["train", "--db", "postgresql://u:cmd-secret@h/d"], "submitted_at": "2026-01-01T00:00:00Z",
              "params": {"API_KEY": "key-secret", "DATABASE_URL": "postgresql://u:url-secret@h/d", "lr": "0.1"},
              "metric_history": [{"name": "loss", "value": 0.5, "step": 1}]}
    try:
        mlflow_export.export(record, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    sent = "\n".join(bodies)
    assert '"lr"' in sent and "postgresql://u:***@h/d" in sent
    for secret in ("cmd-secret", "key-secret", "url-secret"):
        assert secret not in sent
