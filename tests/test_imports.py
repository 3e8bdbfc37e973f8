"""recbole_mm's modules import one another without a cycle.

The graph is read from the source with ``ast`` (nothing is imported): an edge A -> B for each
``import recbole_mm.B`` / ``from recbole_mm[.x] import B`` / relative import in module A, and
for each ``importlib.import_module("recbole_mm.B")`` with a literal name. Importing
``a.b.c`` also runs the package ``a.b``: that is an edge too, unless ``a.b`` encloses the
importing module (Python initialises a package before its submodules). Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "recbole_mm"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Every module of the package under ``package_dir``, by dotted name."""
    modules = {}
    for file in sorted(package_dir.rglob("*.py")):
        parts = file.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(node: ast.AST, *, top_level_only: bool):
    """The nodes that run with the module (or, with ``top_level_only=False``, at any time)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for node in child.orelse:
                yield node
                yield from _statements(node, top_level_only=top_level_only)
            continue
        if top_level_only and isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        ):
            continue
        yield child
        yield from _statements(child, top_level_only=top_level_only)


def _imported_names(module: str, is_package: bool, tree: ast.AST, *, top_level_only: bool):
    """Dotted names of what ``module`` imports (a module, or a package plus a name in it)."""
    for node in _statements(tree, top_level_only=top_level_only):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def import_graph(package_dir: Path, *, top_level_only: bool = True) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``top_level_only``: as it is imported)."""
    modules = module_files(package_dir)
    graph = {}
    for module, file in modules.items():
        is_package = file.name == "__init__.py"
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        edges = set()
        for name in _imported_names(module, is_package, tree, top_level_only=top_level_only):
            parts = name.split(".")
            for end in range(1, len(parts) + 1):
                target = ".".join(parts[:end])
                encloses = module == target or module.startswith(target + ".")
                if target in modules and not encloses:
                    edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# -- the checker itself, on small packages written for the purpose ----------------------------
def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_through_relative_and_absolute_imports_is_named(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "from .sub.c import thing\n",
            "sub/__init__.py": "",
            "sub/c.py": "import pkg.a\n",
        },
    )
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


def test_imports_inside_functions_count_only_when_asked(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "import pkg.b\n",
            "b.py": "def f():\n    import importlib\n    importlib.import_module('pkg.a')\n",
        },
    )
    assert find_cycle(import_graph(package)) is None
    assert find_cycle(import_graph(package, top_level_only=False)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_a_package_init_counts_but_the_enclosing_package_does_not(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "from pkg import a\n",
            "a.py": "from pkg.sub import c\n",
            "sub/__init__.py": "from . import c\n",
            "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.c"}
    assert graph["pkg.sub"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == set()
    assert find_cycle(graph) is None


# -- recbole_mm ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "top_level_only", [True, False], ids=["module level", "function-level imports too"]
)
def test_recbole_mm_imports_have_no_cycle(top_level_only):
    graph = import_graph(PACKAGE, top_level_only=top_level_only)
    assert "recbole_mm.config" in graph and "recbole_mm.trainer.checkpoint" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
