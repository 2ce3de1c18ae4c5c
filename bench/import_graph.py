"""The project's import graph: modules and their cycles, rooms and the arrows between them.

Reads `v8_model/` and `crpbot_assets/` as source (nothing is imported), keeps the imports that
run when a module loads (not those inside functions or under `if TYPE_CHECKING:`), and prints the
number of modules and edges and every cycle (a strongly connected component of more than one
module).

Then the rooms: each sub-package of `v8_model` is a room (`v8_model.data`, `v8_model.model`, ...),
the modules directly in `v8_model/` are its foundations (room `v8_model`), and `crpbot_assets`
as a whole is one room. Every import counts here, those inside functions included, since a room
that reaches into another at call time depends on it as much. It prints each arrow between two
rooms with the number of imports behind it.

Exits 1 when modules form a cycle, when two rooms import each other (directly or round a
longer loop), when the foundations import a room, or when `v8_model` imports `crpbot_assets`.

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


def _statements(tree: ast.Module, load_time_only: bool) -> list[ast.stmt]:
    """The module's top-level statements, or (load_time_only False) every import in it."""
    if load_time_only:
        return tree.body
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def import_graph(modules: dict[str, Path], load_time_only: bool = True) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in _statements(ast.parse(path.read_text()), load_time_only):
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


def room_of(module: str) -> str:
    """`v8_model.data.features` → `v8_model.data`; `v8_model.config` → `v8_model`; any
    `crpbot_assets...` → `crpbot_assets`."""
    parts = module.split(".")
    if parts[0] != "v8_model" or len(parts) < 3:
        return parts[0]
    return ".".join(parts[:2])


def room_arrows(graph: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    """(from room, to room) → how many module imports make that arrow."""
    arrows: dict[tuple[str, str], int] = {}
    for module, targets in graph.items():
        for target in targets:
            pair = (room_of(module), room_of(target))
            if pair[0] != pair[1]:
                arrows[pair] = arrows.get(pair, 0) + 1
    return arrows


def room_problems(arrows: dict[tuple[str, str], int]) -> list[str]:
    rooms = sorted({room for pair in arrows for room in pair})
    room_graph = {room: {to for (frm, to) in arrows if frm == room} for room in rooms}
    problems = [f"rooms import each other: {' <-> '.join(loop)}" for loop in cycles(room_graph)]
    problems += [
        f"the foundations import a room: {frm} -> {to}"
        for (frm, to) in arrows
        if frm == "v8_model" and to.startswith("v8_model.")
    ]
    problems += [
        f"the library imports the Dagster side: {frm} -> {to}"
        for (frm, to) in arrows
        if frm.startswith("v8_model") and to == "crpbot_assets"
    ]
    return problems


def main() -> int:
    modules = module_files()
    graph = import_graph(modules)
    found = cycles(graph)
    edges = sum(len(targets) for targets in graph.values())
    print(f"{len(graph)} modules, {edges} module-level import edges, {len(found)} cycles")
    for component in found:
        print("cycle:", " <-> ".join(component))
    arrows = room_arrows(import_graph(modules, load_time_only=False))
    rooms = sorted({room_of(module) for module in modules})
    print(f"\n{len(rooms)} rooms, {len(arrows)} arrows between them (imports at any depth):")
    for (frm, to), count in sorted(arrows.items()):
        print(f"  {frm:<20} -> {to:<20} {count:>3} imports")
    problems = room_problems(arrows)
    for problem in problems:
        print(problem)
    if not problems:
        print("every arrow between rooms is one-way; v8_model imports nothing above it")
    return 1 if found or problems else 0


if __name__ == "__main__":
    sys.exit(main())
