"""The project's module-level import graph: its size and any import cycles.

Reads `v8_model/` and `crpbot_assets/` as source (nothing is imported), keeps the imports that
run when a module loads (not those inside functions or under `if TYPE_CHECKING:`), and prints the
number of modules and edges and every cycle (a strongly connected component of more than one
module). Exits 1 when there is a cycle.

Usage: python bench/import_graph.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("v8_model", "crpbot_assets")
ROOT = Path(__file__).resolve().parent.parent


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imported(node: ast.stmt, module: str, is_package: bool) -> list[str]:
    """[base, base.name, ...] of an import statement; for `import a, b`, its modules."""
    if isinstance(node, ast.Import):
        return ["", *(alias.name for alias in node.names)]
    if not isinstance(node, ast.ImportFrom):
        return [""]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                continue
            base, *names = _imported(node, name, path.name == "__init__.py")
            # `from package import submodule` depends on the submodule only: Python loads it
            # even while the package's __init__ is still running. Any other name is the base's.
            submodules = [target for target in names if target in modules]
            attributes = len(submodules) < len(names)
            for target in [*submodules, *([base] if attributes else [])]:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def main() -> int:
    graph = import_graph(module_files())
    found = cycles(graph)
    edges = sum(len(targets) for targets in graph.values())
    print(f"{len(graph)} modules, {edges} module-level import edges, {len(found)} cycles")
    for component in found:
        print("cycle:", " <-> ".join(component))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
