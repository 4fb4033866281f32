"""The documentation site's pages, from the notebooks present: stage them for mkdocs, and check what mkdocs built.

    python tools/docs_nav.py stage BUILD_DIR   # BUILD_DIR/docs (docs/ + every notebook of nbs/) and BUILD_DIR/mkdocs.yml
    python tools/docs_nav.py check BUILD_DIR SITE_DIR   # every notebook is a page, every page of the nav was built,
                                                        # every relative link and image of the built site resolves
    (--nbs DIR and --docs DIR, before the command, read other folders: the tests build tiny sites that way)

The nav is never written by hand: it is every notebook under nbs/ in file-name order (top-level notebooks, then each
sub-folder as a section), titled from the notebook's first `# Title` line, after the index page (docs/index.md).
mkdocs itself (`--strict`, with the validation settings of mkdocs.yml) fails on broken links in Markdown pages and on
nav entries without a page; notebooks are rendered by nbconvert outside mkdocs' link validation, so `check` reads the
built HTML of every page for links and images that lead nowhere.
"""
import json, shutil, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
NBS, DOCS, HOOKS = ROOT/'nbs', ROOT/'docs', ROOT/'tools'/'docs_hooks.py'
SECTION_TITLES = {'tutorials': 'Tutorials', 'sources': 'Frame sources'}   # other folders: their name, capitalised

def notebooks(nbs: Path = NBS) -> list[Path]:
    "Every notebook under `nbs`, relative to it, top-level ones first, each folder in file-name order."
    found = [p.relative_to(nbs) for p in nbs.rglob('*.ipynb')
             if not any(part.startswith(('.', '_')) for part in p.relative_to(nbs).parts)]
    return sorted(found, key=lambda p: (len(p.parts) > 1, p.parts))

def markdown_lines(path: Path) -> list[str]:
    "The lines of a notebook's markdown cells, in order."
    cells = json.loads(path.read_text(encoding='utf-8'))['cells']
    return [line for c in cells if c['cell_type'] == 'markdown' for line in ''.join(c['source']).splitlines()]

def notebook_title(path: Path) -> str:
    "The notebook's first `# Title` line (its nbdev title), else its file name."
    for line in markdown_lines(path):
        if line.startswith('# '): return line[2:].strip()
    return path.stem

def section_title(folder: str) -> str: return SECTION_TITLES.get(folder, folder.replace('_', ' ').capitalize())

def nav(nbs: Path = NBS) -> list:
    "mkdocs nav: the index, top-level notebooks under 'Modules', and each sub-folder of nbs/ as a section (tutorials first)."
    top, folders = [], {}
    for rel in notebooks(nbs):
        entry = {notebook_title(nbs/rel): rel.as_posix()}
        if len(rel.parts) == 1: top.append(entry)
        else: folders.setdefault(rel.parts[0], []).append(entry)
    out = [{'Home': 'index.md'}]
    if 'tutorials' in folders: out.append({section_title('tutorials'): folders.pop('tutorials')})
    modules = top + [{section_title(name): entries} for name, entries in sorted(folders.items())]
    if modules: out.append({'Modules': modules})
    return out

def nav_files(entries) -> list[str]:
    "Every page file named in a nav, depth first."
    out = []
    for entry in entries:
        for value in entry.values():
            out += nav_files(value) if isinstance(value, list) else [value]
    return out

