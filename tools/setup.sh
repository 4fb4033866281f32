#!/usr/bin/env bash
# Create .venv and install vqvae-kaggle into it (editable). `--dev` adds nbdev, pytest and the kaggle client.
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
.venv/bin/python -m pip install -q --disable-pip-version-check -c tools/constraints.txt -e ".$extra" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import vqvae_kaggle, torch, lpips, crafter, av" \
  || { echo "setup failed: the package does not import from .venv (see pip output above)" >&2; exit 1; }
echo "$want" > "$stamp"
