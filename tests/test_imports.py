"""Imports point one way: no cycles, and no import from a lower layer into a higher one (docs: DESIGN.md).

Every import statement of gdm, run.py and hydra_plugins counts, function-level ones included (they hide a
dependency from a reader, not from the design).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest
from helpers import ROOT

# Highest first; a module belongs to the layer of its longest matching prefix. Written once, here.
LAYERS = (
    ("entry points", ("run", "hydra_plugins")),
    ("app + tasks", ("gdm.app", "gdm.tasks", "gdm.checkpoints", "gdm.resume", "gdm.config_tree", "gdm.ddp")),
    ("evaluation + compare", ("gdm.evaluation.evaluator", "gdm.compare", "gdm.callbacks", "gdm.loggers",
                              "gdm.optuna_search")),
    ("models", ("gdm.models",)),
    # The rest of gdm.evaluation (the shared feature pass, sharding, the real-feature cache, protocols) is
    # what metrics run on, and gdm.models.capabilities the interface they read a model through: both sit
    # under them.
    ("metrics / augment / losses / likelihoods", ("gdm.metrics", "gdm.evaluation", "gdm.models.capabilities",
                                                  "gdm.augment", "gdm.losses", "gdm.likelihoods")),
    ("nets / data", ("gdm.nets", "gdm.data")),
    ("small helpers", ("gdm",)),  # images, errors, multirun, memory, ... and any new top-level module
)


def layer(module: str) -> int:
    """The index in LAYERS (0 = highest) of `module`'s longest matching prefix."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add its prefix to LAYERS"
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return [ROOT / "run.py", *sorted((ROOT / "gdm").rglob("*.py")),
            *sorted((ROOT / "hydra_plugins").rglob("*.py"))]


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in its body: `from gdm import x` counts as gdm.x when x is
    a module, else as gdm."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} ({LAYERS[layer(m)][0]}) imports {d} ({LAYERS[layer(d)][0]})"
                  for m, deps in graph.items() for d in deps if layer(d) < layer(m))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def test_the_walk_sees_function_level_imports():
    graph = import_graph()
    assert "gdm.tasks.compare" in graph["gdm.app"]  # module level
    assert "gdm.app" in graph["run"]  # inside run.py's main()
    plugin = "hydra_plugins.gdm_optuna_sweeper.optuna_sweeper"
    assert "gdm.optuna_search" in graph[plugin]  # `from gdm import optuna_search`, inside a method


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down_the_layers():
    assert upward_imports(import_graph()) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_a_training_run_does_not_import_the_comparison_code():
    """The sweep summary sits with the tasks; a run's loggers ask gdm.multirun which job it is."""
    assert not {m for m in reachable(import_graph(), "gdm.tasks.train") if m.startswith("gdm.compare")}


@pytest.mark.parametrize(("graph", "cycle", "upward"), [
    ({"gdm.loggers": {"gdm.tasks.sweep_summary"}, "gdm.tasks.sweep_summary": {"gdm.loggers"}}, True,
     ["gdm.loggers (evaluation + compare) imports gdm.tasks.sweep_summary (app + tasks)"]),
    ({"gdm.metrics.features": {"gdm.evaluation.evaluator"}, "gdm.evaluation.evaluator": set()}, False,
     ["gdm.metrics.features (metrics / augment / losses / likelihoods) imports gdm.evaluation.evaluator "
      "(evaluation + compare)"]),
    ({"gdm.tasks.train": {"gdm.models.gan"}, "gdm.models.gan": {"gdm.errors"}, "gdm.errors": set()}, False,
     []),
])
def test_the_checks_fail_on_a_cycle_and_on_an_upward_import(graph, cycle, upward):
    assert (find_cycle(graph) is not None) == cycle
    assert upward_imports(graph) == upward
