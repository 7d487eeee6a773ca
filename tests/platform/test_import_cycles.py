"""No import cycles among the modules of ``vachat/`` and ``plugins/``.

A cycle means two modules each need the other: whichever loads first sees the other half-built,
and neither can be understood (or split) alone. The graph is read from the source with ``ast``:
every ``import`` and ``from … import`` counts, at module level, inside a function (a lazy
import still ties the two modules together; it only hides the knot from the start-up order) or
under ``if TYPE_CHECKING:`` (a module that needs another's types to be read is tied to it too;
the fix is a ``Protocol`` declared by the module that needs it). Left out: a package's implicit
import of its parent (Python loads ``plugins/chat/__init__.py`` before ``plugins/chat/api.py``,
but that is containment, not a dependency the code chose). Tests and migrations are not part
of the code's graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("vachat", "plugins")
LEFT_OUT_FOLDERS = {"tests", "migrations", "__pycache__"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if LEFT_OUT_FOLDERS.isdisjoint(path.relative_to(root).parts):
                modules[module_name(path, root)] = path
    return modules


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from a import b``: b is a module of package a, or else a name defined in a.
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                          for alias in node.names]
        for candidate in candidates:
            # ``import a.b.c`` needs a.b.c; the deepest known module it names is the edge.
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = source_modules(root)
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def test_no_import_cycles_among_vachat_and_plugins():
    cycles = import_cycles(import_graph(PROJECT_ROOT))
    assert cycles == [], "import cycles (each line: modules that import one another):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "plugins" / "demo"
    package.mkdir(parents=True)
    (tmp_path / "vachat").mkdir()
    (tmp_path / "plugins" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from . import first\n")
    (package / "first.py").write_text("from .second import helper\n")
    (package / "second.py").write_text("def helper():\n    from plugins.demo import first\n    return first\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .first import x\n")
    (package / "third.py").write_text("import plugins.demo.second as second\n")
    (package / "tests").mkdir()
    (package / "tests" / "test_it.py").write_text("from plugins.demo import first\n")
    graph = import_graph(tmp_path)
    assert graph["plugins.demo.first"] == {"plugins.demo.second"}
    assert graph["plugins.demo.typed"] == {"plugins.demo.first"}  # types tie modules too
    assert graph["plugins.demo.third"] == {"plugins.demo.second"}
    assert "tests" not in " ".join(graph)
    assert import_cycles(graph) == [["plugins.demo.first", "plugins.demo.second"]]
