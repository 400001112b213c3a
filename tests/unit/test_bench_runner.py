"""benchmarks/run.py, the runner: which benchmarks BENCH_ONLY picks, and the table it prints.

No Docker Engine and no benchmark runs: the modules are imported as `make bench` imports them
(benchmarks/ first on sys.path, plain `import common`), then taken out of sys.modules again.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
MODULES = ["b01_cold_build", "b02_rebuild", "b03_cli", "b04_up", "b05_memory", "b06_submit", "b07_queue",
           "b08_train", "b09_server_load", "b10_dashboard", "b11_snapshot", "b12_serving", "b13_scan",
           "b14_pipeline", "b15_registry"]


@pytest.fixture(scope="module")
def bench():
    """benchmarks/run.py as a module; its siblings unloaded and sys.path restored afterwards."""
    names = ["run", "common", *MODULES]
    clashes = [n for n in names if n in sys.modules]
    if clashes:
        pytest.skip(f"modules of these names are already loaded: {clashes}")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in names:
            sys.modules.pop(name, None)


def test_the_runner_holds_every_benchmark_once(bench):
    assert sorted(m.__name__ for m in bench.BENCHES) == MODULES
    assert sorted(m.NUMBER for m in bench.BENCHES) == list(range(1, 16))
    for module in bench.BENCHES:
        assert module.__name__ == f"b{module.NUMBER:02d}_" + module.__name__.split("_", 1)[1]
        assert module.TITLE.startswith(f"{module.NUMBER}. ")
        assert callable(module.bench)


def test_run_order_is_the_quick_ones_first(bench):
    assert [m.NUMBER for m in bench.chosen(None)] == [3, 10, 13, 15, 4, 5, 6, 11, 7, 8, 14, 12, 9, 1, 2]


def test_bench_only_picks_exactly_those(bench, monkeypatch):
    monkeypatch.setenv("BENCH_ONLY", "3,6")
    only = bench.selected()
    assert only == {3, 6}
    assert [m.__name__ for m in bench.chosen(only)] == ["b03_cli", "b06_submit"]
    monkeypatch.setenv("BENCH_ONLY", " 6 , 3, ")
    assert bench.selected() == {3, 6}


@pytest.mark.parametrize("value", ["", "  "])
def test_no_bench_only_runs_all(bench, monkeypatch, value):
    monkeypatch.setenv("BENCH_ONLY", value)
    assert bench.selected() is None
    assert len(bench.chosen(bench.selected())) == len(bench.BENCHES) == 15


@pytest.mark.parametrize("value", ["0", "16", "x", ",", "3,x", "3;6"])
def test_bench_only_refuses_other_values(bench, monkeypatch, capsys, value):
    monkeypatch.setenv("BENCH_ONLY", value)
    with pytest.raises(ValueError, match="a comma list of benchmark numbers 1-15"):
        bench.selected()
    assert bench.main() == 2  # before it asks for dlbox or the engine
    assert "error: BENCH_ONLY=" in capsys.readouterr().err


def test_table(bench, monkeypatch, capsys):
    common = sys.modules["common"]
    monkeypatch.setattr(common, "RUN_ID", "20240101000000-abcdef")
    monkeypatch.setattr(common, "QUICK", False)
    monkeypatch.setattr(common, "PRESET", "tensorflow-2.9")
    monkeypatch.setattr(common, "WS_IMAGE", "dlbox/tensorflow-2.9:latest")
    monkeypatch.setattr(common, "JOB_IMAGE", "dlbox/tensorflow-2.9:latest")
    Row = common.Row
    common.print_table([
        Row("1. cold build, tensorflow-2.9", "301.2 s", "290.0 s", "1.04x", "ratio <= 1.1", "pass", "mean of 2 (ABBA)"),
        Row("3. dlbox --help (vs python -c pass)", "0.081 s", "0.012 s", "6.75x", "dlbox < 0.5 s", "pass",
            "median of 10"),
        Row("9. team server lists under load", result="ERROR", note="wrk is not installed"),
    ])
    # As the single-file run.py printed it.
    assert capsys.readouterr().out == """
dlbox benchmarks, run 20240101000000-abcdef, preset tensorflow-2.9
baselines: hand-written Dockerfile with DOCKER_BUILDKIT=0 docker build; python -c pass; docker images; \
docker run -d of dlbox/tensorflow-2.9:latest's Jupyter server; docker run of dlbox/tensorflow-2.9:latest (6-8)
benchmark                              dlbox  baseline  ratio  target         result  notes
-----------------------------------  -------  --------  -----  -------------  ------  --------------------
1. cold build, tensorflow-2.9        301.2 s   290.0 s  1.04x  ratio <= 1.1   pass    mean of 2 (ABBA)
3. dlbox --help (vs python -c pass)  0.081 s   0.012 s  6.75x  dlbox < 0.5 s  pass    median of 10
9. team server lists under load            -         -      -  -              ERROR   wrk is not installed

