#!/usr/bin/env bash
# The whole test suite: set up .venv with the dev tools, check that the package is exactly what the
# notebooks export and that the notebooks are clean, run every notebook (nbdev_test), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --dev
echo "== set up in ${SECONDS} s"
# The Minecraft tests also check the GLX route on a virtual X display: a fresh machine (root, apt) gets Xvfb here.
if ! command -v Xvfb >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing xvfb with apt-get (for the Minecraft GLX test; skipped if this fails)"
    { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends xvfb; } \
        >/dev/null 2>&1 || true
fi
command -v Xvfb >/dev/null || echo "== no Xvfb: tests/test_minecraft.py skips its GLX test (apt-get install xvfb)"
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
# Tools write to home folders by default: keep tests inside the scratch folder, and offline.
export WANDB_DIR=$scratch/wandb WANDB_CACHE_DIR=$scratch/wandb-cache WANDB_CONFIG_DIR=$scratch/wandb-config WANDB_SILENT=true \
       MPLCONFIGDIR=$scratch/mpl KAGGLEHUB_CACHE=$scratch/kagglehub KAGGLE_CONFIG_DIR=$scratch/kaggle MPLBACKEND=Agg
mkdir -p "$WANDB_DIR" "$MPLCONFIGDIR"

echo "== notebooks and package in sync (exported into an empty folder), notebooks clean (at ${SECONDS} s)"
NBDEV_BIN=$PWD/.venv/bin bash tools/check_sync.sh

echo "== nbdev_test (every notebook) (at ${SECONDS} s)"
.venv/bin/nbdev_test --n_workers 2 --timing

echo "== documentation site (mkdocs --strict: every notebook a page, no broken link) into _site/ (at ${SECONDS} s)"
bash tools/build_docs.sh _site

echo "== pytest (at ${SECONDS} s)"
# two workers, each taking whole test files (module fixtures and file-level setups stay in one process)
.venv/bin/python -m pytest -q -n 2 --dist loadfile tests "$@"
echo "== test suite passed in ${SECONDS} s"
