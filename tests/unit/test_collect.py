"""Collecting a job's outputs from a folder the job controls: links, FIFOs, bad lines and caps."""

from __future__ import annotations

import json
import os
import threading

import pytest

from dlbox.jobs import collect

LIMITS = collect.Limits()


@pytest.fixture
def job_dir(tmp_path):
    directory = tmp_path / "job"
    (directory / "artifacts").mkdir(parents=True)
    return directory


def test_log_is_capped_with_a_marker_and_the_stream_is_not_read_past_the_cap(tmp_path):
    pulled = []

    def chunks():
        for i in range(1000):  # 1000 MB on offer; only what fits the cap is ever asked for
            pulled.append(i)
            yield b"x" * (1 << 20)

    notes = collect.Notes()
    written = collect.save_log(chunks(), tmp_path, 3 * 1024**2 + 5, notes)
    data = (tmp_path / "output.log").read_bytes()
    assert written == 3 * 1024**2 + 5
    assert data.startswith(b"x" * written) and data.endswith(b"[dlbox: log truncated at 3145733]\n")
    assert len(pulled) == 4
    assert notes.as_list() == ["log: truncated at 3145733 (the log limit)"]


def test_log_is_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("ORIGINAL")
    record = tmp_path / "record"
    record.mkdir()
    (record / "output.log").symlink_to(victim)
    with pytest.raises(OSError):
        collect.save_log(iter([b"PWNED-LINE\n"]), record, 1024, collect.Notes())
    assert victim.read_text() == "ORIGINAL"


@pytest.mark.parametrize("line, problem", [
    (b'{"name": "loss", "value": NaN, "step": 1}', "not JSON"),
    (b'{"name": "loss", "value": Infinity, "step": 1}', "not JSON"),
    (b'{"name": "loss", "value": -Infinity}', "not JSON"),
    (b'{"name": "loss", "value": 1e999}', "value is not finite"),
    (b'{"name": "loss", "value": 1, "step": 18446744073709551616}', "step is outside the 64-bit range"),
    (b'{"name": "loss", "value": 1, "step": [1, 2]}', "step must be an integer or null"),
    (b'{"name": "loss", "value": 1, "step": "3"}', "step must be an integer or null"),
    (b'{"name": "loss", "value": 1, "step": 1.5}', "step must be an integer or null"),
    (b'{"name": "loss", "value": true}', "value must be a number"),
    (b'{"name": "loss", "value": "0.3"}', "value must be a number"),
    (b'{"name": "\xff\xfe", "value": 1}', "not UTF-8"),
    (b'{"name": "' + b"n" * 200 + b'", "value": 1}', "name must be a string"),
    (b'[1, 2]', "not a JSON object"),
    (b'{"value": 1}', "name must be a string"),
])
def test_bad_metric_lines_are_named(line, problem):
    row, found = collect.parse_metric_line(line)
    assert row is None and found.startswith(problem)


def test_good_metric_lines_keep_64_bit_steps():
    assert collect.parse_metric_line(b'{"name": "loss", "value": 2, "step": 9223372036854775807}') == (
        {"step": 2**63 - 1, "name": "loss", "value": 2.0}, None)
    assert collect.parse_metric_line(b'{"name": "acc", "value": 0.5, "step": null, "time": 1}\n')[0] == {
        "step": None, "name": "acc", "value": 0.5}


