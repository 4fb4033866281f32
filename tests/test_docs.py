"""The documentation site (tools/build_docs.sh): notebooks become pages with a generated nav, and a broken link, a
notebook left out of the nav or a page that was not built fails the build. Tiny sites of two notebooks keep this quick;
tools/test.sh builds the whole site."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import docs_nav

def notebook(path: Path, *markdown: str):
    "A clean notebook of markdown cells (and one code cell)."
    cells = [{'cell_type': 'markdown', 'id': f'm{i}', 'metadata': {}, 'source': text} for i, text in enumerate(markdown)]
    cells.append({'cell_type': 'code', 'id': 'c0', 'metadata': {}, 'execution_count': None, 'outputs': [],
                  'source': 'x = 1 + 1'})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'cells': cells, 'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                                'language': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}))

def build(tmp: Path, nbs: Path, pages: Path = ROOT/'docs') -> subprocess.CompletedProcess:
    env = dict(os.environ, MKDOCS_BIN=str(Path(sys.executable).parent), DOCS_NBS=str(nbs), DOCS_PAGES=str(pages))
    return subprocess.run(['bash', str(ROOT/'tools'/'build_docs.sh'), str(tmp/'site')], env=env, capture_output=True,
                          text=True, timeout=300)

@pytest.fixture
def two_notebooks(tmp_path):
    "nbs/00_config and a tutorial that links to it."
    nbs = tmp_path/'nbs'
    shutil.copy(ROOT/'nbs'/'00_config.ipynb', nbs.mkdir() or nbs/'00_config.ipynb')
    notebook(nbs/'tutorials'/'01_walk.ipynb', '# Tutorial: a walk\n> What a tutorial page looks like.',
             'Back to [config](../00_config.ipynb#presets).')
    return nbs

@pytest.fixture
def pages(tmp_path):
    "An index page without links to the notebooks that the tiny sites lack."
    (tmp_path/'pages').mkdir()
    (tmp_path/'pages'/'index.md').write_text('# vqvae-kaggle\n\nVQ-VAE tokenizers; start with [config](00_config.ipynb).\n')
    return tmp_path/'pages'

def test_nav_lists_every_notebook_titled_in_file_name_order(two_notebooks):
    assert docs_nav.nav(two_notebooks) == [{'Home': 'index.md'}, {'Tutorials': [{'Tutorial: a walk': 'tutorials/01_walk.ipynb'}]},
                                           {'Modules': [{'config': '00_config.ipynb'}]}]
    notebook(two_notebooks/'sources'/'00_protocol.ipynb', '# sources.protocol')   # a sub-package's notebooks: a section
    notebook(two_notebooks/'00a_shared.ipynb', 'no title')                         # titled by its file name then
    assert docs_nav.nav(two_notebooks)[2] == {'Modules': [{'config': '00_config.ipynb'}, {'00a_shared': '00a_shared.ipynb'},
                                                          {'Frame sources': [{'sources.protocol': 'sources/00_protocol.ipynb'}]}]}

def test_site_has_the_index_and_notebook_pages(tmp_path, two_notebooks, pages):
    r = build(tmp_path, two_notebooks, pages)
    assert r.returncode == 0, r.stdout + r.stderr
    site = tmp_path/'site'
    assert 'VQ-VAE' in (site/'index.html').read_text() and 'href="00_config/"' in (site/'index.html').read_text()
    page = (site/'00_config'/'index.html').read_text()
    assert 'One typed configuration for a run' in page and 'class="kn">import' in page   # its prose and its code
    assert 'href="00_config.ipynb" title="Download the notebook"' in page and (site/'00_config'/'00_config.ipynb').exists()
    assert 'href="../../00_config/#presets"' in (site/'tutorials'/'01_walk'/'index.html').read_text()  # notebook -> page

def test_the_real_index_page_says_what_the_project_is():
    index = (ROOT/'docs'/'index.md').read_text()
    assert 'VQ-VAE image tokenizers' in index and 'bash tools/train.sh' in index and 'not executed' in index

def test_a_broken_link_fails_the_build(tmp_path, two_notebooks, pages):
    notebook(two_notebooks/'tutorials'/'02_broken.ipynb', '# Broken\n> A link to nowhere.', 'See [this](99_missing.ipynb).')
    r = build(tmp_path, two_notebooks, pages)
    assert r.returncode != 0 and 'broken link' in r.stderr and '99_missing.ipynb' in r.stderr, r.stdout + r.stderr
    (two_notebooks/'tutorials'/'02_broken.ipynb').unlink()
    (pages/'index.md').write_text('# Home\n\nSee [the missing page](missing.md).\n')   # mkdocs --strict refuses this
    r = build(tmp_path, two_notebooks/'tutorials', pages)
    assert r.returncode != 0 and 'missing.md' in r.stderr and 'strict' in r.stderr, r.stdout + r.stderr

def test_a_notebook_missing_from_the_nav_or_a_page_not_built_is_reported(tmp_path, two_notebooks):
    config = docs_nav.stage(tmp_path/'build', nbs=two_notebooks)
    site = tmp_path/'site'
    for page in docs_nav.nav_files(json.loads(config.read_text().split('\nnav: ', 1)[1])):
        docs_nav.built_page(site, page).parent.mkdir(parents=True, exist_ok=True)
        docs_nav.built_page(site, page).write_text('<p>page</p>')
    assert docs_nav.check(tmp_path/'build', site, nbs=two_notebooks) == []
    notebook(two_notebooks/'01_late.ipynb', '# late')                       # added after the nav was made
    (site/'00_config'/'index.html').unlink()
    assert sorted(docs_nav.check(tmp_path/'build', site, nbs=two_notebooks)) == [
        'nav entry without a built page: 00_config.ipynb', 'notebook not in the nav: nbs/01_late.ipynb']
