#!/usr/bin/env bash
# Runs the real Claude Code and Codex CLIs against model_server.mjs on
# loopback, one scenario at a time, and prints what each CLI printed, what
# it sent, its exit code and how long it took. Everything a scenario made is
# kept under $DEMO_OUT (default target/agent-demo/<scenario>/):
#   script.json     what the model server was told to answer
#   requests.jsonl  every request the CLI made (model_server's log)
#   stdout.jsonl    the CLI's structured output (stream-json / --json)
#   stderr.txt      the CLI's stderr
#   exit_code, seconds
# Checks the facts FORMATS.md relies on and ends with "N passed, N failed".
# Exit 3 (SKIPPED) when the CLIs cannot be installed (npm unreachable).
#
#   bash crates/braid/tests/agents/run_demo.sh [SCENARIO...]
# Scenarios: claude-write claude-resume claude-denied claude-429-limited
#            claude-429-long claude-kill claude-kill-resume claude-unreachable
#            codex-write codex-resume codex-429 codex-429-retries
#            codex-ratelimit-stream codex-unreachable codex-kill
#            codex-kill-resume   (default: these)
#            claude-429-default (slow: ~170 s of Claude's own retries)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
OUT="${DEMO_OUT:-$target/agent-demo}"

bins="$(bash "$here/install.sh")"
rc=$?
if [ $rc -eq 3 ]; then echo "$bins"; exit 3; fi
if [ $rc -ne 0 ]; then echo "install.sh failed ($rc)"; exit 1; fi
CLAUDE_BIN="$(sed -n 's/^CLAUDE_BIN=//p' <<<"$bins")"
CODEX_BIN="$(sed -n 's/^CODEX_BIN=//p' <<<"$bins")"
echo "claude: $CLAUDE_BIN ($("$CLAUDE_BIN" --version))"
echo "codex:  $CODEX_BIN ($("$CODEX_BIN" --version 2>/dev/null))"
SERVER="$here/model_server.mjs"
PATH_MIN="/usr/local/bin:/usr/bin:/bin"

passed=0 failed=0
check() { # check "what" command...
  local what="$1"; shift
  if "$@" >/dev/null 2>&1; then echo "  PASS: $what"; passed=$((passed + 1))
  else echo "  FAIL: $what"; failed=$((failed + 1)); fi
}

# ------------------------------------------------------------ helpers

# new_scenario NAME SCRIPT_JSON: a fresh folder with a git repo, a HOME,
# a CODEX_HOME, and the model server started on the script.
new_scenario() {
  S="$1"; D="$OUT/$1"
  rm -rf "$D"; mkdir -p "$D/repo" "$D/home" "$D/codex-home"
  printf '%s\n' "$2" >"$D/script.json"
  (cd "$D/repo" && git init -q && git config user.email t@t && git config user.name t \
    && echo "# demo" >README.md && git add README.md && git commit -qm init)
  start_server
  echo
  echo "=================================================================== $S"
}
start_server() {
  : >"$D/requests.jsonl"
  node "$SERVER" --script "$D/script.json" --log "$D/requests.jsonl" >"$D/port.txt" 2>"$D/server.err" &
  SRV_PID=$!
  for _ in $(seq 100); do [ -s "$D/port.txt" ] && break; sleep 0.05; done
  PORT="$(head -1 "$D/port.txt")"
}
stop_server() { kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null; }

