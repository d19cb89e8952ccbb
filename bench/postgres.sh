#!/usr/bin/env bash
# PostgreSQL benchmark (issue: several nodes on PostgreSQL), against the
# local server. Two braid nodes (two processes of bench/pgload, each with its
# own pool) share one database:
#   1. claim+complete throughput of trivial tasks (seeded by one bulk import);
#   2. insert -> claim latency on the other node (woken by LISTEN/NOTIFY);
#   3. the peers, pg-boss and graphile-worker, on the same server and N.
#
#   bench/postgres.sh            (PG=postgres://root@127.0.0.1:5432/test by default)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG="${PG:-postgres://root@127.0.0.1:5432/test}"
N="${N:-20000}"
cargo build --release -q -p braid-pgload --manifest-path "$ROOT/Cargo.toml"
P="$ROOT/target/release/braid-pgload"
S="braid_bench_$$"
trap 'psql "$PG" -qc "DROP SCHEMA IF EXISTS $S CASCADE" >/dev/null 2>&1 || true' EXIT
psql "$PG" -qc "CREATE SCHEMA $S"
sep='?'; case "$PG" in *\?*) sep='&';; esac
U="$PG${sep}options=-c%20search_path%3D$S"
echo "== seed $N tasks"
"$P" seed "$U" "$N"
echo "== two nodes drain them (4 workers each)"
"$P" drain "$U" 4 & A=$!
"$P" drain "$U" 4 & Bp=$!
wait $A $Bp
echo "== insert on one node, claim on the other (500 tasks, 10 ms apart)"
"$P" claim "$U" 500 & C=$!
sleep 0.5
"$P" insert "$U" 500 10
wait $C
echo "== the peers on the same server: pg-boss and graphile-worker (npm, bench/pgpeers)"
(cd "$ROOT/bench/pgpeers" && npm ci --no-audit --no-fund --silent && node peers.js "$PG" "$N")
