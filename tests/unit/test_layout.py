"""The package layout is the lifecycle: each layer imports only layers below it, and no modules
import each other in a circle. Lazy imports inside functions count: they are dependencies too."""

from __future__ import annotations

import ast
from pathlib import Path

import dlbox

SRC = Path(dlbox.__file__).parent

# Lowest first. A module belongs to the longest prefix listed; a layer may import its own and lower ones.
LAYERS = [
    ["dlbox", "dlbox.errors", "dlbox.config", "dlbox.sizes", "dlbox.redact", "dlbox.progress", "dlbox.gitinfo",
     "dlbox.snapshots"],
    ["dlbox.spec"],
    ["dlbox.containers", "dlbox.jobs.state", "dlbox.pipelines.state"],  # pure: a container; job and pipeline states
    ["dlbox.engine"],  # the only code that talks to the Docker Engine
    ["dlbox.build", "dlbox.supply"],  # supply: scans and SBOMs of a built image
    ["dlbox.store"],  # the only code that talks to the database
    ["dlbox.workspaces", "dlbox.jobs", "dlbox.runs"],
    ["dlbox.models"],  # the model registry: a run's SavedModel as a versioned model
    ["dlbox.serving"],  # deployments: plain inputs (versions, labels), no registry import
    ["dlbox.deployments"],  # deployments as recorded intent: the registry + serving, reconciled
    ["dlbox.pipelines"],  # commit -> build, test, train, evaluate, gate, register, deploy, report
    ["dlbox.server"],
    ["dlbox.cli"],
    ["dlbox.launch", "dlbox.__main__"],
]
# Third-party packages only one layer may import.
ONLY = {"docker": "dlbox.engine", "sqlalchemy": "dlbox.store", "alembic": "dlbox.store",
        "fastapi": "dlbox.server", "click": "dlbox.cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py") if "migrations" not in p.parts}


def imports(path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from dlbox.x import y` is module dlbox.x.y when there is one
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def layer_of(name: str) -> int:
    best = max((prefix for layer in LAYERS for prefix in layer if name == prefix or name.startswith(prefix + ".")),
               key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {t for t in imports(path, set(mods)) if t in mods and t != name} for name, path in mods.items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)  # raises when a new package is not in LAYERS


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a))
    assert upward == []


def test_no_import_circles():
    edges = graph()
    circles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.add(top)
                if top == node:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []


def test_the_engine_database_web_and_cli_libraries_stay_in_their_layer():
    mods = modules()
    wrong = []
    for name, path in mods.items():
        for target in imports(path, set(mods)):
            owner = ONLY.get(target.split(".")[0])
            if owner and not (name == owner or name.startswith(owner + ".")):
                wrong.append(f"{name} imports {target}")
    assert sorted(wrong) == []


def test_routes_and_dashboard_pages_share_plain_functions_never_each_other():
    """Both are doors over the same actions: a page calling a route handler (or back) ties two doors together."""
    wrong = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                   for door, other in (("dlbox.server.routes", "dlbox.server.dashboard"),
                                       ("dlbox.server.dashboard", "dlbox.server.routes"))
                   if a.startswith(door) and b.startswith(other))
    assert wrong == []


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The rules above would pass on a checker that reads nothing: show it catches both faults."""
    pkg = tmp_path / "dlbox"
    (pkg / "spec").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "spec" / "__init__.py").write_text("")
    (pkg / "spec" / "a.py").write_text("def f():\n    from dlbox.spec import b\n")
    (pkg / "spec" / "b.py").write_text("from dlbox.spec import a\nfrom dlbox.server import app\n")
    (pkg / "server").mkdir()
    (pkg / "server" / "__init__.py").write_text("")
    (pkg / "server" / "app.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    with_pkg = graph()
    assert with_pkg["dlbox.spec.a"] == {"dlbox.spec.b"} and "dlbox.server.app" in with_pkg["dlbox.spec.b"]
    try:
        test_no_import_circles()
    except AssertionError as exc:
        assert "dlbox.spec.a" in str(exc)
    else:
        raise AssertionError("the circle a <-> b was not seen")
    try:
        test_no_module_imports_a_layer_above_its_own()
    except AssertionError as exc:
        assert "dlbox.spec.b -> dlbox.server.app" in str(exc)
    else:
        raise AssertionError("the upward import spec -> server was not seen")


def test_no_two_test_modules_share_a_name():
    """Test folders are not packages, so pytest imports each module by its file name: two of one
    name stop the collection of the whole suite (a fresh `make test` would run nothing)."""
    tests = Path(__file__).resolve().parents[1]
    seen: dict[str, list[str]] = {}
    for module in tests.rglob("test_*.py"):
        seen.setdefault(module.name, []).append(str(module.relative_to(tests)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}