def test_one_bad_line_is_skipped_and_the_rest_are_kept(job_dir):
    lines = [b'{"name": "loss", "value": 1.0, "step": 0}', b'{"name": "loss", "value": NaN, "step": 1}',
             b"\xff\xff\xff", b"", b'{"name": "loss", "value": 0.5, "step": 2}']
    (job_dir / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    notes = collect.Notes()
    rows = collect.read_metrics(job_dir, LIMITS, notes)
    assert [r["step"] for r in rows] == [0, 2]
    assert [n.split(":")[0] for n in notes.as_list()] == ["metrics.jsonl line 2", "metrics.jsonl line 3"]


def test_metric_line_and_count_limits(job_dir):
    long = b'{"name": "x", "value": 1, "pad": "' + b"p" * 5000 + b'"}'
    good = b'{"name": "loss", "value": 1}'
    (job_dir / "metrics.jsonl").write_bytes(b"\n".join([good, long, good, good, good]) + b"\n")
    notes = collect.Notes()
    rows = collect.read_metrics(job_dir, collect.Limits(metric_lines=4, metric_line_bytes=1024), notes)
    assert len(rows) == 3
    assert notes.as_list() == ["metrics.jsonl line 2: longer than 1k (skipped)",
                               "metrics: stopped after 4 lines (the metric line limit)"]


@pytest.mark.parametrize("plant", ["link-to-zero", "fifo", "folder"])
def test_metrics_that_are_not_a_regular_file_are_skipped_at_once(job_dir, plant):
    target = job_dir / "metrics.jsonl"
    if plant == "link-to-zero":
        target.symlink_to("/dev/zero")
    elif plant == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    done = []
    worker = threading.Thread(target=lambda: done.append(collect.read_metrics(job_dir, LIMITS, notes)))
    notes = collect.Notes()
    worker.start()
    worker.join(5)
    assert done == [[]], "reading the planted metrics must neither block nor read forever"
    assert len(notes.as_list()) == 1 and notes.as_list()[0].startswith("metrics.jsonl:")


def test_artifacts_are_copied_as_regular_files_and_links_recorded_not_followed(job_dir, tmp_path):
    arts = job_dir / "artifacts"
    (arts / "model").mkdir()
    (arts / "model" / "saved_model.pb").write_bytes(b"pb" * 10)
    (arts / "passwd").symlink_to("/etc/passwd")
    (arts / "etc").symlink_to("/etc")
    os.mkfifo(arts / "pipe")
    notes = collect.Notes()
    dest = tmp_path / "kept"
    manifest = collect.copy_artifacts(job_dir, dest, 1024**2, notes)
    assert manifest.files == [{"path": "model/saved_model.pb", "size": 20}]
    assert manifest.links == [{"path": "etc", "target": "/etc"}, {"path": "passwd", "target": "/etc/passwd"}]
    assert sorted(p.name for p in dest.rglob("*")) == ["model", "saved_model.pb"]
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert notes.as_list() == ["artifacts/pipe: not a regular file, folder or link (skipped)"]


def test_an_artifacts_folder_that_is_a_link_is_not_followed(job_dir, tmp_path):
    (job_dir / "artifacts").rmdir()
    (job_dir / "artifacts").symlink_to("/etc")
    notes = collect.Notes()
    manifest = collect.copy_artifacts(job_dir, tmp_path / "kept", 1024**2, notes)
    assert manifest.to_json() == {"files": [], "links": [], "bytes": 0}
    assert not (tmp_path / "kept").exists()
    assert notes.as_list() == ["artifacts: is a link or not a folder (not followed)"]


def test_artifact_bytes_are_capped_with_the_reason(job_dir, tmp_path):
    (job_dir / "artifacts" / "a.bin").write_bytes(b"a" * 3000)
    (job_dir / "artifacts" / "b.bin").write_bytes(b"b" * 3000)
    notes = collect.Notes()
    manifest = collect.copy_artifacts(job_dir, tmp_path / "kept", 4000, notes, why="quota storage: alice may keep 4000")
    assert manifest.bytes == 4000
    assert manifest.files == [{"path": "a.bin", "size": 3000}, {"path": "b.bin", "size": 1000}]
    assert (tmp_path / "kept" / "b.bin").read_bytes() == b"b" * 1000
    assert notes.as_list() == ["artifacts: stopped at 4000 (quota storage: alice may keep 4000); artifacts/b.bin is "
                               "cut short and the rest is not kept"]


def test_notes_are_bounded():
    notes = collect.Notes()
    for i in range(collect.MAX_NOTES + 7):
        notes.add(f"n{i}")
    assert len(notes.as_list()) == collect.MAX_NOTES + 1 and notes.as_list()[-1] == "... and 7 more notes"
    assert json.dumps(notes.as_list())


def test_a_run_from_before_manifests_lists_its_artifacts_following_nothing(tmp_path, monkeypatch):
    from dlbox.jobs import runner as jobs

    monkeypatch.setenv("DLBOX_HOME", str(tmp_path))
    root = jobs.run_dir("old") / "artifacts"
    (root / "m").mkdir(parents=True)
    (root / "m" / "w.bin").write_bytes(b"abc")
    (root / "etc").symlink_to("/etc")
    (root / "m" / "passwd").symlink_to("/etc/passwd")
    assert jobs.artifacts("old") == {"files": [{"path": "m/w.bin", "size": 3}],
                                     "links": [{"path": "etc", "target": "/etc"},
                                               {"path": "m/passwd", "target": "/etc/passwd"}], "bytes": 3}