# The environment a test gives Claude Code: nothing of the caller's, the
# server as the API, a fake key, and no traffic anywhere else. HTTPS_PROXY
# points at the server too, so any attempt to reach another host shows up in
# its log (kind "proxy") and is refused at once.
claude_env() {
  echo PATH="$PATH_MIN" HOME="$D/home" \
    ANTHROPIC_BASE_URL="http://127.0.0.1:$PORT" ANTHROPIC_API_KEY=sk-braid-test \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 \
    DISABLE_ERROR_REPORTING=1 \
    HTTPS_PROXY="http://127.0.0.1:$PORT" HTTP_PROXY="http://127.0.0.1:$PORT" NO_PROXY=127.0.0.1,localhost
}
codex_env() {
  echo PATH="$PATH_MIN" HOME="$D/home" CODEX_HOME="$D/codex-home" BRAID_TEST_API_KEY=sk-braid-test \
    HTTPS_PROXY="http://127.0.0.1:$PORT" HTTP_PROXY="http://127.0.0.1:$PORT" NO_PROXY=127.0.0.1,localhost
}
# CODEX_HOME/config.toml: the server as a model provider; no update check,
# no analytics, no feedback upload, no curated-plugin sync (github.com,
# chatgpt.com), and a connection failure fails instead of "waiting for
# network" forever. $1: extra provider keys (retries).
codex_config() {
  cat >"$D/codex-home/config.toml" <<EOF
model = "gpt-5.5"
model_provider = "braidtest"
check_for_update_on_startup = false

[model_providers.braidtest]
name = "braid test server"
base_url = "http://127.0.0.1:$PORT/v1"
env_key = "BRAID_TEST_API_KEY"
wire_api = "responses"
${1:-request_max_retries = 0
stream_max_retries = 0}

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
unbounded_connection_retries = false
EOF
}

# run NAME_OF_ENV_FN CMD...: runs in $D/repo with stdin from /dev/null,
# records stdout, stderr, exit code and wall time.
run() {
  local envfn="$1"; shift
  local t0 t1
  echo "\$ $*" | sed "s#$CLAUDE_BIN#claude#; s#$CODEX_BIN#codex#" >"$D/command.txt"
  t0=$(date +%s%N)
  (cd "$D/repo" && env -i $($envfn) "$@" </dev/null >"$D/stdout.jsonl" 2>"$D/stderr.txt")
  RC=$?
  t1=$(date +%s%N)
  echo "$RC" >"$D/exit_code"
  SECS=$(awk "BEGIN{printf \"%.2f\", ($t1-$t0)/1e9}")
  echo "$SECS" >"$D/seconds"
}
# run_in DIR NAME_OF_ENV_FN CMD...: like run, but in DIR/repo with DIR's
# HOME and CODEX_HOME (where an earlier scenario left its session), against
# this scenario's server; records into this scenario's folder.
run_in() {
  local dir="$1" envfn="$2"; shift 2
  local t0 t1
  echo "\$ $*   (in $(basename "$dir")'s repo, HOME and CODEX_HOME)" | sed "s#$CLAUDE_BIN#claude#; s#$CODEX_BIN#codex#" >"$D/command.txt"
  [ -f "$dir/codex-home/config.toml" ] && sed -i "s#http://127.0.0.1:[0-9]*/v1#http://127.0.0.1:$PORT/v1#" "$dir/codex-home/config.toml"
  rm -rf "$D/repo" "$D/home" "$D/codex-home"
  t0=$(date +%s%N)
  (cd "$dir/repo" && env -i $($envfn) HOME="$dir/home" CODEX_HOME="$dir/codex-home" "$@" </dev/null >"$D/stdout.jsonl" 2>"$D/stderr.txt")
  RC=$?
  t1=$(date +%s%N)
  echo "$RC" >"$D/exit_code"
  SECS=$(awk "BEGIN{printf \"%.2f\", ($t1-$t0)/1e9}")
  echo "$SECS" >"$D/seconds"
}
# run_killed NAME_OF_ENV_FN MAIN_REQUESTS CMD...: like run, in the
# background; once the server has had MAIN_REQUESTS model calls (the last one
# stalls mid-stream), waits a second and sends SIGTERM to the CLI.
run_killed() {
  local envfn="$1" want="$2"; shift 2
  local t0 t1 pid
  echo "\$ $*   (SIGTERM after model call $want stalls)" | sed "s#$CLAUDE_BIN#claude#; s#$CODEX_BIN#codex#" >"$D/command.txt"
  t0=$(date +%s%N)
  (cd "$D/repo" && exec env -i $($envfn) "$@" </dev/null >"$D/stdout.jsonl" 2>"$D/stderr.txt") &
  pid=$!
  for _ in $(seq 600); do
    [ "$(grep -c '"kind":"main"' "$D/requests.jsonl")" -ge "$want" ] && break
    sleep 0.05
  done
  sleep 1
  kill -TERM "$pid"
  wait "$pid"
  RC=$?
  t1=$(date +%s%N)
  echo "$RC" >"$D/exit_code"
  SECS=$(awk "BEGIN{printf \"%.2f\", ($t1-$t0)/1e9}")
  echo "$SECS" >"$D/seconds"
}

