"""README.md: the two commands first, usage before measurements, every measurement beside its command, every relative
link and anchor working, and the module table exactly what tools/module_table.py makes of the notebooks."""
import re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import module_table

README = (ROOT/'README.md').read_text()
TWO_COMMANDS = '''# vqvae-kaggle

```bash
bash tools/train.sh     # set up .venv, render first-person Minecraft frames, train the `cpu` preset (~9 min on 2 cores), evaluate it
bash tools/test.sh      # set up .venv with dev tools, check notebooks == package, run nbdev_test and pytest
```
'''

def headings(text: str = README) -> list[tuple[int, str]]:
    "(level, title) of every Markdown heading outside code blocks."
    out, in_code = [], False
    for line in text.splitlines():
        if line.startswith('```'): in_code = not in_code
        elif not in_code and (m := re.match(r'(#{1,6}) (.+)', line)): out.append((len(m[1]), m[2].strip()))
    return out

def anchor(title: str) -> str:
    "GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."
    return re.sub(r'[^\w\- ]', '', title.lower()).replace(' ', '-')

def sections(level: int = 2) -> dict:
    "title -> text of each section of that level."
    parts = re.split(rf'(?m)^(?={"#" * level} )', README)
    return {p.splitlines()[0][level + 1:].strip(): p for p in parts if p.startswith('#' * level + ' ')}

def test_readme_starts_with_the_two_commands():
    assert README.startswith(TWO_COMMANDS)

def test_usage_comes_before_measurements_and_the_architecture():
    order = [t for lvl, t in headings() if lvl == 2]
    wanted = ['What the two commands do', 'Command line', 'Training on your own data', 'Training on Kaggle', 'Evaluating',
              'Tokens for a world model', 'Measured', 'Architecture']
    assert [t for t in order if t in wanted] == wanted, order

def test_every_measurement_is_beside_its_command():
    measured = sections(2)['Measured']
    parts = [p for p in re.split(r'(?m)^(?=### )', measured) if p.startswith('### ')]
    assert len(parts) >= 7
    for part in parts:
        title = part.splitlines()[0]
        assert '```bash' in part or '`bash ' in title, f'{title}: no command that reproduces it'

def test_relative_links_and_anchors_resolve():
    anchors = {anchor(t) for _, t in headings()}
    for target in re.findall(r'\]\(([^)\s]+)\)', README) + re.findall(r'src="([^"]+)"', README):
        if re.match(r'[a-z]+:', target): continue                        # http(s), mailto
        path, _, frag = target.partition('#')
        if not path: assert frag in anchors, f'README links to #{frag}: no such heading'; continue
        resolved = (ROOT/path).resolve()
        if ROOT not in resolved.parents and resolved != ROOT: continue  # outside the repository (../shared/seed)
        assert resolved.exists(), f'README links to {target}: no such file'

def test_module_table_is_the_notebooks():
    assert module_table.readme_table(README) == module_table.table(), \
        "README.md's module table differs from the notebooks: python tools/module_table.py --write"

def test_module_table_lists_every_module_of_the_package():
    listed = {module for _, module, _ in module_table.rows()}
    package = ROOT/'vqvae_kaggle'
    modules = {'.'.join(p.relative_to(package).with_suffix('').parts) for p in package.rglob('*.py')
               if p.name not in ('__init__.py', '_modidx.py')}
    assert modules <= listed, f'modules missing from the table (no notebook exports them?): {sorted(modules - listed)}'

def test_architecture_prose_names_real_modules_and_every_top_level_one():
    "The layers above the table name only modules that exist, and every top-level module (sources/ is one layer)."
    prose = sections(2)['Architecture'].split(module_table.START)[0]
    layers = '\n'.join(line for line in prose.splitlines() if re.match(r'\s*(\d+\.|  )', line))
    modules = {module for _, module, _ in module_table.rows()}
    named = set(re.findall(r'`([a-z][a-z0-9_.]*)`', layers))
    unknown = {n for n in named if n not in modules and f'sources.{n}' not in modules}
    assert not unknown, f'README architecture names modules that do not exist: {sorted(unknown)}'
    top_level = {m for m in modules if '.' not in m and m != 'sources'}
    assert top_level <= named, f'README architecture does not place: {sorted(top_level - named)}'
