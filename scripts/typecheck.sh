#!/usr/bin/env bash
# mypy over the streamforge namespace, the tests and the benchmarks. A symlink tree maps the top-level
# folders to their import names, and every module is named explicitly (mypy does not walk symlinked folders).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/streamforge
mkdir -p "$tree"
for pkg in engine nodes runtime sdk; do ln -sfn "../../../$pkg" "$tree/$pkg"; done
modules=()
while IFS= read -r file; do
  module=${file%.py}; module=${module%/__init__}
  case "$file" in
    tests/*) modules+=(-m "${module//\//.}") ;;
    bench/*) modules+=(-m "${module#bench/}") ;;
    *) modules+=(-m "streamforge.${module//\//.}") ;;
  esac
done < <(find engine nodes runtime sdk tests bench -name '*.py' -not -path '*/templates/*' | sort)
MYPYPATH=build/typecheck:.:bench exec .venv/bin/mypy "${modules[@]}" "$@"
