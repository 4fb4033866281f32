#!/usr/bin/env bash
# The main job: set up .venv, render the embedded first-person Minecraft frames (the game runs in its own small
# environment, created on first use; frames cached in data-cache/), train the `cpu` preset for its budget, then
# evaluate the checkpoint on held-out worlds, as rendered for training and rendered at another scale and filter.
# Without OpenGL it says so in one line and uses Crafter instead. Extra arguments go to `vqvae-kaggle train`
# (e.g. --preset default --budget-minutes 60 --out runs/x, or --data crafter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=runs/cpu
args=("$@")
for ((i=0; i<${#args[@]}; i++)); do [ "${args[$i]}" = "--out" ] && out=${args[$((i+1))]}; done
.venv/bin/vqvae-kaggle train --preset cpu --out "$out" "$@"
.venv/bin/vqvae-kaggle eval --checkpoint "$out" --data val --data val-alt