def stage(build: Path, nbs: Path = NBS, docs: Path = DOCS, base: Path = ROOT/'mkdocs.yml') -> Path:
    "Copy docs/ and every notebook into `build`/docs and write `build`/mkdocs.yml (the base config + the nav). Returns it."
    build = Path(build)
    if (build/'docs').exists(): shutil.rmtree(build/'docs')
    shutil.copytree(docs, build/'docs')
    for rel in notebooks(nbs):
        (build/'docs'/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nbs/rel, build/'docs'/rel)
    config = base.read_text(encoding='utf-8')
    # the site of nbs/ keeps its rendered notebooks in .cache/ (the plugin evicts what one build did not use, so the
    # tests' tiny sites of other folders must not share it)
    cache = ('cache_dir: ' + json.dumps(str(ROOT/'.cache'/'mkdocs-jupyter')) if Path(nbs).resolve() == NBS
             else 'cache_dir: .cache/unused\n      cache: false')
    assert 'cache_dir: .cache/mkdocs-jupyter' in config, 'mkdocs.yml: the cache_dir line has changed'
    config = config.replace('cache_dir: .cache/mkdocs-jupyter', cache, 1)
    # the generated config lives in `build`: the theme's folder is named from the repository
    config = config.replace('custom_dir: tools/docs_theme', 'custom_dir: ' + json.dumps(str(ROOT/'tools'/'docs_theme')), 1)
    config = config.rstrip('\n') + '\n\n# written by tools/docs_nav.py from the notebooks present\n'
    config += f'hooks: [{json.dumps(str(HOOKS))}]\n'
    config += 'nav: ' + json.dumps(nav(nbs), ensure_ascii=False) + '\n'   # JSON is YAML
    (build/'mkdocs.yml').write_text(config, encoding='utf-8')
    return build/'mkdocs.yml'

class _Links(HTMLParser):
    "The href/src of every element of a page, and its ids."
    def __init__(self):
        super().__init__(); self.links, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ('href', 'src') and value is not None: self.links.append(value)
            if name == 'id' and value: self.ids.add(value)

def built_page(site: Path, page: str) -> Path:
    "Where mkdocs (use_directory_urls) writes the page of source file `page`."
    stem = Path(page).with_suffix('')
    return site/'index.html' if stem.as_posix() == 'index' else site/stem/'index.html'

def broken_links(site: Path) -> list[str]:
    "'page: link' for every relative link or image of the built site whose target does not exist."
    site, out = Path(site), []
    for page in sorted(site.rglob('*.html')):
        parser = _Links(); parser.feed(page.read_text(encoding='utf-8', errors='replace'))
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(('#', '/', 'data:', 'javascript:')) or not parts.path: continue
            target = (page.parent/unquote(parts.path)).resolve()
            if target.is_dir(): target = target/'index.html'
            if not target.exists(): out.append(f'{page.relative_to(site)}: {link}')
    return out

def check(build: Path, site: Path, nbs: Path = NBS) -> list[str]:
    "Every problem found: notebooks missing from the nav, nav entries without a built page, broken links."
    problems = []
    config = (Path(build)/'mkdocs.yml').read_text(encoding='utf-8')
    listed = nav_files(json.loads(config.split('\nnav: ', 1)[1]))
    for rel in notebooks(nbs):
        if rel.as_posix() not in listed: problems.append(f'notebook not in the nav: nbs/{rel.as_posix()}')
    for page in listed:
        if not built_page(Path(site), page).exists(): problems.append(f'nav entry without a built page: {page}')
    problems += [f'broken link: {b}' for b in broken_links(site)]
    return problems

def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description='Stage the documentation site for mkdocs, or check what mkdocs built.')
    p.add_argument('--nbs', type=Path, default=NBS, help='the notebooks folder (default: nbs/)')
    p.add_argument('--docs', type=Path, default=DOCS, help='the hand-written pages (default: docs/)')
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('stage').add_argument('build', type=Path)
    c = sub.add_parser('check'); c.add_argument('build', type=Path); c.add_argument('site', type=Path)
    a = p.parse_args(argv)
    if a.cmd == 'stage': print(stage(a.build, nbs=a.nbs, docs=a.docs)); return 0
    problems = check(a.build, a.site, nbs=a.nbs)
    for problem in problems: print(problem, file=sys.stderr)
    return 1 if problems else 0

if __name__ == '__main__': sys.exit(main())
