#!/usr/bin/env bash
# PostgreSQL restarted under a running braid node: the node reconnects with
# backoff and carries on; every task is done exactly once. Restarts the local
# server (pg_ctlcluster), so .ci/run runs it on its own, after the test suite.
#
#   BRAID_TEST_POSTGRES=postgres://root@127.0.0.1:5432/db crates/braid/tests/postgres/restart.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../../.." && pwd)"
: "${BRAID_TEST_POSTGRES:?set BRAID_TEST_POSTGRES=postgres://...}"
CLUSTER="${PG_CLUSTER:-$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')}"
cargo build -q -p braid --manifest-path "$ROOT/Cargo.toml"
B="$ROOT/target/debug/braid"
WORK=$(mktemp -d)
SCHEMA="braid_restart_$$"
trap 'psql "$BRAID_TEST_POSTGRES" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
psql "$BRAID_TEST_POSTGRES" -qc "CREATE SCHEMA $SCHEMA"
sep='?'; case "$BRAID_TEST_POSTGRES" in *\?*) sep='&';; esac
export BRAID_DB="$BRAID_TEST_POSTGRES${sep}options=-c%20search_path%3D$SCHEMA"
export NO_COLOR=1 BRAID_CACHE_DIR="$WORK/cache"
cd "$WORK"
"$B" init >/dev/null
cat > .braid/config.toml <<'TOML'
[run]
jobs = 2
lease = "5s"
[[agent]]
name = "slow"
command = ["sh", "-c", "sleep 0.5"]
TOML
N=12
for i in $(seq 1 $N); do "$B" add "t$i" >/dev/null; done
"$B" run > run.log 2>&1 &
RUN=$!
# Restart once work is under way.
for _ in $(seq 1 100); do
  [ "$("$B" list --state in_progress --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -gt 0 ] && break
  sleep 0.05
done
echo "restarting PostgreSQL ($CLUSTER) while braid run is working"
pg_ctlcluster $CLUSTER restart
wait $RUN || { echo "braid run failed:"; cat run.log; exit 1; }
python3 - "$B" "$N" <<'PY'
import json, subprocess, sys
b, n = sys.argv[1], int(sys.argv[2])
tasks = json.loads(subprocess.check_output([b, "list", "--json"]))
states = [t["state"] for t in tasks]
assert states == ["done"] * n, states
done = {}
for line in subprocess.check_output([b, "events", "--json", "--limit", "100000"]).decode().splitlines():
    e = json.loads(line)
    if e["kind"] == "state_changed" and e["payload"]["to"] == "done":
        done[e["task"]] = done.get(e["task"], 0) + 1
assert sorted(done.values()) == [1] * n, done
print(f"restart: all {n} tasks done exactly once across a PostgreSQL restart")
PY
