"""Command-line behaviour that needs (or misses) an engine."""


def test_missing_engine_is_one_line_naming_where_it_looked(dlbox, tmp_path):
    sock = f"unix://{tmp_path}/nothing.sock"
    for command in (["images"], ["build", "--preset", "scikit-learn"], ["verify", "x"]):
        result = dlbox(*command, check=False, extra_env={"DOCKER_HOST": sock})
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: no Docker Engine answers at {sock}")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_images_json_is_a_list(dlbox):
    rows = dlbox.json("images")
    assert isinstance(rows, list)
    for row in rows:
        assert {"ref", "id", "lock_hash", "size", "created"} <= set(row)