show() {
  cat "$D/command.txt"
  echo "exit code: $RC   wall time: ${SECS}s"
  echo "--- stdout ($(wc -l <"$D/stdout.jsonl") lines; long lines cut at 700 chars; full: $D/stdout.jsonl)"
  cut -c1-700 "$D/stdout.jsonl"
  if [ -s "$D/stderr.txt" ]; then
    echo "--- stderr (last 15 lines)"
    tail -n 15 "$D/stderr.txt" | cut -c1-400
  fi
  echo "--- requests the server got"
  node -e '
    const fs = require("fs");
    for (const l of fs.readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean)) {
      const e = JSON.parse(l), b = e.body || {};
      const n = (b.messages || b.input || []).length;
      console.log(`  #${e.seq} ${e.method} ${e.path} kind=${e.kind} turn=${e.turn}` +
        (typeof b === "object" && b.model ? ` model=${b.model} items=${n} tools=${(b.tools||[]).length}` : "") +
        (e.headers && e.headers["x-stainless-retry-count"] ? ` retry-count=${e.headers["x-stainless-retry-count"]}` : ""));
    }' "$D/requests.jsonl"
}
jq_() { # jq_ FILE EXPR: evaluates a JS expression over the parsed JSON lines (L)
  node -e '
    const fs = require("fs");
    const L = fs.readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean).map(l => { try { return JSON.parse(l) } catch { return { unparsed: l } } });
    const r = eval(process.argv[2]);
    process.exit(r ? 0 : 1);' "$1" "$2"
}
no_phone_home() { ! grep -q '"kind":"proxy"' "$D/requests.jsonl"; }

want() { [ $# -eq 0 ] || [[ " ${SCENARIOS[*]} " == *" $1 "* ]]; }
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(claude-write claude-resume claude-denied claude-429-limited claude-429-long claude-kill claude-kill-resume claude-unreachable codex-write codex-resume codex-429 codex-429-retries codex-ratelimit-stream codex-unreachable codex-kill codex-kill-resume)
mkdir -p "$OUT"

# ------------------------------------------------------------ Claude Code

CLAUDE_FLAGS=(-p --output-format stream-json --verbose --permission-mode acceptEdits)

if want claude-write || want claude-resume; then
  new_scenario claude-write '{"anthropic": [
    {"tool_use": [{"id": "toolu_write1", "name": "Write", "input": {"file_path": "hello.txt", "content": "hello from claude\n"}}],
     "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 40}},
    {"text": "I wrote hello.txt.",
     "usage": {"input_tokens": 150, "output_tokens": 10, "cache_read_input_tokens": 60, "cache_creation_input_tokens": 0}}
  ]}'
  # Write takes an absolute path: give the one in this repo.
  sed -i "s#\"file_path\": \"hello.txt\"#\"file_path\": \"$D/repo/hello.txt\"#" "$D/script.json"
  stop_server; start_server
  run claude_env "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" "write hello.txt"
  stop_server; show
  check "exit 0" test "$RC" = 0
  check "hello.txt written" grep -q "hello from claude" "$D/repo/hello.txt"
  check "init event carries session_id and model" jq_ "$D/stdout.jsonl" 'L[0].type==="system" && L[0].subtype==="init" && L[0].session_id && L[0].model'
  check "result: success, 2 turns, tokens summed, cost" jq_ "$D/stdout.jsonl" 'const r=L.at(-1); r.type==="result" && r.subtype==="success" && r.num_turns===2 && r.usage.input_tokens===250 && r.usage.output_tokens===30 && r.usage.cache_read_input_tokens===90 && r.usage.cache_creation_input_tokens===40 && r.total_cost_usd>0 && r.result==="I wrote hello.txt."'
  check "tool_use Write in an assistant event" jq_ "$D/stdout.jsonl" 'L.some(e=>e.type==="assistant" && e.message.content.some(c=>c.type==="tool_use" && c.name==="Write"))'
  check "nothing but the server contacted" no_phone_home
  CLAUDE_SID="$(node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").split("\n")[0]; console.log(JSON.parse(l).session_id)' "$D/stdout.jsonl")"
  CLAUDE_D="$D"