"""
    monkeypatch.setattr(common, "QUICK", True)
    common.print_table([])
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "dlbox benchmarks, run 20240101000000-abcdef (BENCH_QUICK), preset tensorflow-2.9"
    assert out[3:5] == ["benchmark  dlbox  baseline  ratio  target  result  notes",
                        "---------  -----  --------  -----  ------  ------  -----"]


def test_the_dlbox_names_the_benchmarks_use_exist(bench):
    """The dlbox the benchmarks import: its service's reconciler is scoped (else 6-8 refuse beside other
    services' jobs), and the code that bootstraps a missing base imports what it calls."""
    import ast

    common = sys.modules["common"]
    assert common.reconciler_scoped()
    names: dict = {}
    imports = [node for node in ast.parse(common.BOOTSTRAP_BASE).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(body=imports, type_ignores=[]), "BOOTSTRAP_BASE", "exec"), names)
    assert callable(names["bases"].ensure) and callable(names["spec"].load) and names["Progress"]


def offline_main(bench, monkeypatch, tmp_path, benches) -> tuple[int, list]:
    """run.main() over `benches` with no engine, no dlbox and no cleanup: (exit status, the table's rows)."""
    def mkdtemp(prefix):
        (tmp_path / "work").mkdir()
        return str(tmp_path / "work")

    monkeypatch.setattr(bench, "BENCHES", benches)
    monkeypatch.setattr(bench, "DLBOX", "dlbox")
    monkeypatch.setattr(bench, "subprocess", SimpleNamespace(run=lambda *a, **k: SimpleNamespace(returncode=0)))
    monkeypatch.setattr(bench, "tempfile", SimpleNamespace(mkdtemp=mkdtemp))
    monkeypatch.setattr(bench, "stock_bytecode", lambda: "bytecode caches")
    monkeypatch.setattr(bench, "service", SimpleNamespace(setup=lambda work: None, remove_home=lambda: None))
    monkeypatch.setattr(bench, "cleanup", lambda runner: None)
    printed = []
    monkeypatch.setattr(bench, "print_table", printed.extend)
    return bench.main(), printed


def test_a_benchmark_that_fails_midway_keeps_the_rows_it_measured(bench, monkeypatch, tmp_path):
    """12 measures dlbox, then MLflow: when the MLflow part cannot run, dlbox's rows still print, above an
    ERROR row, and the run's exit status counts the error."""
    common = sys.modules["common"]

    def measures_then_fails(runner, work):
        raise common.BenchError("MLflow peer: mlflow-install failed (exit 1, log x):\n    no network",
                                rows=[common.Row("12. dlbox REST, batch 1 (vs in-process)", "0.50 ms")])

    status, printed = offline_main(bench, monkeypatch, tmp_path, [
        SimpleNamespace(NUMBER=12, TITLE="12. model serving", bench=measures_then_fails)])
    assert status == 1
    assert printed == [common.Row("12. dlbox REST, batch 1 (vs in-process)", "0.50 ms"),
                       common.Row("12. model serving", result="ERROR",
                                  note="MLflow peer: mlflow-install failed (exit 1, log x):")]
    assert common.BenchError("plain").rows == []


def test_a_benchmark_that_crashes_is_an_error_row_and_the_rest_still_run_and_print(bench, monkeypatch, tmp_path,
                                                                                   capsys):
    """An exception that is no BenchError (a bug, an engine refusal) ends only its own benchmark: its row says
    ERROR with the exception's type, the benchmarks after it run, and the table prints every row."""
    common = sys.modules["common"]
    ran = []

    def crashes(runner, work):
        ran.append(9)
        return {}["dlbox.uid"]

    def measures(runner, work):
        ran.append(3)
        return [common.Row("3. dlbox --help", "0.081 s")]

    status, printed = offline_main(bench, monkeypatch, tmp_path, [
        SimpleNamespace(NUMBER=9, TITLE="9. team server lists under load", bench=crashes),
        SimpleNamespace(NUMBER=3, TITLE="3. CLI start", bench=measures)])
    assert status == 1 and ran == [9, 3]
    assert printed == [common.Row("3. dlbox --help", "0.081 s"),
                       common.Row("9. team server lists under load", result="ERROR", note="KeyError: 'dlbox.uid'")]
    err = capsys.readouterr().err
    assert "Traceback" in err and "in crashes" in err  # the bug's place is in the log


def test_mlflow_gets_the_limits_of_dlbox_serving_container(bench):
    b12 = sys.modules["b12_serving"]
    gib3 = 3 * 1024**3
    flags, words = b12.limits_of({"Memory": gib3, "MemorySwap": gib3, "NanoCpus": 0, "CpusetCpus": "",
                                  "ShmSize": 64 * 1024**2})
    assert flags == ["--memory", f"{gib3}b", "--memory-swap", f"{gib3}b", "--shm-size", f"{64 * 1024**2}b"]
    assert words == "memory 3 GiB, no CPU limit"
    flags, words = b12.limits_of({"Memory": gib3, "MemorySwap": -1, "NanoCpus": 1_500_000_000, "CpusetCpus": "0"})
    assert flags == ["--memory", f"{gib3}b", "--memory-swap", "-1", "--cpus", "1.5", "--cpuset-cpus", "0"]
    assert words == "memory 3 GiB, 1.5 CPUs (cpuset 0)"
    assert b12.limits_of({}) == ([], "no memory limit, no CPU limit")
