"""Imports run one way: models at the bottom, then the expander and the operations, then the job stores and the
engine that serve them, then the worker, the CLI and the bot. No module of edalle/ or bot/ may reach itself
through its imports.

Every import counts, wherever it is written: at the top, inside a function (a deferred import is still a
dependency), and under `if TYPE_CHECKING:` (a type that names a module above is a circle in the design even
when Python never runs it). `from package import name` counts as an import of `package.name` when that is a
module, else of `package`. A package's `__init__` is not counted as imported by its submodules: Python runs
it first, so it must stay light (edalle/jobs/__init__.py defers the SQLite store for that reason).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('edalle', 'bot')


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob('*.py')}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, anywhere in its file."""
    is_package = path.name == '__init__.py'
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = name.split('.') if is_package else name.split('.')[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = '.'.join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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


def test_no_module_of_edalle_or_bot_imports_itself_in_a_circle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph['bot.bot'] and graph['edalle.engine']  # the walk saw the project
    assert cycles(graph) == []


def test_the_checker_finds_circles_and_every_kind_of_import() -> None:
    """The checker itself: a hand-made circle is found; deferred, TYPE_CHECKING and relative imports count."""
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    assert cycles({'a': {'b'}, 'b': set()}) == []
    graph = import_graph()
    assert 'edalle.models.sampling' in graph['edalle.engine'] or 'edalle.loading' in graph['edalle.engine']
    assert 'bot.bot' in graph['bot.delivery']  # only under TYPE_CHECKING there
    assert 'edalle.jobs.sqlite' in graph['edalle.jobs']  # a deferred import inside __getattr__


def test_the_layers_run_one_way() -> None:
    """Models import nothing of the rest; operations never import the engine, the worker or the bot; the engine
    never imports the worker or the bot; nothing in edalle/ imports the bot except the CLI that starts it."""
    graph = import_graph()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    for name in graph:
        reached = reach(name)
        if name.startswith('edalle.models'):
            outside = {m for m in reached if not m.startswith('edalle.models') and m not in ('edalle.config', 'edalle')}
            assert not outside, (name, outside)
        if name.startswith('edalle.operations'):
            assert not {m for m in reached if m.startswith(('edalle.engine', 'edalle.worker', 'bot'))}, name
        if name == 'edalle.engine':
            assert not {m for m in reached if m.startswith(('edalle.worker', 'bot', 'edalle.cli'))}
        if name.startswith('edalle') and name != 'edalle.cli':
            assert not {m for m in reached if m.startswith('bot')}, name
