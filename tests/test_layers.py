"""Every import inside mmkeras follows the layer order of `mmkeras.layers`, and no modules import each other in a cycle.

Module-level imports and imports inside functions both count (a lazy import
is still a dependency); imports under `if TYPE_CHECKING:` do not run and do
not count. docs/architecture.md's layer table is the table of `mmkeras.layers`.
"""

import ast
from pathlib import Path

from mmkeras.layers import LAYER_NAMES, LAYERS, layer_of, may_import

ROOT = Path(__file__).resolve().parents[1]
# installed package -> its folder in this repository (setup.py's PACKAGE_ROOTS)
PACKAGE_ROOTS = {"mmkeras": "mmkeras", "mmkeras.cli": "cli", "mmkeras.export": "export"}
ARCHITECTURE_DOC = ROOT / "docs" / "architecture.md"


def installed_modules() -> dict[str, Path]:
    """Every module of the repository by the name it is installed as."""
    modules = {}
    for package, folder in PACKAGE_ROOTS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


MODULES = installed_modules()


def _runs(node: ast.AST) -> list[ast.AST]:
    """The statements of a body that run: an `if TYPE_CHECKING:` block's do not."""
    if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
        return node.orelse
    return list(ast.iter_child_nodes(node))


def imported_modules(module: str, path: Path) -> list[tuple[str, int]]:
    """`(imported mmkeras module, line)` for every import in `module`, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found, pending = [], [ast.parse(path.read_text(encoding="utf-8"))]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from package import submodule` depends on the submodule; `from module import name` on the module.
            found += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, node.lineno)
                      for alias in node.names]
        pending += _runs(node)
    return sorted((name, line) for name, line in found if name in MODULES and name != module)


def import_graph() -> dict[str, list[tuple[str, int]]]:
    return {module: imported_modules(module, path) for module, path in MODULES.items()}


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert unplaced == [], "add these to mmkeras.layers.LAYERS"


def test_no_import_goes_up_the_layers():
    upward = [
        f"{MODULES[module].relative_to(ROOT)}:{line}: {module} ({layer_of(module)}) imports "
        f"{target} ({layer_of(target)})"
        for module, targets in import_graph().items()
        for target, line in targets
        if not may_import(module, target)
    ]
    assert upward == [], "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    edges = [
        f"{module} -> {target} ({MODULES[module].relative_to(ROOT)}:{line})"
        for component in found
        for module in component
        for target, line in graph[module]
        if target in component
    ]
    assert found == [], "import cycles:\n" + "\n".join(edges)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    assert not may_import("mmkeras.models.dual_encoder", "mmkeras.evaluation.zero_shot")
    assert may_import("mmkeras.evaluation.zero_shot", "mmkeras.models.dual_encoder")
    graph = {"a": [("b", 1)], "b": [("c", 2)], "c": [("a", 3)], "d": [("a", 4)]}
    assert cycles(graph) == [["a", "b", "c"]]


def test_function_level_and_relative_imports_are_seen(tmp_path):
    source = tmp_path / "module.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mmkeras.models import builder\n"
        "def f():\n    from mmkeras.runs import load_run_config\n"
        "from . import bundle\n"
    )
    assert imported_modules("mmkeras.runtime.predictor", source) == [
        ("mmkeras.runs", 5), ("mmkeras.runtime.bundle", 6)
    ]


def layer_table() -> str:
    """docs/architecture.md's table of the layers, top first as a reader meets them."""
    rows = [f"| {name} | {holds} | {', '.join(f'`{member}`' for member in members)} |"
            for name, holds, members in reversed(LAYERS)]
    return "\n".join(["| layer | what it holds | modules |", "| --- | --- | --- |", *rows])


def test_the_architecture_doc_states_this_order():
    assert len(set(LAYER_NAMES)) == len(LAYER_NAMES)
    assert layer_table() in ARCHITECTURE_DOC.read_text(encoding="utf-8"), (
        "docs/architecture.md's layer table differs from mmkeras.layers.LAYERS; it should read:\n" + layer_table()
    )
