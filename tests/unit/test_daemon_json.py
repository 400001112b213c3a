"""scripts/host-setup.sh daemon-config: dockerd's log rotation and live-restore merged into daemon.json,
run as the script runs it, on temporary files (never the real /etc/docker/daemon.json)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def configure(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "host-setup.sh"), "daemon-config", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_a_missing_file_gets_rotation_and_live_restore(tmp_path):
    path = tmp_path / "docker" / "daemon.json"
    result = configure(path)
    assert result.returncode == 0, result.stderr
    assert json.loads(path.read_text()) == {"log-driver": "json-file", "log-opts": {"max-size": "50m", "max-file": "5"},
                                            "live-restore": True}
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_admins_settings_are_kept_and_only_missing_ones_added(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"data-root": "/srv/docker", "log-opts": {"max-size": "10m"}, "live-restore": False}))
    assert configure(path).returncode == 0
    assert json.loads(path.read_text()) == {"data-root": "/srv/docker", "log-driver": "json-file",
                                            "log-opts": {"max-size": "10m", "max-file": "5"}, "live-restore": False}


def test_a_second_run_changes_nothing(tmp_path):
    path = tmp_path / "daemon.json"
    configure(path)
    before = path.stat().st_mtime_ns, path.read_text()
    again = configure(path)
    assert again.returncode == 0 and again.stderr == ""
    assert (path.stat().st_mtime_ns, path.read_text()) == before


def test_another_log_driver_gets_no_json_file_options(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text('{"log-driver": "journald"}')
    configure(path)
    assert json.loads(path.read_text()) == {"log-driver": "journald", "live-restore": True}


def test_a_broken_file_is_left_alone_with_a_clear_error(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text('{"log-driver": ')
    result = configure(path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path} is not valid JSON") and "Traceback" not in result.stderr
    assert path.read_text() == '{"log-driver": '
