"""mkdocs hooks for the documentation site (tools/docs_nav.py names this file in the generated mkdocs.yml).

A link from one notebook to another (`[data](02_data.ipynb)`, as GitHub and Jupyter follow it) is turned into a link
to that notebook's page; mkdocs does this for Markdown pages, but notebooks are rendered by nbconvert. A link to a
notebook that is not a page is left as it is, and tools/docs_nav.py check reports it as broken.

mkdocs-jupyter inlines the notebook stylesheet (about 600 kB) into every notebook page. Each page's inline styles are
moved into one stylesheet file, written once and linked from the page: the site is 20 times smaller, and the search
index no longer parses the stylesheet once per page (two thirds of the build time otherwise).
"""
import hashlib, posixpath, re
from pathlib import Path
from mkdocs.plugins import CombinedEvent, event_priority
from mkdocs.utils import get_relative_url

INLINE_STYLE = re.compile(r'<style type="text/css">(.*?)</style>', re.S)
stylesheets = {}   # site-relative path -> CSS text, written after the build

NOTEBOOK_LINK = re.compile(r'href="([^":#?]+\.ipynb)(#[^"]*)?"')

def link_notebook_pages(html, page, files):
    "`href` to another notebook -> to its page, relative to this page."
    def to_page(m):
        target = files.get_file_from_path(posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m[1])))
        if target is None or not target.is_documentation_page(): return m[0]
        return f'href="{get_relative_url(target.url, page.url)}{m[2] or ""}"'
    return NOTEBOOK_LINK.sub(to_page, html)

def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith('.ipynb'): return html
    html = link_notebook_pages(html, page, files)
    css = '\n'.join(INLINE_STYLE.findall(html))
    if not css: return html
    name = f'assets/notebook-{hashlib.sha256(css.encode()).hexdigest()[:12]}.css'
    stylesheets[name] = css
    return f'<link rel="stylesheet" href="{get_relative_url(name, page.url)}">\n' + INLINE_STYLE.sub('', html)

def on_post_build(config):
    for name, css in stylesheets.items():
        path = Path(config['site_dir'])/name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(css, encoding='utf-8')

# The search index reads each page's HTML tag by tag, and a notebook page is mostly syntax-highlighting spans (about
# 10,000 a page): indexing them took 35 of the 50 s of a build. The index gets the page without those spans (the same
# text); the page itself keeps them. mkdocs renders the page after every on_page_context handler has run, so the
# highlighted HTML is put back by the last one.
HIGHLIGHT_SPAN = re.compile(r'<span class="[a-z0-9]{1,3}">([^<]*)</span>')
highlighted = {}   # page url -> its HTML with highlighting, while the search index reads the plain one

@event_priority(100)   # before the search plugin
def strip_highlighting_for_search(context, page, config, nav):
    if page.file.src_uri.endswith('.ipynb') and page.content:
        highlighted[page.url] = page.content
        page.content = HIGHLIGHT_SPAN.sub(r'\1', page.content)
    return context

@event_priority(-100)  # after it
def restore_highlighting(context, page, config, nav):
    if page.url in highlighted: page.content = highlighted.pop(page.url)
    return context

on_page_context = CombinedEvent(strip_highlighting_for_search, restore_highlighting)
