"""The layout's rules, checked on the real import graph (grimp, the library import-linter builds on).

`make lint` runs the layers contract (web -> sync -> appliance -> recognizer, pyproject.toml's
[tool.importlinter]); these tests add what a layers contract cannot say:
- no import cycle among the project's modules, whatever the layers;
- the recognizer's runtime never imports its training code (pip leaves recognizer.training out);
- an import inside a function says why: an optional dependency or its start-up cost.
"""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("appliance", "web", "sync", "recognizer")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)


def import_cycle(imports: dict[str, set[str]]) -> list[str] | None:
    """A cycle in `imports` (module -> the modules it imports), as the list of its modules, or None."""
    try:
        graphlib.TopologicalSorter(imports).prepare()
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def imports_of(graph) -> dict[str, set[str]]:
    return {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}


def test_no_import_cycle_among_the_project_modules(graph):
    cycle = import_cycle(imports_of(graph))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_added_back(graph):
    """The check above is not vacuous: the back edge this layout removed (alerts importing the
    service for its system actor) is found as a cycle."""
    imports = imports_of(graph)
    assert "appliance.alerts" in imports["appliance.service"]
    imports["appliance.alerts"] = imports["appliance.alerts"] | {"appliance.service"}
    cycle = import_cycle(imports)
    assert cycle is not None and "appliance.alerts" in cycle and "appliance.service" in cycle


def test_the_recognizer_runtime_never_imports_its_training_code(graph):
    training = {"recognizer.training", *graph.find_descendants("recognizer.training")}
    outside = sorted(m for m in graph.modules if m not in training)
    for module in outside:
        reached = graph.find_modules_directly_imported_by(module) & training
        assert not reached, f"{module} imports {sorted(reached)}, which a pip install leaves out"


LAZY_REASON = re.compile(r"#\s*noqa: PLC0415\s*\((optional dependency|start-up cost)[^)]*\)")


def test_every_import_inside_a_function_says_why():
    """ruff's PLC0415 refuses an import inside a function; the few allowed carry
    `# noqa: PLC0415 (optional dependency: ...)` or `(start-up cost: ...)`."""
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        line = lines[inner.lineno - 1]
                        if not LAZY_REASON.search(line):
                            unexplained.append(f"{path.relative_to(ROOT)}:{inner.lineno}: {line.strip()}")
    assert not unexplained, "imports inside functions without a reason:\n" + "\n".join(sorted(set(unexplained)))
