"""The README's module table, from the notebooks: one row per notebook that exports a module (its `#| default_exp`),
with the notebook's one-line `> description`. README.md holds the table between the markers below.

    python tools/module_table.py           # print the table
    python tools/module_table.py --write   # replace the table in README.md (between the markers)
    python tools/module_table.py --check   # exit 1 when README.md's table differs from the notebooks' (tests/test_readme.py)
"""
import json, re, sys
from pathlib import Path
from docs_nav import notebooks   # the order the documentation site lists them in

ROOT = Path(__file__).resolve().parents[1]
START, END = '<!-- modules:start -->', '<!-- modules:end -->'
DEFAULT_EXP = re.compile(r'^#\|\s*default_exp\s+(\S+)', re.M)

def exported_module(cells: list) -> str | None:
    "The module a notebook exports (`sources.__init__` -> `sources`), or None."
    for cell in cells:
        if cell['cell_type'] == 'code' and (m := DEFAULT_EXP.search(''.join(cell['source']))):
            return m[1].removesuffix('.__init__')
    return None

def description(cells: list) -> str:
    "The notebook's one-line summary: the first `> ...` line of its markdown."
    for cell in cells:
        if cell['cell_type'] != 'markdown': continue
        for line in ''.join(cell['source']).splitlines():
            if line.startswith('> '): return line[2:].strip()
    return ''

def rows(root: Path = ROOT) -> list[tuple[str, str, str]]:
    "(notebook path relative to root, module, description) for every notebook that exports a module."
    out = []
    for rel in notebooks(root/'nbs'):
        cells = json.loads((root/'nbs'/rel).read_text(encoding='utf-8'))['cells']
        if (module := exported_module(cells)): out.append((f'nbs/{rel.as_posix()}', module, description(cells)))
    return out

def table(root: Path = ROOT) -> str:
    lines = ['| notebook | module | what it holds |', '|---|---|---|']
    for path, module, text in rows(root):
        lines.append(f'| [`{Path(path).relative_to("nbs").with_suffix("").as_posix()}`]({path}) | `{module}` | '
                     f'{text.replace("|", "&#124;")} |')
    return '\n'.join(lines)

def readme_table(readme: str) -> str:
    "The text between the markers."
    if START not in readme or END not in readme: raise ValueError(f'README.md has no {START} ... {END} markers')
    return readme.split(START, 1)[1].split(END, 1)[0].strip('\n')

def with_table(readme: str, new: str) -> str:
    before, rest = readme.split(START, 1)
    return f'{before}{START}\n{new}\n{END}{rest.split(END, 1)[1]}'

if __name__ == '__main__':
    arg = sys.argv[1] if len(sys.argv) > 1 else ''
    readme_path = ROOT/'README.md'
    if arg == '--write': readme_path.write_text(with_table(readme_path.read_text(), table())); print('README.md: module table written')
    elif arg == '--check':
        same = readme_table(readme_path.read_text()) == table()
        if not same: print('README.md\'s module table differs from the notebooks: python tools/module_table.py --write', file=sys.stderr)
        sys.exit(0 if same else 1)
    elif arg: sys.exit(__doc__)
    else: print(table())