fi

if want claude-resume; then
  # Same HOME and same working directory as the first run: Claude keeps its
  # sessions under $HOME/.claude/projects/<cwd with / turned to ->/<id>.jsonl.
  new_scenario claude-resume '{"anthropic": [{"text": "Yes: hello.txt holds hello from claude.", "usage": {"input_tokens": 300, "output_tokens": 12}}]}'
  run_in "$CLAUDE_D" claude_env "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" --resume "$CLAUDE_SID" "did you write it?"
  stop_server; show
  check "exit 0" test "$RC" = 0
  check "same session id after resume" jq_ "$D/stdout.jsonl" "L.every(e=>!e.session_id || e.session_id==='$CLAUDE_SID')"
  check "resumed request carries the earlier turns (Write tool_use + its result)" jq_ "$D/requests.jsonl" 'L.filter(e=>e.kind==="main").some(e=>{const m=e.body.messages; const s=JSON.stringify(m); return s.includes("toolu_write1") && s.includes("tool_result") && s.includes("I wrote hello.txt.") && s.includes("did you write it?")})'
  check "result counts only this run's tokens" jq_ "$D/stdout.jsonl" 'const r=L.at(-1); r.usage.input_tokens===300 && r.num_turns===1'
fi

if want claude-denied; then
  new_scenario claude-denied '{"anthropic": [
    {"tool_use": [{"id": "toolu_bash1", "name": "Bash", "input": {"command": "touch denied.txt", "description": "make a file"}}]},
    {"text": "Bash was denied, so I stopped."}
  ]}'
  # Only Write may run: in -p mode nobody can approve the Bash call.
  run claude_env "$CLAUDE_BIN" -p --output-format stream-json --verbose --allowedTools Write -- "touch denied.txt"
  stop_server; show
  check "exit 0 (a denial is not a failure)" test "$RC" = 0
  check "denied.txt not made" test ! -e "$D/repo/denied.txt"
  check "result.permission_denials names Bash, its id and input" jq_ "$D/stdout.jsonl" 'const d=L.at(-1).permission_denials; d.length===1 && d[0].tool_name==="Bash" && d[0].tool_use_id==="toolu_bash1" && d[0].tool_input.command==="touch denied.txt"'
  check "the model was told (is_error tool_result)" jq_ "$D/stdout.jsonl" 'L.some(e=>e.type==="user" && e.message.content.some(c=>c.type==="tool_result" && c.is_error))'
fi

if want claude-429-default; then
  # Always 429 with retry-after: 1, Claude's own retry budget (10 retries,
  # backoff up to ~35 s each): takes about 170 s. Not in the default set.
  new_scenario claude-429-default '{"anthropic": [{"error": {"status": 429, "headers": {"retry-after": "1"}}, "repeat": 1000}]}'
  run claude_env "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" "hello"
  stop_server; show
  check "exit 1" test "$RC" = 1
  check "10 api_retry events with error_status 429" jq_ "$D/stdout.jsonl" 'L.filter(e=>e.type==="system" && e.subtype==="api_retry" && e.error_status===429 && e.max_retries===10).length===10'
  check "result is an error naming the 429 (subtype says success!)" jq_ "$D/stdout.jsonl" 'const r=L.at(-1); r.type==="result" && r.is_error===true && r.api_error_status===429 && r.terminal_reason==="api_error"'
fi

if want claude-429-long; then
  # retry-after over 60 s: Claude does not retry at all, it fails at once.
  new_scenario claude-429-long '{"anthropic": [{"error": {"status": 429, "headers": {"retry-after": "3600"}}, "repeat": 1000}]}'
  run claude_env "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" "hello"
  stop_server; show
  check "exit 1" test "$RC" = 1
  check "one model call, no api_retry" jq_ "$D/requests.jsonl" 'L.filter(e=>e.kind==="main").length===1'
  check "result: is_error, api_error_status 429, api_error_type rate_limit_error" jq_ "$D/stdout.jsonl" 'const r=L.at(-1); r.type==="result" && r.is_error===true && r.api_error_status===429 && r.api_error_type==="rate_limit_error"'
