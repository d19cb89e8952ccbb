#!/usr/bin/env bash
# Runs the board's browser test: Debian's Chromium, playwright-core from npm,
# python3 (to seed the event log), and a braid built from this checkout (or
# $BRAID_BIN).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # Another install may hold the dpkg lock: wait for it rather than fail.
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q
  as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@"
}

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium" >&2
  apt_install chromium
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "run.sh: installing node and npm" >&2
  apt_install nodejs npm
fi

# The test appends events to the project's SQLite log with python3's sqlite3.
if ! command -v python3 >/dev/null 2>&1; then
  echo "run.sh: installing python3" >&2
  apt_install python3
fi

if [ ! -d "$here/node_modules" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi

if [ -z "${BRAID_BIN:-}" ]; then
  (cd "$root" && cargo build -p braid)
  target="${CARGO_TARGET_DIR:-target}"
  case "$target" in /*) ;; *) target="$root/$target" ;; esac
  BRAID_BIN="$target/debug/braid"
fi
export BRAID_BIN

cd "$here"
exec node board.test.mjs
