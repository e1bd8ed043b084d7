"""The package's import graph (every ``import`` statement, module level and inside functions, plus the
package ``__init__`` that importing a submodule runs first) has no cycle, and the layers hold: the
models import nothing from the hub, fusion, CLI or training code; the hub reaches models only
through the public factory (``mtvif_zoo._factory``) or timm's registry."""
import ast
from pathlib import Path

import mtvif_zoo

PKG = Path(mtvif_zoo.__file__).resolve().parent


def _modules():
    mods = {}
    for p in PKG.rglob('*.py'):
        parts = ['mtvif_zoo', *p.relative_to(PKG).with_suffix('').parts]
        if parts[-1] == '__init__':
            parts = parts[:-1]
        mods['.'.join(parts)] = p
    return mods


def _targets(mod, node, is_pkg, mods):
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    base = mod.split('.') if is_pkg else mod.split('.')[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        prefix = '.'.join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ''
    subs = [f'{prefix}.{a.name}' for a in node.names if f'{prefix}.{a.name}' in mods]
    out = subs + ([prefix] if len(subs) < len(node.names) and prefix in mods else [])
    return out


def import_graph():
    mods = _modules()
    graph = {}
    for mod, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(_targets(mod, node, path.name == '__init__.py', mods))
        own = {'.'.join(mod.split('.')[:k]) for k in range(1, mod.count('.') + 2)}
        for d in list(deps):  # importing a.b.c runs the a.b package first (the importer's own: already running)
            parts = d.split('.')
            deps.update(a for a in ('.'.join(parts[:k]) for k in range(1, len(parts))) if a in mods and a not in own)
        graph[mod] = deps - {mod}
    return graph


def _cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_the_walker_sees_a_cycle():
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    g = import_graph()  # function-level imports are edges too
    assert 'mtvif_zoo.fusion' in g['mtvif_zoo.evaluate'] and 'mtvif_zoo._factory' in g['mtvif_zoo.fusion']


def test_layers():
    g = import_graph()
    for mod, deps in g.items():
        if mod.startswith('mtvif_zoo.models'):
            bad = sorted(d for d in deps if not d.startswith('mtvif_zoo.models'))
            assert not bad, f'{mod} imports {bad}: the models import nothing outside mtvif_zoo.models'
        if mod.startswith('mtvif_zoo.hub'):
            bad = sorted(d for d in deps if d.startswith('mtvif_zoo.models'))
            assert not bad, f'{mod} imports {bad}: the hub reaches models through mtvif_zoo._factory / timm'