fi

if want claude-429-limited; then
  new_scenario claude-429-limited '{"anthropic": [{"error": {"status": 429, "headers": {"retry-after": "1"}}, "repeat": 1000}]}'
  claude_env_limited() { claude_env; echo CLAUDE_CODE_MAX_RETRIES=1; }
  run claude_env_limited "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" "hello"
  stop_server; show
  check "exit 1" test "$RC" = 1
  check "CLAUDE_CODE_MAX_RETRIES=1: two model calls in all" jq_ "$D/requests.jsonl" 'L.filter(e=>e.kind==="main").length===2'
  check "one api_retry event (max_retries 1, error_status 429)" jq_ "$D/stdout.jsonl" 'L.filter(e=>e.subtype==="api_retry" && e.max_retries===1 && e.error_status===429).length===1'
  check "result: is_error, api_error_status 429" jq_ "$D/stdout.jsonl" 'const r=L.at(-1); r.type==="result" && r.is_error===true && r.api_error_status===429'
fi

if want claude-kill || want claude-kill-resume; then
  # Turn 1 writes a file; turn 2 starts a text answer and stalls mid-stream.
  new_scenario claude-kill '{"anthropic": [
    {"tool_use": [{"id": "toolu_write2", "name": "Write", "input": {"file_path": "PLACEHOLDER", "content": "partial\n"}}]},
    {"text": "This answer never ends because the stream stalls.", "hang_after": 4}
  ]}'
  sed -i "s#PLACEHOLDER#$D/repo/partial.txt#" "$D/script.json"
  stop_server; start_server
  run_killed claude_env 2 "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" --session-id 0b1d0000-0000-4000-8000-00000000c1a0 "write partial.txt"
  stop_server; show
  check "killed by SIGTERM: exit 143" test "$RC" = 143
  check "the first turn's events were printed" jq_ "$D/stdout.jsonl" 'L.some(e=>e.type==="assistant")'
  check "no result event" jq_ "$D/stdout.jsonl" '!L.some(e=>e.type==="result")'
  check "the session id was chosen by the caller (--session-id)" jq_ "$D/stdout.jsonl" 'L[0].session_id==="0b1d0000-0000-4000-8000-00000000c1a0"'
  CLAUDE_KILL_D="$D"
fi

if want claude-kill-resume && [ -n "${CLAUDE_KILL_D:-}" ]; then
  new_scenario claude-kill-resume '{"anthropic": [{"text": "Picking up where I was stopped."}]}'
  run_in "$CLAUDE_KILL_D" claude_env "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" --resume 0b1d0000-0000-4000-8000-00000000c1a0 "go on"
  stop_server; show
  check "exit 0" test "$RC" = 0
  check "resumed request has the finished turn (Write + result) and a stand-in for the cut one" jq_ "$D/requests.jsonl" 'L.filter(e=>e.kind==="main").some(e=>{const s=JSON.stringify(e.body.messages); return s.includes("toolu_write2") && s.includes("tool_result") && s.includes("go on")})'
fi

if want claude-unreachable; then
  new_scenario claude-unreachable '{}'
  stop_server   # nothing listens on $PORT now
  claude_env_unreachable() { claude_env; echo CLAUDE_CODE_MAX_RETRIES=0; }
  run claude_env_unreachable "$CLAUDE_BIN" "${CLAUDE_FLAGS[@]}" "hello"
  show
  check "exit 1" test "$RC" = 1
  check "result: is_error, api_error_status null, terminal_reason api_error" jq_ "$D/stdout.jsonl" 'const r=L.at(-1); r.type==="result" && r.is_error===true && r.api_error_status===null && r.terminal_reason==="api_error" && /ECONNREFUSED/.test(r.result)'
fi

# ------------------------------------------------------------ Codex

CODEX_FLAGS=(exec --json -s workspace-write --skip-git-repo-check)

