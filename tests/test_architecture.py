"""The import graph of ``flowkit`` keeps the layers of docs/architecture.md.

Built here from the source with ``ast`` (every import counts, also those under
``TYPE_CHECKING`` and inside functions), so it needs no tool; ``lint-imports``
checks the finer contracts of ``.importlinter`` in CI.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowkit"

CORE_MAY_IMPORT = {"flowkit._errors", "flowkit._durations", "flowkit._safe_eval"}
"""The core's only imports from flowkit, besides the blueprint model it steps over."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The flowkit modules ``name`` imports (``from pkg import module`` names the module)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in MODULES else source)
    return {m for m in found if m == "flowkit" or m.startswith("flowkit.")}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    """A subpackage (``flowkit.worker``) or a top-level module (``flowkit._errors``)."""
    return ".".join(module.split(".")[:2])


def _entry_point(module: str) -> bool:
    return module.endswith(".__main__")


def _unit_graph() -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for module, imported in GRAPH.items():
        if _entry_point(module):
            continue
        edges = units.setdefault(_unit(module), set())
        edges.update(_unit(m) for m in imported if _unit(m) != _unit(module))
    return units


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _importers_of(unit: str, into: str) -> list[str]:
    return sorted(
        f"{module} -> {m}"
        for module, imported in GRAPH.items()
        for m in imported
        if _unit(module) == unit and _unit(m) == into
    )


def test_no_cycle_among_subpackages_and_top_level_modules() -> None:
    cycles = _cycles(_unit_graph())
    detail = {
        " <-> ".join(c): [edge for a in c for b in c if a != b for edge in _importers_of(a, b)]
        for c in cycles
    }
    assert not cycles, detail


def test_nothing_inside_imports_the_public_facade() -> None:
    offenders = sorted(m for m, imported in GRAPH.items() if "flowkit" in imported)
    assert offenders == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) == "flowkit.core"))
def test_the_core_imports_only_the_ground_floor_and_the_blueprint_model(module: str) -> None:
    allowed = CORE_MAY_IMPORT | {
        m for m in MODULES if _unit(m) in ("flowkit.core", "flowkit.blueprint")
    }
    assert GRAPH[module] - allowed == set()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) == "flowkit.core"))
def test_the_core_does_no_io_and_reads_no_clock(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    names = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    names |= {
        (n.module or "").split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and not n.level
    }
    forbidden = {"anyio", "asyncio", "trio", "time", "random", "socket", "os", "io", "datetime"}
    awaits = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Await | ast.AsyncFunctionDef)]
    assert (names & forbidden, awaits) == (set(), [])


def test_the_graph_sees_the_imports_it_checks() -> None:
    """The checks above are only as good as the graph: it knows real edges."""
    assert "flowkit.core._machine" in GRAPH["flowkit.shell._durable"]
    assert "flowkit._clock" in GRAPH["flowkit.shell._durable"]  # `from .. import _clock`
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
