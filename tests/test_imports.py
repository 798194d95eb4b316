"""The package's import graph has no cycles.

Every import of a ``vpt_mm`` module counts, at module level or inside a
function (a lazy import hides a cycle from Python, not from a reader).
"""
import ast
from pathlib import Path
from typing import Dict, List, Set

import vpt_mm

ROOT = Path(vpt_mm.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the vpt_mm modules it imports (packages by their
    ``__init__``; ``from p import m`` of a submodule ``m`` is ``p.m``;
    importing ``p.m`` imports the package ``p`` too, unless the importer is
    inside ``p``)."""
    paths = {module_name(p): p for p in ROOT.rglob('*.py')}
    graph: Dict[str, Set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == '__init__.py' else \
            name.rpartition('.')[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split('.')
                    base = base[:len(base) - node.level + 1]
                    stem = '.'.join(base + ([node.module]
                                            if node.module else []))
                else:
                    stem = node.module or ''
                targets = [f'{stem}.{a.name}' if f'{stem}.{a.name}' in paths
                           else stem for a in node.names]
            else:
                continue
            for target in targets:
                # Importing a.b.c runs the packages a.b first: they count,
                # but not the packages the importer itself is in.
                parts = target.split('.')
                edges.update(
                    '.'.join(parts[:i]) for i in range(2, len(parts) + 1)
                    if not (name + '.').startswith('.'.join(parts[:i]) + '.'))
        graph[name] = {e for e in edges if e in paths and e != name}
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_walker_finds_a_cycle():
    assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == \
        [['a', 'b', 'c']]
    assert find_cycles({'a': {'b'}, 'b': set()}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert 'vpt_mm.prompts.fused' in graph['vpt_mm.backbones.vit']
    assert 'vpt_mm.backbones' in graph['vpt_mm.apis.multitask']
    # Through a package: prompts.plan, and the package prompts before it.
    assert {'vpt_mm.prompts', 'vpt_mm.prompts.plan'} <= \
        graph['vpt_mm.backbones.vit']
    assert 'vpt_mm.backbones' not in graph['vpt_mm.backbones.vit']


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, 'import cycles: ' + '; '.join(
        ' <-> '.join(c) for c in cycles)
