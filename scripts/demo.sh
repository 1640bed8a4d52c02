#!/usr/bin/env bash
# The README's main job: set up, start a local PostgreSQL for the demo's sink, then `streamforge up`:
# control plane + gateway + embedded Kafka, with the demo flow (simulated devices -> validator -> aggregator
# + alarm rule -> PostgreSQL) stored and deployed on first start. Ctrl-C stops; the next run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMFORGE_NO_CHROMIUM=1 scripts/setup.sh  # the browser is for the editor tests, not the demo
pg_dir=${STREAMFORGE_DEMO_PG_DIR:-/var/tmp/streamforge-demo-postgres-$(id -un)}
dsn=$(scripts/local-postgres.sh start "$pg_dir" 55432)
echo "demo: PostgreSQL at $dsn (tables demo_telemetry, demo_aggregates, demo_alarms)"
.venv/bin/streamforge up --demo flows/demo.json "$@" &
gateway=$!
# Forward a stop to the gateway and wait for its clean shutdown, then stop PostgreSQL.
trap 'kill -TERM "$gateway" 2>/dev/null || true' INT TERM
status=0
wait "$gateway" || status=$?
if kill -0 "$gateway" 2>/dev/null; then wait "$gateway" || status=$?; fi
scripts/local-postgres.sh stop "$pg_dir" 55432
exit "$status"
