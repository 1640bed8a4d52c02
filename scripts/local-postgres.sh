#!/usr/bin/env bash
# A private PostgreSQL server for the demo and the tests: `local-postgres.sh start|stop DIR PORT`.
# Runs as the `postgres` user when invoked as root (initdb refuses root). Prints the DSN on start.
set -euo pipefail
action=${1:?usage: local-postgres.sh start|stop DIR PORT}
dir=$(realpath -m "${2:?data directory}")
port=${3:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "PostgreSQL server binaries not found: apt-get install postgresql" >&2; exit 1; }
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir" -U streamforge --auth=trust -E UTF8 >/dev/null
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null
    fi
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U streamforge -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='streamforge'" | grep -q 1 \
      || as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U streamforge streamforge
    echo "postgresql://streamforge@127.0.0.1:$port/streamforge"
    ;;
  stop)
    [ -f "$dir/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
  *) echo "usage: local-postgres.sh start|stop DIR PORT" >&2; exit 2 ;;
esac
