#!/usr/bin/env bash
# The documentation site, from docs/ and every notebook of nbs/ (rendered as they are, not executed: they are stored
# without outputs and CI has no GPU), into _site/ (or the folder given). Fails on a broken link (mkdocs --strict, and
# tools/docs_nav.py check on the built pages), a notebook missing from the nav, or a nav page that was not built.
# Usage: tools/build_docs.sh [SITE_DIR]
# Needs mkdocs-material and mkdocs-jupyter (the dev extra: bash tools/setup.sh --dev). MKDOCS_BIN names the folder
# holding mkdocs and its python (default: .venv/bin when it exists, else PATH). DOCS_NBS and DOCS_PAGES build the site
# of another notebooks folder and pages folder (the tests do). Notebooks already rendered are reused from
# .cache/mkdocs-jupyter (keyed by their content).
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mkdir -p "${1:-_site}" && cd "${1:-_site}" && pwd)
bin=${MKDOCS_BIN:-}; [ -z "$bin" ] && [ -x .venv/bin/mkdocs ] && bin=.venv/bin
if [ -n "$bin" ]; then py=$bin/python; mkdocs=$bin/mkdocs; else py=python3; mkdocs=mkdocs; fi
command -v "$mkdocs" >/dev/null || { echo "build_docs.sh: no mkdocs: bash tools/setup.sh --dev (or pip install -e \".[dev]\")" >&2; exit 2; }
args=(--nbs "${DOCS_NBS:-nbs}" --docs "${DOCS_PAGES:-docs}")
build=$(mktemp -d); trap 'rm -rf "$build"' EXIT
config=$("$py" tools/docs_nav.py "${args[@]}" stage "$build")
# (not --quiet: it would hide the warnings that --strict counts; the INFO lines are dropped instead)
NO_MKDOCS_2_WARNING=1 "$mkdocs" build --strict --clean -f "$config" -d "$site" 2>&1 | { grep -v '^INFO ' >&2 || true; }
"$py" tools/docs_nav.py "${args[@]}" check "$build" "$site"
echo "docs: $(find "$site" -name index.html | wc -l) pages in $site"
