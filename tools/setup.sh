#!/usr/bin/env bash
# Create .venv and install vqvae-kaggle into it (editable). `--dev` adds nbdev, pytest, the kaggle client and the docs
# builder (mkdocs-material + mkdocs-jupyter).
# Re-running is cheap: the install is skipped while settings.ini and tools/constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""; [ "${1:-}" = "--dev" ] && extra="[dev]"
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=.venv/.vqvae-kaggle-installed
want="$extra $(cat settings.ini tools/constraints.txt setup.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && grep -qxF -- "$want" "$stamp"; then exit 0; fi
# The dev install is a superset: once it is in place a plain install is satisfied too.
if [ -z "$extra" ] && [ -f "$stamp" ] && grep -qxF -- "[dev] ${want# }" "$stamp"; then exit 0; fi
echo "setting up .venv (torch, lpips, wandb, crafter, ...${extra:+ + dev tools}); the first time takes a few minutes" >&2
# pip's own status decides (the filter only hides a harmless warning about index folders that do not exist here)
status=0
.venv/bin/python -m pip install -q --no-compile --disable-pip-version-check -c tools/constraints.txt -e ".$extra" > .venv/pip.log 2>&1 || status=$?
grep -v "is ignored: it is neither a file nor a directory" .venv/pip.log >&2 || true
[ "$status" -eq 0 ] || { echo "setup failed: pip install exited with $status (see its output above)" >&2; exit 1; }
modules="vqvae_kaggle, torch, lpips, crafter, av, safetensors"
[ -n "$extra" ] && modules="$modules, nbdev, pytest, papermill, ipywidgets, jupytext, mkdocs, mkdocs_jupyter, material"
.venv/bin/python -c "import $modules" \
  || { echo "setup failed: not every module imports from .venv ($modules; see pip output above)" >&2; exit 1; }
# the kaggle client is only located, not imported: importing it authenticates and prints a page of help without a token
[ -z "$extra" ] || .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('kaggle') is None)" \
  || { echo "setup failed: the kaggle client is not installed in .venv (see pip output above)" >&2; exit 1; }
echo "$want" > "$stamp"
