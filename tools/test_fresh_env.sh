#!/usr/bin/env bash
# Run tests from a second, freshly made environment installed the plain way (python3 -m venv + pip install -e ".[dev]",
# with the constraints tools/setup.sh uses), not from .venv: proves that the suite needs no .venv, no particular working
# directory and no filled home folder. Usage: tools/test_fresh_env.sh [PYTEST ARGS...] (default: tests/test_sync.py);
# test paths are relative to the repository. The environment, home and working directory are temporary.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=${PYTHON:-python3}
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
t0=$SECONDS
"$py" -m venv "$scratch/env"
status=0   # as in tools/setup.sh: pip's own status decides, the filter only hides a warning about absent index folders
"$scratch/env/bin/python" -m pip install -q --no-compile --disable-pip-version-check -c tools/constraints.txt -e ".[dev]" \
  > "$scratch/pip.log" 2>&1 || status=$?
grep -v "is ignored: it is neither a file nor a directory" "$scratch/pip.log" >&2 || true
[ "$status" -eq 0 ] || { echo "fresh environment: pip install -e \".[dev]\" exited with $status (see above)" >&2; exit 1; }
echo "== fresh environment made and installed in $((SECONDS - t0)) s"
[ $# -gt 0 ] || set -- tests/test_sync.py
args=()
for a in "$@"; do case "$a" in tests/*) args+=("$repo/$a");; *) args+=("$a");; esac; done
mkdir -p "$scratch/home" "$scratch/cwd"
t1=$SECONDS
# An empty HOME and an unrelated working directory; PATH without .venv (the env's own bin folder is not put on it either:
# tests must find their tools through the interpreter that runs them).
(cd "$scratch/cwd" && env -u XDG_CACHE_HOME -u NBDEV_BIN HOME="$scratch/home" PATH=$(echo "$PATH" | tr : '\n' | grep -vxF "$repo/.venv/bin" | paste -sd:) \
   "$scratch/env/bin/python" -m pytest -q -p no:cacheprovider "${args[@]}")
echo "== tests from the fresh environment passed in $((SECONDS - t1)) s (all told $((SECONDS - t0)) s)"
