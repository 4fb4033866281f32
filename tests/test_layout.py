"""The package's shape, as issue 23 asks it to stay: no module over 500 lines, no import circle, no private name
imported from another module. Read statically (ast), so lazy imports inside functions count too."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/'vqvae_kaggle'
MAX_LINES = 500
SCRIPTS = {'sources.minecraft_game', 'sources.minecraft_world'}   # run as scripts in the game's own interpreter

def modules(pkg: Path = PKG) -> dict:
    "Dotted module name (relative to the package) -> path, for every .py of the package but the generated index."
    out = {}
    for p in sorted(pkg.rglob('*.py')):
        rel = p.relative_to(pkg).with_suffix('')
        if rel.name == '_modidx': continue
        parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
        out['.'.join(parts)] = p
    return out

def imports_of(name: str, path: Path, known: dict) -> list[tuple[str, list[str]]]:
    "(imported module of the package, names taken from it) for every import in the module, at any depth."
    pkg_parts = name.split('.')[:-1] if path.name != '__init__.py' else name.split('.')
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[:len(pkg_parts) - node.level + 1] if node.level > 1 else pkg_parts
                target = '.'.join([p for p in base if p] + ([node.module] if node.module else []))
            elif node.module and node.module.split('.')[0] == 'vqvae_kaggle': target = node.module[len('vqvae_kaggle') + 1:]
            else: continue
            for alias in node.names:              # `from . import data` imports the module `data`
                sub = f'{target}.{alias.name}' if target else alias.name
                if sub in known: found.append((sub, []))
                else: found.append((target, [alias.name]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith('vqvae_kaggle.'): found.append((alias.name[len('vqvae_kaggle.'):], []))
    return [(t, n) for t, n in found if t in known and t != name]

def import_graph(pkg: Path = PKG) -> dict:
    known = modules(pkg)
    return {m: sorted({t for t, _ in imports_of(m, p, known)}) for m, p in known.items()}

def cycles(graph: dict) -> list[list[str]]:
    "Every elementary circle found by a depth-first search (each reported once, from its smallest member)."
    found, seen = [], set()
    def visit(node, stack):
        for nxt in graph.get(node, []):
            if nxt in stack:
                loop = stack[stack.index(nxt):]
                key = tuple(sorted(loop))
                if key not in seen: seen.add(key); found.append(loop + [nxt])
            elif len(stack) < 12: visit(nxt, stack + [nxt])
    for start in graph: visit(start, [start])
    return found

def test_no_module_over_500_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f'modules over {MAX_LINES} lines (split them by concern): {long}'

def test_no_import_circle():
    assert not cycles(import_graph()), f'import circles in the package: {cycles(import_graph())}'

def test_no_private_name_crosses_a_module():
    known = modules()
    crossing = [f'{m} imports {t}.{n}' for m, p in known.items() for t, names in imports_of(m, p, known)
                for n in names if n.startswith('_') and not n.startswith('__')]
    assert not crossing, 'private names used outside their module (make them public or move them): ' + '; '.join(crossing)

def test_the_checks_catch_what_they_look_for(tmp_path):
    "The checks above are not vacuous: a circle and a private import in a throwaway package are found."
    (tmp_path/'a.py').write_text('from .b import _secret\n')
    (tmp_path/'b.py').write_text('def f():\n    from . import a\n')
    (tmp_path/'__init__.py').write_text('')
    known = modules(tmp_path)
    assert set(known) == {'', 'a', 'b'}
    assert cycles(import_graph(tmp_path)) == [['a', 'b', 'a']]
    assert ('b', ['_secret']) in imports_of('a', known['a'], known)
    graph = import_graph()
    assert 'config' in graph and 'data' in graph['train'], 'the real package is read'
