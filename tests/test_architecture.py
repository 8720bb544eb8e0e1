"""The layout's rules, checked on the source: imports run one way.

The import graph is read from the source files with :mod:`ast` (every ``import``, also
those inside functions), over the ``harness.*`` namespace that setup.py maps the
top-level folders into. Checked:

* no import cycle among modules, nor among the top-level packages and core modules
  (``harness.tasks``, ``harness.models``, ..., ``harness.evaluator``, ``harness.api``);
* the contracts (``harness.api``) import nothing of the harness but errors and hooks;
* each stage is ignorant of the stages after it (tasks know no model, quantizer or
  results DB; models know no task; ...);
* no CLI command module imports another (only the shared helpers);
* the library imports nothing from ``benchmarks/`` or ``experimental/``, and neither
  tests nor benchmarks import the experiments.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _folders() -> dict[str, str]:
    """setup.py's ``FOLDERS`` (package -> folder), read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FOLDERS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no FOLDERS mapping")


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in _folders().items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterable[tuple[str, list[str]]]:
    """(module named, names taken from it) for every import statement."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names]


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for target, names in _imported(
            ast.parse(path.read_text()), name, path.name == "__init__.py"
        ):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            deps.update(subs)
            if len(subs) < len(names) or not names:
                deps.add(target)
        # importing a.b.c runs a.b's __init__ too, but that is not an edge of this module's
        edges[name] = {d for d in deps if d in modules and d != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    item = stack.pop()
                    on_stack.discard(item)
                    component.append(item)
                    if item == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _unit(module: str) -> str:
    """The top-level unit a module belongs to: ``harness.tasks.pope.scoring`` -> ``harness.tasks``."""
    return ".".join(module.split(".")[:2])


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph(_modules())


def _unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for module, deps in graph.items():
        units.setdefault(_unit(module), set())
        for dep in deps:
            if _unit(dep) != _unit(module):
                units[_unit(module)].add(_unit(dep))
    return units


def test_the_checker_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from .common import x\nfrom . import y\nimport harness.errors")
    assert list(_imported(tree, "harness.cli.run", False)) == [
        ("harness.cli.common", ["x"]),
        ("harness.cli", ["y"]),
        ("harness.errors", []),
    ]


def test_the_graph_covers_the_whole_namespace(graph):
    assert {"harness.cli", "harness.tasks.pope", "harness.models.llava", "harness.api"} <= set(
        graph
    )
    # an import inside a function counts: the Triton kernel takes the packed layout from there
    kernels = [m for m in graph if m.startswith("harness.kernels")]
    assert any("harness.quantized" in graph[m] for m in kernels)


def test_no_import_cycles_among_modules(graph):
    assert _cycles(graph) == []


def test_no_import_cycles_among_top_level_packages(graph):
    units = _unit_graph(graph)
    assert _cycles(units) == [], {u: sorted(d) for u, d in units.items()}


def test_contracts_import_nothing_back(graph):
    allowed = {"harness.errors", "harness.hooks"}
    for module, deps in graph.items():
        if module.startswith("harness.api"):
            outside = {d for d in deps if not d.startswith("harness.api")} - allowed - {"harness"}
            assert not outside, f"{module} imports {sorted(outside)}"


# Each stage of the data flow (task YAML -> documents -> requests -> adapter -> outputs ->
# scores -> results DB -> leaderboard/gate/export) is ignorant of the ones after it.
LATER = {
    "harness.api": {"harness.tasks", "harness.models", "harness.quantizers", "harness.results"},
    "harness.tasks": {
        "harness.models",
        "harness.quantizers",
        "harness.trainers",
        "harness.kernels",
        "harness.results",
        "harness.evaluator",
        "harness.cli",
    },
    "harness.models": {
        "harness.tasks",
        "harness.quantizers",
        "harness.trainers",
        "harness.results",
        "harness.evaluator",
        "harness.cli",
    },
    "harness.kernels": {"harness.quantizers", "harness.models", "harness.results"},
    "harness.quantizers": {"harness.results", "harness.trainers", "harness.cli"},
    "harness.results": {
        "harness.models",
        "harness.quantizers",
        "harness.trainers",
        "harness.evaluator",
        "harness.cli",
    },
    "harness.scoring": {"harness.models", "harness.results", "harness.evaluator"},
    "harness.evaluator": {"harness.cli", "harness.quantizers", "harness.trainers"},
}


@pytest.mark.parametrize("unit", sorted(LATER))
def test_each_stage_knows_nothing_of_later_ones(graph, unit):
    units = _unit_graph(graph)
    wrong = units[unit] & LATER[unit]
    where = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if _unit(m) == unit
        for d in deps
        if _unit(d) in wrong
    )
    assert not wrong, where


def test_cli_commands_import_only_the_shared_helpers(graph):
    shared = {"harness.cli", "harness.cli.common", "harness.cli.model_flags"}
    commands = {m for m in graph if m.startswith("harness.cli.")} - shared
    assert {"harness.cli.run", "harness.cli.score", "harness.cli.gate"} <= commands
    for module in commands:
        other = {d for d in graph[module] if d.startswith("harness.cli")} - shared
        assert not other, f"{module} imports {sorted(other)}"
    # and the shared helpers import no command
    for module in shared - {"harness.cli"}:
        assert not {d for d in graph[module] if d in commands}, module


def _script_imports(folder: str) -> set[str]:
    """First components of the absolute imports of every file under ``folder``."""
    names = set()
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_experiments_stay_out_of_the_product():
    experiments = {p.stem for p in (REPO / "experimental").glob("*.py")}
    benchmarks = {p.stem for p in (REPO / "benchmarks").glob("*.py")}
    assert experiments and benchmarks
    for folder in ("tests", "benchmarks", *_folders().values()):
        imported = _script_imports(folder)
        assert not imported & experiments, f"{folder}/ imports {sorted(imported & experiments)}"
        if folder != "benchmarks":
            assert not imported & benchmarks, f"{folder}/ imports {sorted(imported & benchmarks)}"
        assert "experimental" not in imported and "benchmarks" not in imported
