#!/usr/bin/env bash
# Drives `braid mcp` with the official MCP client SDK (PyPI `mcp`), installed
# into a virtualenv under target/ on first use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
venv="$target/mcp-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mcp" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
fi
if [ -z "${BRAID_BIN:-}" ]; then
  (cd "$root" && cargo build -q -p braid)
  BRAID_BIN="$target/debug/braid"
fi
export BRAID_BIN
exec "$venv/bin/python" "$here/test_mcp.py"
