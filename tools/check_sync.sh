#!/usr/bin/env bash
# Check that vqvae_kaggle/ is exactly what nbdev_export makes of nbs/, built into an EMPTY package folder (so a module
# that no notebook exports, an orphan, is found), and that the notebooks are what nbdev_clean makes of them.
# Usage: tools/check_sync.sh [REPO] (default: this repository).
# Which nbdev: the folder NBDEV_BIN names (tools/test.sh passes .venv/bin; tests/test_sync.py passes the bin folder of
# the interpreter running pytest), else nbdev_export/nbdev_clean on PATH. Never a fixed path: any environment where
# the package is installed with its dev extra (pip install -e ".[dev]") can run it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(cd "${1:-$here}" && pwd)
tool() {   # the path of nbdev tool $1, or a message naming what to install
  local found
  if [ -n "${NBDEV_BIN:-}" ]; then
    found="$NBDEV_BIN/$1"; [ -x "$found" ] || found=""
  else
    found=$(command -v "$1" || true)
  fi
  if [ -z "$found" ]; then
    local where="on PATH"; [ -z "${NBDEV_BIN:-}" ] || where="in NBDEV_BIN=$NBDEV_BIN"
    echo "check_sync.sh: $1 not found $where: install the dev tools into the" >&2
    echo "  environment that runs this check: pip install -e \".[dev]\" (from $here), or bash tools/setup.sh --dev for .venv" >&2
    exit 2
  fi
  echo "$found"
}
nbdev_export=$(tool nbdev_export); nbdev_clean=$(tool nbdev_clean)
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/repo/vqvae_kaggle"
cp -r "$repo/settings.ini" "$repo/nbs" "$scratch/repo/"
cp "$repo/vqvae_kaggle/__init__.py" "$scratch/repo/vqvae_kaggle/"   # the version lives there, not in a notebook
(cd "$scratch/repo" && "$nbdev_export" && "$nbdev_clean") >/dev/null
if ! diff -r -x __pycache__ "$repo/vqvae_kaggle" "$scratch/repo/vqvae_kaggle" || ! diff -r "$repo/nbs" "$scratch/repo/nbs"; then
  echo "FAILED: vqvae_kaggle/ or nbs/ differ from what nbdev_export/nbdev_clean make of nbs/ (run nbdev_export and nbdev_clean;"
  echo "        a file 'Only in $repo/vqvae_kaggle' is a module no notebook exports: delete it or export it from a notebook)"
  exit 1
fi
