#!/usr/bin/env bash
# Agent soak for the engine: one `braid run --follow` keeps JOBS (default 64)
# fake agents busy for DURATION seconds (default 1800), then gets SIGINT and
# must wind down by itself. The agent (bench/soak/agent.sh) works 1-15 s and
# exits 0 (committing a file) or 1, or exits at once, or hangs past the agent
# timeout (20 s), or stalls silent past the stall limit (8 s); failures are
# retried (3 attempts, 100 ms-1 s backoff), one trivial gate (`true`) runs
# after each success. Tasks are imported in batches as the ready queue runs
# low, so every slot stays taken until the end.
#
# What it measures and checks:
#  - engine deaths: `braid run` vanished before the SIGINT, died of a signal
#    or panicked (exit 101), or did not exit within WAIT_EXIT s of it;
#  - overlapping agents: each agent appends `start`/`end` lines (task,
#    attempt, pid, ns) to a spans file; a start of a task while an earlier
#    agent of the same task has not ended is an overlap; a start with no
#    end once the run has exited is an agent left behind;
#  - every task ended: none left in_progress, no agent process alive (by
#    the dispatched events' process groups and by the agent's path);
#  - also: every agent started has its agent_finished event, nothing starts
#    more than 5 s after the SIGINT, no (task, attempt) dispatched twice;
#  - dispatches (`dispatched` events), done/failed/open counts, what the
#    agents did (fast/work/hang/stall) against what braid recorded
#    (exit 0/1, timed out, stalled, stopped), how long a hang or a stall
#    took to be stopped, and how busy the slots were;
#  - dispatch latency p50/p99 (the run's JSON summary);
#  - the engine's RSS, open fds and threads after the first dispatch, at
#    the end (before the SIGINT) and their maximum (sampled every 10 s).
# Prints a short report and one JSON line; exits 1 if a check fails. A 60 s
# run takes about 85 s in all (the last hung agents need their 20 s timeout).
#
#   bash bench/soak_agents.sh [DURATION_SECONDS]     JOBS=32 bash bench/soak_agents.sh 600
#
# Env: JOBS (64), WAIT_EXIT (90: seconds the run may take to exit after the
# SIGINT), MAX_TASKS (200000: most tasks imported), KEEP=1 (keep the temp
# dir), BRAID=PATH (use this binary; else target/release/braid is built).
# Needs: git, python3, GNU coreutils, procps (pgrep, ps).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${1:-1800}"
JOBS="${JOBS:-64}"
WAIT_EXIT="${WAIT_EXIT:-90}"
MAX_TASKS="${MAX_TASKS:-200000}"
if [ -n "${BRAID:-}" ]; then
  B="$BRAID"
else
  B="$ROOT/target/release/braid"
  cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
fi
W="$(mktemp -d /tmp/braid-soak-agents.XXXXXX)"
P="$W/repo"
RUN_PID=
T0=
export NO_COLOR=1 BRAID_CACHE_DIR="$W/cache" SOAK_SPANS="$W/spans"
log() { echo "[soak $(date +%T)] $*" >&2; }