if want codex-write || want codex-resume; then
  new_scenario codex-write '{"openai": [
    {"custom_tool_call": [{"call_id": "call_patch1", "name": "apply_patch", "input": "*** Begin Patch\n*** Add File: hello.txt\n+hello from codex\n*** End Patch\n"}],
     "usage": {"input_tokens": 1000, "output_tokens": 50, "cached_tokens": 200, "cache_write_tokens": 300}},
    {"function_call": [{"call_id": "call_sh1", "name": "exec_command", "arguments": {"cmd": "printf \"second line\\n\" >> hello.txt && cat hello.txt"}}],
     "usage": {"input_tokens": 1100, "output_tokens": 30, "cached_tokens": 900}},
    {"text": "I created hello.txt.", "usage": {"input_tokens": 1200, "output_tokens": 10, "cached_tokens": 1000, "reasoning_tokens": 4}}
  ]}'
  codex_config
  run codex_env "$CODEX_BIN" "${CODEX_FLAGS[@]}" "write hello.txt"
  stop_server; show
  check "exit 0" test "$RC" = 0
  check "hello.txt written by apply_patch, appended by exec_command" grep -q "second line" "$D/repo/hello.txt"
  check "thread.started carries the thread id" jq_ "$D/stdout.jsonl" 'L[0].type==="thread.started" && L[0].thread_id'
  check "turn.completed sums usage over the model calls" jq_ "$D/stdout.jsonl" 'const u=L.at(-1).usage; L.at(-1).type==="turn.completed" && u.input_tokens===3300 && u.cached_input_tokens===2100 && u.output_tokens===90'
  check "file_change, command_execution, agent_message items" jq_ "$D/stdout.jsonl" '["file_change","command_execution","agent_message"].every(t=>L.some(e=>e.type==="item.completed" && e.item.type===t))'
  check "nothing but the server contacted" no_phone_home
  CODEX_TID="$(node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").split("\n")[0]; console.log(JSON.parse(l).thread_id)' "$D/stdout.jsonl")"
  CODEX_D="$D"
fi

if want codex-resume; then
  new_scenario codex-resume '{"openai": [{"text": "Yes, hello.txt has two lines.", "usage": {"input_tokens": 2000, "output_tokens": 8}}]}'
  # -s applies to the resumed run too (without it, the resumed turn is read-only)
  run_in "$CODEX_D" codex_env "$CODEX_BIN" exec --json -s workspace-write --skip-git-repo-check resume "$CODEX_TID" "did you write it?"
  stop_server; show
  check "exit 0" test "$RC" = 0
  check "same thread id after resume" jq_ "$D/stdout.jsonl" "L[0].type==='thread.started' && L[0].thread_id==='$CODEX_TID'"
  check "turn.completed usage is the thread's running total (3300 + 2000), not this run's" jq_ "$D/stdout.jsonl" 'L.at(-1).usage.input_tokens===5300'
  check "resumed request carries the earlier turns (apply_patch call, exec_command output, final text)" jq_ "$D/requests.jsonl" 'L.filter(e=>e.kind==="main").some(e=>{const s=JSON.stringify(e.body.input); return s.includes("call_patch1") && s.includes("function_call_output") && s.includes("I created hello.txt.") && s.includes("did you write it?")})'
fi

if want codex-429; then
  new_scenario codex-429 '{"openai": [{"error": {"status": 429, "headers": {"retry-after": "1"}}, "repeat": 1000}]}'
  codex_config
  run codex_env "$CODEX_BIN" "${CODEX_FLAGS[@]}" "hello"
  stop_server; show
  check "exit 1" test "$RC" = 1
  check "turn.failed (or error) event" jq_ "$D/stdout.jsonl" 'L.some(e=>e.type==="turn.failed" || e.type==="error")'
fi

if want codex-429-retries; then
  # A 429 is retried by the stream layer: stream_max_retries counts (default
  # 5), request_max_retries does not matter for it; the wait is retry-after.
  new_scenario codex-429-retries '{"openai": [{"error": {"status": 429, "headers": {"retry-after": "1"}}, "repeat": 1000}]}'
  codex_config 'request_max_retries = 0
