#!/usr/bin/env bash
# The main job: set up .venv, render the embedded Crafter frames (cached in data-cache/), train the `cpu`
# preset for its 10-minute budget, then evaluate the checkpoint on held-out Crafter worlds.
# Extra arguments go to `vqvae-kaggle train` (e.g. --preset default --budget-minutes 60 --out runs/x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=runs/cpu
args=("$@")
for ((i=0; i<${#args[@]}; i++)); do [ "${args[$i]}" = "--out" ] && out=${args[$((i+1))]}; done
.venv/bin/vqvae-kaggle train --preset cpu --out "$out" "$@"
.venv/bin/vqvae-kaggle eval --checkpoint "$out" --data val
