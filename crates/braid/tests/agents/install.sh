#!/usr/bin/env bash
# Installs the real agent CLIs, pinned, from the npm registry into
# target/agent-clis/ (or $CARGO_TARGET_DIR/agent-clis/):
#   @anthropic-ai/claude-code  (a native binary in its platform package)
#   @openai/codex              (a node launcher + a static musl binary in its platform package)
# Idempotent: does nothing when the pinned versions are already there.
#
# Prints, on success (exit 0), lines a caller can eval or parse:
#   CLAUDE_BIN=/abs/path/to/claude            (the native binary)
#   CODEX_BIN=/abs/path/to/codex              (npm's launcher: needs node on PATH)
#   CODEX_NATIVE_BIN=/abs/path/to/codex       (the static binary it runs)
# and writes the same lines to target/agent-clis/bins.env.
#
# Exit 3, with a line starting "SKIPPED: real agent CLIs (npm unreachable: ...)",
# when the registry cannot be reached (or node/npm are missing and cannot be
# had): a test calling this should then skip, loudly. Exit 1 on any other
# failure.
set -euo pipefail

CLAUDE_CODE_VERSION=2.1.332
CODEX_VERSION=0.171.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
dir="$target/agent-clis"
mkdir -p "$dir"

skip() {
  echo "SKIPPED: real agent CLIs (npm unreachable: $*)" >&2
  echo "SKIPPED: real agent CLIs (npm unreachable: $*)"
  exit 3
}

# One installer at a time (tests may call this in parallel).
exec 9>"$dir/.lock"
flock 9

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: node/npm missing; installing Debian's nodejs and npm" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >&2 \
      || skip "node/npm are not installed and apt-get could not install them"
  else
    skip "node/npm are not installed"
  fi
fi

# The executables of an installed tree, or nothing.
claude_bin() {
  local v="$dir/node_modules/.bin/claude"
  if [ -x "$v" ] && "$v" --version 2>/dev/null | grep -qF "$CLAUDE_CODE_VERSION"; then
    echo "$v"; return
  fi
  # npm may not have run the postinstall that puts the native binary in
  # place of bin/claude.exe: use the platform package's binary directly.
  local p
  for p in "$dir"/node_modules/@anthropic-ai/claude-code-linux-*/claude; do
    if [ -x "$p" ] && "$p" --version 2>/dev/null | grep -qF "$CLAUDE_CODE_VERSION"; then
      echo "$p"; return
    fi
  done
}
codex_bin() {
  local v="$dir/node_modules/.bin/codex"
  if [ -x "$v" ] && "$v" --version 2>/dev/null | grep -qF "$CODEX_VERSION"; then
    echo "$v"
  fi
}
# The static binary the launcher above runs (node_modules/.bin/codex is a
# node script that spawns it): callers may run it directly, without node.
codex_native_bin() {
  local p
  for p in "$dir"/node_modules/@openai/codex-linux-*/vendor/*/bin/codex; do
    if [ -x "$p" ] && "$p" --version 2>/dev/null | grep -qF "$CODEX_VERSION"; then
      echo "$p"; return
    fi
  done
}

installed() {
  [ -n "$(claude_bin)" ] && [ -n "$(codex_bin)" ]
}

if ! installed; then
  cat >"$dir/package.json" <<EOF
{
  "name": "braid-agent-clis",
  "private": true,
  "description": "Real agent CLIs for braid's tests; written by crates/braid/tests/agents/install.sh",
  "dependencies": {
    "@anthropic-ai/claude-code": "$CLAUDE_CODE_VERSION",
    "@openai/codex": "$CODEX_VERSION"
  }
}
EOF
  log="$dir/npm-install.log"
  echo "install.sh: npm install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION @openai/codex@$CODEX_VERSION into $dir (~800 MB)" >&2
  npm_rc=0
  (cd "$dir" && timeout 900 npm install --no-audit --no-fund --no-update-notifier \
      --fetch-retries=1 --fetch-timeout=60000 >"$log" 2>&1) || npm_rc=$?
  if [ "$npm_rc" -ne 0 ]; then
    net='ENOTFOUND|ETIMEDOUT|ECONNREFUSED|ECONNRESET|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH|socket hang up|network'
    if grep -Eq "$net" "$log"; then
      skip "$(npm config get registry 2>/dev/null): $(grep -Em1 "$net" "$log" | cut -c1-200)"
    fi
    if [ "$npm_rc" -eq 124 ]; then
      skip "npm install did not finish in 900 s"
    fi
    echo "install.sh: npm install failed; its output:" >&2
    cat "$log" >&2
    exit 1
  fi
  if ! installed; then
    echo "install.sh: installed, but the executables do not report the pinned versions:" >&2
    ls -la "$dir/node_modules/.bin" >&2 || true
    "$dir/node_modules/.bin/claude" --version >&2 || true
    "$dir/node_modules/.bin/codex" --version >&2 || true
    exit 1
  fi
fi

out="CLAUDE_BIN=$(claude_bin)
CODEX_BIN=$(codex_bin)
CODEX_NATIVE_BIN=$(codex_native_bin)"
printf '%s\n' "$out" >"$dir/bins.env"
printf '%s\n' "$out"
