#!/usr/bin/env bash
# Check that vqvae_kaggle/ is exactly what nbdev_export makes of nbs/, built into an EMPTY package folder (so a module
# that no notebook exports, an orphan, is found), and that the notebooks are what nbdev_clean makes of them.
# Usage: tools/check_sync.sh [REPO] (default: this repository); the venv's nbdev is used.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(cd "${1:-$here}" && pwd)
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/repo/vqvae_kaggle"
cp -r "$repo/settings.ini" "$repo/nbs" "$scratch/repo/"
cp "$repo/vqvae_kaggle/__init__.py" "$scratch/repo/vqvae_kaggle/"   # the version lives there, not in a notebook
(cd "$scratch/repo" && "$here/.venv/bin/nbdev_export" && "$here/.venv/bin/nbdev_clean") >/dev/null
if ! diff -r -x __pycache__ "$repo/vqvae_kaggle" "$scratch/repo/vqvae_kaggle" || ! diff -r "$repo/nbs" "$scratch/repo/nbs"; then
  echo "FAILED: vqvae_kaggle/ or nbs/ differ from what nbdev_export/nbdev_clean make of nbs/ (run nbdev_export and nbdev_clean;"
  echo "        a file 'Only in $repo/vqvae_kaggle' is a module no notebook exports: delete it or export it from a notebook)"
  exit 1
fi
