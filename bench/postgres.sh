#!/usr/bin/env bash
# PostgreSQL benchmark (issue: several nodes on PostgreSQL), against the
# local server. Two braid nodes (two processes of bench/pgload, each with its
# own pool) share one database:
#   1. claim+complete throughput of trivial tasks (seeded by one bulk import),
#      drained by batched workers: BATCH claims per transaction, then BATCH
#      completions per transaction; then the same with other shapes;
#   2. insert -> claim latency on the other node (woken by LISTEN/NOTIFY);
#   3. the peers, pg-boss and graphile-worker, on the same server and N.
#
#   bench/postgres.sh            (PG=postgres://root@127.0.0.1:5432/test by default,
#                                 N=100000 tasks, BATCH=1000, WORKERS=1 per node,
#                                 RUNS=3 of the headline drain and of the latency run,
#                                 READY_N=1000000 tasks for the ready query,
#                                 PEERS_N=20000 jobs for the peers)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG="${PG:-postgres://root@127.0.0.1:5432/test}"
N="${N:-100000}"
BATCH="${BATCH:-1000}"
WORKERS="${WORKERS:-1}"
RUNS="${RUNS:-3}"
READY_N="${READY_N:-1000000}"
cargo build --release -q -p braid-pgload --manifest-path "$ROOT/Cargo.toml"
P="$ROOT/target/release/braid-pgload"
S="braid_bench_$$"
trap 'psql "$PG" -qc "DROP SCHEMA IF EXISTS $S CASCADE" >/dev/null 2>&1 || true' EXIT
sep='?'; case "$PG" in *\?*) sep='&';; esac
U="$PG${sep}options=-c%20search_path%3D$S"

# drain TASKS WORKERS BATCH: two nodes drain TASKS freshly seeded tasks.
drain() {
  psql "$PG" -qc "DROP SCHEMA IF EXISTS $S CASCADE" >/dev/null 2>&1
  psql "$PG" -qc "CREATE SCHEMA $S"
  "$P" seed "$U" "$1"
  local t0 t1
  t0=$(date +%s.%N)
  "$P" drain "$U" "$2" "$3" & local a=$!
  "$P" drain "$U" "$2" "$3" & local b=$!
  wait $a $b
  t1=$(date +%s.%N)
  echo "   two nodes x $2 worker(s), $3 per transaction: $1 tasks in $(echo "$t1 - $t0" | bc) s = $(echo "$1 / ($t1 - $t0)" | bc) tasks/s"
}

echo "== two nodes drain $N tasks ($WORKERS worker(s) each, $BATCH per transaction), $RUNS runs"
for _ in $(seq "$RUNS"); do drain "$N" "$WORKERS" "$BATCH"; done
echo "== other shapes"
drain "$N" 2 1000
drain "$N" 4 100
drain 20000 4 1
echo "== insert on one node, claim on the other (500 tasks, 10 ms apart), $RUNS runs"
for _ in $(seq "$RUNS"); do
  psql "$PG" -qc "DROP SCHEMA IF EXISTS $S CASCADE" >/dev/null 2>&1
  psql "$PG" -qc "CREATE SCHEMA $S"
  "$P" seed "$U" 0 >/dev/null
  "$P" claim "$U" 500 & C=$!
  sleep 0.5
  "$P" insert "$U" 500 10
  wait $C
done
echo "== braid ready --limit 50 and braid health at $READY_N tasks, whole process, 20 runs after 3 warm-ups"
cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
B="$ROOT/target/release/braid"
psql "$PG" -qc "DROP SCHEMA IF EXISTS $S CASCADE" >/dev/null 2>&1
psql "$PG" -qc "CREATE SCHEMA $S"
"$P" seed "$U" "$READY_N"
for cmd in "ready --limit 50" "health"; do
  for _ in 1 2 3; do BRAID_DB="$U" "$B" $cmd >/dev/null; done
  ms=$(for _ in $(seq 20); do
    t0=$(date +%s%N); BRAID_DB="$U" "$B" $cmd >/dev/null; t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000 ))
  done | sort -n | awk '{v[NR]=$1} END {printf "median %.1f ms (%.1f-%.1f)", v[int((NR+1)/2)]/1000, v[1]/1000, v[NR]/1000}')
  echo "   braid $cmd: $ms"
done
echo "== the peers on the same server: pg-boss and graphile-worker (npm, bench/pgpeers)"
# (20,000 jobs each by default: pg-boss drains its batches of 100 at ~200/s.)
(cd "$ROOT/bench/pgpeers" && npm ci --no-audit --no-fund --silent && node peers.js "$PG" "${PEERS_N:-20000}")
