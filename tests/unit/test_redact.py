"""Secret-looking params and URL credentials never show in records, diffs or exports."""

from __future__ import annotations

import pytest

from dlbox import redact, rundiff


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


def test_hidden_names_what_a_record_cannot_show():
    assert redact.hidden({"DB_PASSWORD": "x", "DATABASE_URL": "pg://u:p@h/d", "lr": "0.1"}) == \
        ["DATABASE_URL", "DB_PASSWORD"]
    assert redact.mapping(None) == {} and redact.words(None) == []
    assert redact.mapping({"n": 3}) == {"n": 3}  # not text: left as it is


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