stream_max_retries = 2'
  run codex_env "$CODEX_BIN" "${CODEX_FLAGS[@]}" "hello"
  stop_server; show
  check "exit 1" test "$RC" = 1
  check "three model calls (stream_max_retries = 2)" jq_ "$D/requests.jsonl" 'L.filter(e=>e.kind==="main").length===3'
  check "error events 'Reconnecting... 1/2', '2/2', then turn.failed" jq_ "$D/stdout.jsonl" 'L.filter(e=>e.type==="error" && /^Reconnecting\.\.\. [12]\/2/.test(e.message)).length===2 && L.at(-1).type==="turn.failed"'
fi

if want codex-ratelimit-stream; then
  # The rate limit arrives inside the stream (response.failed), twice, then
  # the model answers: Codex waits the "try again in" time and recovers.
  new_scenario codex-ratelimit-stream '{"openai": [
    {"failed": {"code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-5.5. Please try again in 1s."}, "repeat": 2},
    {"text": "Recovered.", "usage": {"input_tokens": 10, "output_tokens": 2}}
  ]}'
  codex_config 'request_max_retries = 0
stream_max_retries = 2'
  run codex_env "$CODEX_BIN" "${CODEX_FLAGS[@]}" "hello"
  stop_server; show
  check "exit 0" test "$RC" = 0
  check "error events carry the server's message" jq_ "$D/stdout.jsonl" 'L.filter(e=>e.type==="error" && e.message.includes("Please try again in 1s")).length===2'
  check "final agent_message" jq_ "$D/stdout.jsonl" 'L.some(e=>e.type==="item.completed" && e.item.type==="agent_message" && e.item.text==="Recovered.")'
fi

if want codex-unreachable; then
  new_scenario codex-unreachable '{}'
  codex_config
  stop_server   # nothing listens on $PORT now
  run codex_env "$CODEX_BIN" "${CODEX_FLAGS[@]}" "hello"
  show
  check "exit 1, at once (unbounded_connection_retries = false)" test "$RC" = 1
  check "error then turn.failed: Connection failed" jq_ "$D/stdout.jsonl" 'L.at(-1).type==="turn.failed" && /Connection failed/.test(L.at(-1).error.message)'
fi

if want codex-kill || want codex-kill-resume; then
  new_scenario codex-kill '{"openai": [
    {"custom_tool_call": [{"call_id": "call_patch2", "name": "apply_patch", "input": "*** Begin Patch\n*** Add File: partial.txt\n+partial\n*** End Patch\n"}]},
    {"text": "This answer never ends because the stream stalls.", "hang_after": 5}
  ]}'
  codex_config
  run_killed codex_env 2 "$CODEX_BIN" "${CODEX_FLAGS[@]}" "write partial.txt"
  stop_server; show
  check "killed by SIGTERM: exit 143" test "$RC" = 143
  check "the first turn's events were printed" jq_ "$D/stdout.jsonl" 'L.some(e=>e.type==="item.completed" && e.item.type==="file_change")'
  check "no turn.completed" jq_ "$D/stdout.jsonl" '!L.some(e=>e.type==="turn.completed")'
  CODEX_KILL_D="$D"
  CODEX_KILL_TID="$(node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").split("\n")[0]; console.log(JSON.parse(l).thread_id)' "$D/stdout.jsonl")"
fi

if want codex-kill-resume && [ -n "${CODEX_KILL_D:-}" ]; then
  new_scenario codex-kill-resume '{"openai": [{"text": "Picking up where I was stopped."}]}'
  run_in "$CODEX_KILL_D" codex_env "$CODEX_BIN" exec --json -s workspace-write --skip-git-repo-check resume "$CODEX_KILL_TID" "go on"
  stop_server; show
  check "exit 0" test "$RC" = 0
  check "resumed request has the finished apply_patch turn" jq_ "$D/requests.jsonl" 'L.filter(e=>e.kind==="main").some(e=>{const s=JSON.stringify(e.body.input); return s.includes("call_patch2") && s.includes("custom_tool_call_output") && s.includes("go on")})'
fi

echo
echo "outputs: $OUT"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