# Leftovers: processes of the agents the run started, found by the agent's
# path (unique to this temp dir) and by the dispatched events' process
# groups. pids wrap fast here (pid_max is often 32768), so a group counts
# only while its id was not given to a new leader since: a pgid cannot be
# reused while any process of the group lives, so if a process with that pid
# exists and started at another time than the recorded leader, the group is
# gone (the same check braid makes with the `started` it records).
leftover_pids() {
  {
    pgrep -f "$W/agent.sh" || true
    [ -s "$W/run.jsonl" ] && python3 - "$W/run.jsonl" <<'PY' || true
import json, os, sys
groups = {}
for line in open(sys.argv[1]):
    if '"kind":"dispatched"' in line:
        p = json.loads(line)["payload"]
        if "pgid" in p:
            groups[p["pgid"]] = p["started"]
procs = {}
for d in os.listdir("/proc"):
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        procs[int(d)] = (int(f[2]), int(f[19]))   # pgid, start (ticks since boot)
    except (ValueError, OSError, IndexError):
        pass
for pid, (pgid, _) in procs.items():
    leader = procs.get(pgid)
    if pgid in groups and (leader is None or leader[1] == groups[pgid]):
        print(pid)
PY
  } | sort -u | grep -vx "$$" || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then kill -KILL "$RUN_PID" 2>/dev/null || true; fi
  local p
  for p in $(leftover_pids); do kill -KILL "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the project ------------------------------------------------------------
cp "$ROOT/bench/soak/agent.sh" "$W/agent.sh" && chmod +x "$W/agent.sh"
: >"$SOAK_SPANS"
mkdir -p "$P" && cd "$P"
git init -q -b main && git config user.email soak@braid && git config user.name soak
echo soak >README && git add README && git commit -qm init
"$B" init >/dev/null
cat >.braid/config.toml <<CFG
[run]
jobs = $JOBS
max_attempts = 3
backoff = { base = "100ms", cap = "1s" }
lease = "20s"
kill_grace = "2s"
shutdown_grace = "30s"
max_dispatches = 10000000

[cache]
enabled = false

[[agent]]
name = "soak"
command = ["$W/agent.sh"]
timeout = "20s"
stall = "8s"

[[gate]]
name = "true"
command = ["true"]
CFG

# Imports $1 more tasks (ids soak-000001, ...) in one transaction.
SEEDED=0
add_tasks() {
  local n=$1 i ts
  [ $((SEEDED + n)) -le "$MAX_TASKS" ] || n=$((MAX_TASKS - SEEDED))
  [ "$n" -gt 0 ] || return 0
  ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  {
    echo '{"record":"braid-export","version":1}'
    for ((i = SEEDED + 1; i <= SEEDED + n; i++)); do
      printf '{"record":"task","id":"soak-%06d","title":"soak task %d","type":"task","priority":2,"state":"open","created_at":"%s","updated_at":"%s","deps":[]}\n' "$i" "$i" "$ts" "$ts"
    done
  } >"$W/batch.jsonl"
  # all or nothing: a failed import is tried again with the same ids
  "$B" import "$W/batch.jsonl" >/dev/null || { log "importing $n tasks failed"; return 0; }
  SEEDED=$((SEEDED + n))
}
json_num() { sed -nE "s/.*\"$1\": ?([0-9]+).*/\1/p" | head -1; }
ready_now() { "$B" health --json | json_num ready; }

# One line per sample: TAG EPOCH RSS_KiB FDS THREADS CPU_TICKS (nothing once
# the run is gone).
SAMPLES="$W/samples"
sample() {
  local rss thr fds cpu
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$RUN_PID/status" 2>/dev/null) || return 0
  thr=$(awk '/^Threads:/ { print $2 }' "/proc/$RUN_PID/status" 2>/dev/null) || return 0
  cpu=$(sed -E 's/.*\) //' "/proc/$RUN_PID/stat" 2>/dev/null | awk '{ print $12 + $13 }') || return 0
  fds=$(ls "/proc/$RUN_PID/fd" 2>/dev/null | wc -l)
  [ -n "$rss" ] && echo "$1 $(date +%s) $rss $fds $thr $cpu" >>"$SAMPLES"
  return 0
}
dispatched_so_far() { grep -c '"kind":"dispatched"' "$W/run.jsonl" 2>/dev/null || true; }

# --- the run ----------------------------------------------------------------
add_tasks $((JOBS * 3))
log "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); duration ${DURATION}s, jobs $JOBS, temp dir $W"
"$B" run --follow --json >"$W/run.jsonl" 2>"$W/run.err" &
RUN_PID=$!
T0=$(date +%s)
END=$((T0 + DURATION))
deaths=0
died_early=false

for _ in $(seq 1 300); do   # the first dispatch, within 30 s
  grep -q '"kind":"dispatched"' "$W/run.jsonl" 2>/dev/null && break
  kill -0 "$RUN_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q '"kind":"dispatched"' "$W/run.jsonl" || log "no dispatch within 30 s"
sample start

# Keep the ready queue at least 2*JOBS deep; sample every 10 s.
next_sample=$(( $(date +%s) + 10 ))
while [ "$(date +%s)" -lt "$END" ]; do
  if ! kill -0 "$RUN_PID" 2>/dev/null; then died_early=true; break; fi
  r=$(ready_now || echo 0)
  if [ "${r:-0}" -lt $((JOBS * 2)) ]; then add_tasks $((JOBS * 2)); fi
  if [ "$(date +%s)" -ge "$next_sample" ]; then
    sample tick
    next_sample=$(( $(date +%s) + 10 ))
    log "t+$(( $(date +%s) - T0 ))s: $(dispatched_so_far) agents started, ready ${r:-?}, seeded $SEEDED, rss $(tail -1 "$SAMPLES" | cut -d' ' -f3) KiB, fds $(tail -1 "$SAMPLES" | cut -d' ' -f4)"
  fi
  sleep 2
done

# --- wind down --------------------------------------------------------------
rc=
exited_in_time=true
if $died_early; then
  deaths=1
  wait "$RUN_PID" && rc=0 || rc=$?
  log "braid run died before the SIGINT (exit status $rc)"
else
  sample end
  T_INT=$(date +%s%N)
  log "SIGINT after $(( $(date +%s) - T0 ))s; waiting up to ${WAIT_EXIT}s for the run to exit"
  kill -INT "$RUN_PID"
  for _ in $(seq 1 $((WAIT_EXIT * 10))); do
    kill -0 "$RUN_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$RUN_PID" 2>/dev/null; then
    exited_in_time=false
    deaths=1
    log "braid run did not exit within ${WAIT_EXIT}s of the SIGINT; killing it"
    kill -KILL "$RUN_PID" 2>/dev/null || true
  fi
  wait "$RUN_PID" && rc=0 || rc=$?
  # Died of a signal (status 128+n) or panicked (101): a death.
  if $exited_in_time && { [ "$rc" -gt 128 ] || [ "$rc" -eq 101 ]; }; then deaths=1; fi
fi
T_EXIT=$(date +%s%N)
RUN_PID=
sleep 1   # agents' last `end` lines
alive=$(leftover_pids | tr '\n' ' ')
alive_detail=$(for p in $alive; do ps -o pid=,pgid=,etimes=,args= -p "$p" 2>/dev/null; done || true)
"$B" health --json >"$W/health.json"
"$B" events --json >"$W/events.jsonl"

# --- report -----------------------------------------------------------------
DURATION=$DURATION JOBS=$JOBS SEEDED=$SEEDED RC=$rc DEATHS=$deaths T_INT=${T_INT:-0} T_EXIT=$T_EXIT \
ALIVE="$alive" ALIVE_DETAIL="$alive_detail" python3 - "$W" <<'PY'
import collections, json, os, sys
W = sys.argv[1]
env = os.environ
duration, jobs, seeded = int(env["DURATION"]), int(env["JOBS"]), int(env["SEEDED"])
rc, deaths = int(env["RC"]), int(env["DEATHS"])
t_int_ns = int(env["T_INT"]) or None
t_exit_ns = int(env["T_EXIT"])
alive = env["ALIVE"].split()
alive_detail = env["ALIVE_DETAIL"].strip()

health = json.load(open(f"{W}/health.json"))
by = health.get("by_state", {})
summary = None
other_err = []
for line in open(f"{W}/run.err"):
    line = line.strip()
    if not line:
        continue
    try:
        o = json.loads(line)
        if isinstance(o, dict) and "dispatch_latency_ms" in o:
            summary = o
            continue
    except ValueError:
        pass
    other_err.append(line)

# The event log (the store's, complete) and the run's stdout.
events = [json.loads(l) for l in open(f"{W}/events.jsonl") if l.strip()]
disp = [e for e in events if e["kind"] == "dispatched"]
run_disp = sum(1 for l in open(f"{W}/run.jsonl") if '"kind":"dispatched"' in l)
finished = [e for e in events if e["kind"] == "agent_finished"]
outcomes = collections.Counter()
for e in finished:
    x = e["payload"].get("exit", "")
    outcomes["stalled" if x.startswith("stalled") else "timed out" if x.startswith("timed out")
             else "exit 0" if x == "exit 0" else "made no changes" if x.startswith("made no")
             else "exit 1" if x == "exit 1" else x] += 1
released = collections.Counter(e["payload"].get("reason") for e in events if e["kind"] == "released")
retries = sum(1 for e in events if e["kind"] == "retrying")
rescued = sum(1 for e in events if e["kind"] == "rescued")   # our own lease lapsed
dup_attempts = [k for k, n in collections.Counter((e["task"], e["payload"].get("attempt")) for e in disp).items() if n > 1]
done_twice = [t for t, n in collections.Counter(e["task"] for e in events
              if e["kind"] == "state_changed" and e["payload"].get("to") == "done").items() if n > 1]
over_attempts = [t for t, n in collections.Counter(e["task"] for e in disp).items() if n > 3]

# Spans: start/end lines of every agent.
spans = {}
order = []
for line in open(f"{W}/spans"):
    f = line.split()
    if len(f) < 5:
        continue
    key = (f[1], f[2], f[3])
    if f[0] == "start":
        spans[key] = {"task": f[1], "start": int(f[4]), "how": f[5] if len(f) > 5 else "?", "end": None, "why": None}
        order.append(key)
    elif f[0] == "end" and key in spans:
        spans[key]["end"] = int(f[4])
        spans[key]["why"] = " ".join(f[5:])
by_task = collections.defaultdict(list)
for k in order:
    by_task[spans[k]["task"]].append(spans[k])
overlaps = []
for t, ss in by_task.items():
    ss.sort(key=lambda s: s["start"])
    open_until = None   # the latest end of the earlier spans (inf: one never ended)
    for s in ss:
        if open_until is not None and s["start"] < open_until:
            overlaps.append(t)
        e = s["end"] if s["end"] is not None else float("inf")
        open_until = e if open_until is None else max(open_until, e)
no_end = [k for k, s in spans.items() if s["end"] is None]
starts = sorted(s["start"] for s in spans.values())
fill_s = round((starts[jobs - 1] - starts[0]) / 1e9, 2) if len(starts) >= jobs else None
late = [(st - t_int_ns) / 1e9 for st in starts if t_int_ns and st > t_int_ns]
launched = sum(1 for e in disp if "pgid" in e["payload"])
hows = collections.Counter(s["how"] for s in spans.values())
def took(how):
    d = sorted((s["end"] - s["start"]) / 1e9 for s in spans.values() if s["how"] == how and s["end"])
    return (round(d[0], 1), round(d[len(d) // 2], 1), round(d[-1], 1)) if d else None
# Busy slots: mean agents alive between the first start and the SIGINT.
busy = None
if spans and t_int_ns:
    t0 = min(s["start"] for s in spans.values())
    alive_ns = sum(max(0, min(s["end"] or t_int_ns, t_int_ns) - s["start"]) for s in spans.values() if s["start"] < t_int_ns)
    busy = alive_ns / (t_int_ns - t0) if t_int_ns > t0 else None

samples = [l.split() for l in open(f"{W}/samples")] if os.path.exists(f"{W}/samples") else []
def smp(tag):
    r = [s for s in samples if s[0] == tag]
    return {"rss_kib": int(r[0][2]), "fds": int(r[0][3]), "threads": int(r[0][4])} if r else None
hz = os.sysconf("SC_CLK_TCK")
cpu_s = round((int(samples[-1][5]) - int(samples[0][5])) / hz, 1) if len(samples) > 1 else None
mx = {"rss_kib": max((int(s[2]) for s in samples), default=None),
      "fds": max((int(s[3]) for s in samples), default=None),
      "threads": max((int(s[4]) for s in samples), default=None)}
start, end = smp("start"), smp("end")
lat = (summary or {}).get("dispatch_latency_ms") or {}
wind_down = round((t_exit_ns - t_int_ns) / 1e9, 1) if t_int_ns else None

in_progress = by.get("in_progress", 0)
checks = {
    "engine_deaths": deaths == 0,
    "overlaps": not overlaps,
    "starts_without_end": not no_end,
    "in_progress_left": in_progress == 0,
    "agents_alive": not alive,
    "dispatched_something": len(disp) > 0,
    # every agent started has its agent_finished event
    "agents_finished": len(finished) == launched,
    # nothing new after the first signal (a turn under way may finish)
    "no_dispatch_after_sigint": not [x for x in late if x > 5],
}
ok = all(checks.values())
res = {
    "ok": ok, "duration_s": duration, "jobs": jobs, "tasks_seeded": seeded,
    "dispatches": len(disp), "dispatches_run_stdout": run_disp,
    "claims": (summary or {}).get("dispatched"),
    "state": {k: by.get(k, 0) for k in ("done", "failed", "open", "in_progress", "review", "cancelled")},
    "engine_deaths": deaths, "run_exit": rc, "wind_down_s": wind_down,
    "overlaps": len(overlaps), "starts_without_end": len(no_end), "agents_alive": len(alive),
    "every_task_ended": in_progress == 0 and not alive and not no_end,
    "dispatch_latency_ms": {k: lat.get(k) and round(lat[k], 2) for k in ("p50", "p99")},
    "slots_filled_s": fill_s, "starts_after_sigint": len(late),
    "agents_finished": len(finished), "engine_cpu_s": cpu_s,
    "busy_slots_mean": round(busy, 1) if busy is not None else None,
    "behaviours": dict(hows), "outcomes": dict(outcomes), "retries": retries,
    "released": sum(released.values()),
    "hang_stopped_s": took("hang"), "stall_stopped_s": took("stall"),
    "duplicate_task_attempts": len(dup_attempts), "done_twice": len(done_twice),
    "over_max_attempts": len(over_attempts), "rescued": rescued,
    "rss_kib": {"start": start and start["rss_kib"], "end": end and end["rss_kib"], "max": mx["rss_kib"]},
    "fds": {"start": start and start["fds"], "end": end and end["fds"], "max": mx["fds"]},
    "threads": {"start": start and start["threads"], "end": end and end["threads"], "max": mx["threads"]},
    "stderr_other_lines": len(other_err),
    "failed_checks": [k for k, v in checks.items() if not v],
}
s = res["state"]
print(f"""
== braid agent soak: {duration} s, jobs {jobs} ==
tasks seeded        {seeded}
agents started      {len(disp)} (dispatched events; {res['claims']} claims), {retries} retries, {len(finished)} agent_finished
slots               mean busy {res['busy_slots_mean']} of {jobs}; the first {jobs} agents started over {fill_s} s
after the SIGINT    {len(late)} agents started{f" (latest +{max(late):.2f} s)" if late else ""}; run exited after {wind_down} s
agents did          {dict(hows)}
braid recorded      {dict(outcomes)}; released {dict(released)}
hang stopped after  {res['hang_stopped_s']} s (min/median/max; timeout 20 s + kill_grace 2 s)
stall stopped after {res['stall_stopped_s']} s (stall 8 s, looked at once per period)
tasks at the end    done {s['done']}, failed {s['failed']}, open {s['open']}, in_progress {s['in_progress']}
engine deaths       {deaths} (run exit status {rc})
overlapping agents  {len(overlaps)}; starts with no end {len(no_end)}; agent processes alive {len(alive)}
dispatch latency    p50 {res['dispatch_latency_ms']['p50']} ms, p99 {res['dispatch_latency_ms']['p99']} ms (run summary)
engine RSS (MiB)    start {start and round(start['rss_kib'] / 1024, 1)}, end {end and round(end['rss_kib'] / 1024, 1)}, max {mx['rss_kib'] and round(mx['rss_kib'] / 1024, 1)}
engine fds          start {start and start['fds']}, end {end and end['fds']}, max {mx['fds']}
engine threads      start {start and start['threads']}, end {end and end['threads']}, max {mx['threads']}; CPU {cpu_s} s from start to end
other invariants    duplicate (task, attempt) dispatches {len(dup_attempts)}, done twice {len(done_twice)}, over 3 dispatches {len(over_attempts)}, rescued {rescued}
result              {'PASS' if ok else 'FAIL: ' + ', '.join(res['failed_checks'])}""")
if overlaps:
    print("overlapping tasks:", " ".join(sorted(set(overlaps))[:20]))
if no_end:
    print("starts with no end:", " ".join(" ".join(k) for k in no_end[:20]))
if alive_detail:
    print("alive:\n" + alive_detail)
if other_err:
    print(f"braid run stderr ({len(other_err)} other lines), last ones:")
    print("\n".join("  " + l[:300] for l in other_err[-10:]))
print(json.dumps(res, separators=(",", ":")))
sys.exit(0 if ok else 1)
PY
