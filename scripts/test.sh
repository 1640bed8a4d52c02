#!/usr/bin/env bash
# The README's test command: set up, lint, type-check, build the docs (strict), then the full suite against real Kafka.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# One command a line: under `set -e` a failure on the left of `&&` does not stop the script.
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"; scripts/typecheck.sh
echo "== docs"; NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true .venv/bin/mkdocs build --strict --quiet
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
