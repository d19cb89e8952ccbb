#!/usr/bin/env bash
# The board's review page on a diff of 5,000 changed lines (an agent that
# writes 10 new files of 500 lines): headless Chromium opens the page RUNS
# times (default 3), each in a fresh browser context (nothing cached), and
# prints for each how long from asking for the page to all 5,000 rows being
# in it, the page's own count from opening the review to the diff drawn, and
# how long opening it again from the board takes (page and diff renderer
# loaded already, as when a reader clicks Review).
#
#   bench/review.sh                      # release build
#   BRAID_BIN=target/debug/braid RUNS=5 bench/review.sh
#
# Needs: chromium (Debian's), node + npm (playwright-core is installed into
# crates/braid-server/tests/browser/node_modules), git.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${RUNS:-3}"
WORK="${WORK:-$(mktemp -d /tmp/braid-review-bench.XXXXXX)}"
BROWSER="$ROOT/crates/braid-server/tests/browser"
export NO_COLOR=1

if [ -z "${BRAID_BIN:-}" ]; then
  cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
  BRAID_BIN="$ROOT/target/release/braid"
fi
B="$(cd "$(dirname "$BRAID_BIN")" && pwd)/$(basename "$BRAID_BIN")"
(cd "$BROWSER" && [ -d node_modules ] || npm ci --no-audit --no-fund --silent)

P="$WORK/project"
rm -rf "$P" && mkdir -p "$P" && cd "$P"
git init -q -b main
git config user.email bench@example.com
git config user.name bench
echo start > README
git add -A && git commit -qm start
"$B" init >/dev/null
cat >> .braid/config.toml <<'EOF'

[[agent]]
name = "bulk"
command = ["sh", "-c", 'for i in 1 2 3 4 5 6 7 8 9 10; do seq 1 500 | sed "s/^/bulk $i line /" > bulk-$i.txt; done; git add -A; git commit -qm bulk']
EOF
ID=$("$B" add "5,000 new lines" --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -1)
"$B" run >/dev/null
echo "commit: $(git -C "$ROOT" rev-parse --short HEAD); braid: $B; task $ID; runs: $RUNS"
node "$ROOT/bench/review.bench.mjs" "$B" "$P" "$ID" "$RUNS"
