#!/usr/bin/env bash
# The whole test suite: set up .venv with the dev tools, check that the package is exactly what the
# notebooks export and that the notebooks are clean, run every notebook (nbdev_test), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --dev
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
# Tools write to home folders by default: keep tests inside the scratch folder, and offline.
export WANDB_DIR=$scratch/wandb WANDB_CACHE_DIR=$scratch/wandb-cache WANDB_CONFIG_DIR=$scratch/wandb-config WANDB_SILENT=true \
       MPLCONFIGDIR=$scratch/mpl KAGGLEHUB_CACHE=$scratch/kagglehub KAGGLE_CONFIG_DIR=$scratch/kaggle MPLBACKEND=Agg
mkdir -p "$WANDB_DIR" "$MPLCONFIGDIR"

echo "== notebooks and package in sync, notebooks clean"
mkdir -p "$scratch/repo" && cp -r settings.ini nbs vqvae_kaggle "$scratch/repo/"
root=$PWD
(cd "$scratch/repo" && "$root/.venv/bin/nbdev_export" && "$root/.venv/bin/nbdev_clean") >/dev/null
if ! diff -r -x __pycache__ vqvae_kaggle "$scratch/repo/vqvae_kaggle" || ! diff -r nbs "$scratch/repo/nbs"; then
  echo "FAILED: vqvae_kaggle/ or nbs/ differ from what nbdev_export/nbdev_clean make of nbs/ (run nbdev_export and nbdev_clean)"; exit 1
fi

echo "== nbdev_test (every notebook)"
.venv/bin/nbdev_test --n_workers 2 --timing

echo "== pytest"
.venv/bin/python -m pytest -q tests "$@"
