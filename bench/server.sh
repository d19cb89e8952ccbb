#!/usr/bin/env bash
# Server benchmarks (issue: the live server), all on this machine, the load
# generators as separate processes on loopback:
#   1. wrk on GET /api/ready (a 10k-task project, 50 tasks per answer) and
#      on POST /api/tasks;
#   2. fan-out: 1,000 WebSocket clients in one room while events are
#      published at 100/s (bench/wsload), then a rate sweep for the highest
#      rate with p99 <= 50 ms; the same client against a socket.io server
#      with rooms (bench/socketio), same run;
#   3. RSS of `braid serve` holding 10,000 idle WebSocket connections;
#   4. task file edit -> WebSocket event latency over 200 edits.
#
#   bench/server.sh                 # everything
#   SECONDS_PER=5 bench/server.sh   # shorter fan-out runs
#
# Needs: wrk (apt-get install wrk), node + npm (socket.io is installed into
# bench/socketio/node_modules), python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-$(mktemp -d /tmp/braid-server-bench.XXXXXX)}"
SECS="${SECONDS_PER:-10}"
B="$ROOT/target/release/braid"
L="$ROOT/target/release/braid-wsload"
export NO_COLOR=1
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

section() { printf '\n## %s\n' "$*"; }

cargo build --release -q -p braid -p braid-wsload --manifest-path "$ROOT/Cargo.toml"
(cd "$ROOT/bench/socketio" && [ -d node_modules ] || npm ci --no-audit --no-fund --silent)
ulimit -n "$(ulimit -Hn)"

# A project whose limits do not get in the benchmark's way.
project() {
  rm -rf "$WORK/$1" && mkdir -p "$WORK/$1" && cd "$WORK/$1"
  "$B" init >/dev/null
  cat > .braid/config.toml <<EOF
[server]
rate_per_second = 10000000
rate_burst = 10000000
max_connections_per_ip = 50000
max_connections = 50000
EOF
}

# Starts braid serve on a free port; sets PORT and SPID.
serve() {
  "$B" serve --bind 127.0.0.1:0 "$@" > serve.log 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  for _ in $(seq 200); do
    PORT=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' serve.log | head -1)
    [ -n "$PORT" ] && break
    sleep 0.05
  done
  [ -n "$PORT" ] || { cat serve.log; exit 1; }
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "# braid server benchmark ($(nproc) cores), work dir $WORK"

section "1. wrk: GET /api/ready and POST /api/tasks"
project wrk
python3 - > tasks.jsonl <<'EOF'
import json
print(json.dumps({"record": "braid-export", "version": 1}))
ts = "2026-01-01T00:00:00Z"
for i in range(10000):
    print(json.dumps({"record": "task", "id": f"t{i}", "title": f"task {i} with a title of ordinary length",
                      "type": "task", "priority": i % 5, "state": "open", "parent": None, "labels": ["bench"],
                      "description": "x" * 200, "created_at": ts, "updated_at": ts, "closed_at": None, "deps": []}))
EOF
"$B" import tasks.jsonl > /dev/null
serve --no-sync
echo "ready answer: $(curl -s "http://127.0.0.1:$PORT/api/ready?limit=50" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d), "tasks")')"
wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:$PORT/api/ready?limit=50" | grep -E "Requests/sec|Latency|99%"
cat > post.lua <<'EOF'
wrk.method = "POST"
wrk.body = '{"title":"made by wrk"}'
wrk.headers["Content-Type"] = "application/json"
EOF
wrk -t2 -c16 -d"${SECS}s" --latency -s post.lua "http://127.0.0.1:$PORT/api/tasks" | grep -E "Requests/sec|Latency|99%|Non-2xx"
kill "$SPID"; wait "$SPID" 2>/dev/null || true

section "2. fan-out: 1,000 WebSocket clients in one room, events published over HTTP"
project fanout
serve --no-sync
"$L" fanout --proto braid --ws "ws://127.0.0.1:$PORT/ws" --post "127.0.0.1:$PORT" --clients 1000 --rate 100 --seconds "$SECS"
kill "$SPID"; wait "$SPID" 2>/dev/null || true
SIO_PORT=$((PORT + 1))
node "$ROOT/bench/socketio/server.js" "$SIO_PORT" > sio.log 2>&1 &
SIO=$!; PIDS+=("$SIO")
for _ in $(seq 100); do grep -q listening sio.log && break; sleep 0.05; done
"$L" fanout --proto socketio --ws "ws://127.0.0.1:$SIO_PORT/socket.io/?EIO=4&transport=websocket" --post "127.0.0.1:$SIO_PORT" --clients 1000 --rate 100 --seconds "$SECS"
kill "$SIO"; wait "$SIO" 2>/dev/null || true

section "2b. rate sweep (1,000 clients): p99 per published rate"
for rate in 200 400 800 1600; do
  project "sweep$rate"
  serve --no-sync
  "$L" fanout --proto braid --ws "ws://127.0.0.1:$PORT/ws" --post "127.0.0.1:$PORT" --clients 1000 --rate "$rate" --seconds 5
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
done

section "3. RSS with 10,000 idle WebSocket connections"
project idle
serve --no-sync
before=$(rss_kib "$SPID")
mkfifo hold
"$L" idle --ws "ws://127.0.0.1:$PORT/ws" --clients 10000 < hold > idle.out &
LOADPID=$!; PIDS+=("$LOADPID")
exec 3> hold
for _ in $(seq 1200); do grep -q '"open"' idle.out 2>/dev/null && break; sleep 0.1; done
cat idle.out
sleep 1
after=$(rss_kib "$SPID")
echo "braid serve RSS: ${before} KiB before, ${after} KiB with 10,000 idle WebSocket connections ($(( (after - before) * 1024 / 10000 )) bytes per connection)"
exec 3>&-
wait "$LOADPID" 2>/dev/null || true
kill "$SPID"; wait "$SPID" 2>/dev/null || true

section "4. task file edit -> WebSocket event, 200 edits"
project edits
serve
"$L" edits --ws "ws://127.0.0.1:$PORT/ws" --post "127.0.0.1:$PORT" --dir "$WORK/edits/.braid/tasks" --edits 200
kill "$SPID"; wait "$SPID" 2>/dev/null || true
