#!/usr/bin/env bash
# mypy over the streamforge namespace: a symlink tree maps the top-level folders to their import names,
# and every module is named explicitly (mypy does not walk symlinked package folders).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/streamforge
mkdir -p "$tree"
for pkg in engine nodes runtime; do ln -sfn "../../../$pkg" "$tree/$pkg"; done
modules=()
while IFS= read -r file; do
  module=${file%.py}; module=${module%/__init__}
  modules+=(-m "streamforge.${module//\//.}")
done < <(find engine nodes runtime -name '*.py' -not -path '*/templates/*' | sort)
MYPYPATH=build/typecheck exec .venv/bin/mypy "${modules[@]}" "$@"
