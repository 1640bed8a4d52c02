#!/usr/bin/env bash
# Set up StreamForge on a fresh Debian machine: system packages, a virtualenv, the embedded Kafka's jars.
# Idempotent: a second run changes nothing and finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)  # postgres sink: tests and demo
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)  # builds the editor
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)  # MQTT tests
command -v socat >/dev/null 2>&1 || need_apt+=(socat)  # pty pairs as serial links (Modbus RTU tests)
# Chromium only runs the editor's browser tests; scripts/demo.sh sets STREAMFORGE_NO_CHROMIUM=1.
[ "${STREAMFORGE_NO_CHROMIUM:-}" = 1 ] || command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "StreamForge needs Python 3.11+")'
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The editor: TypeScript built by Vite into editor/dist, which the control plane serves. Rebuilt when its
# sources or lock change; `npm ci` keeps to the committed lock.
editor_stamp=editor/dist/.built-$(cat editor/package-lock.json editor/index.html editor/vite.config.ts editor/tsconfig.json \
  $(find editor/src -type f | sort) | sha1sum | cut -c1-12)
if [ ! -f "$editor_stamp" ]; then
  echo "setup: building the editor (npm ci, tsc, vite)"
  npm --prefix editor ci --no-audit --no-fund --loglevel=error
  npm --prefix editor run --silent build
  touch "$editor_stamp"
fi

echo "setup: embedded Kafka jars (Maven Central, cached in ${STREAMFORGE_CACHE_DIR:-~/.cache/streamforge})"
.venv/bin/streamforge kafka install
