#!/usr/bin/env bash
# The README's main job: set up, then run StreamForge on its embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streamforge demo "$@"
