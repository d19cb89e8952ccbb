#!/usr/bin/env bash
# Merge benchmark (issue: the merge pyramid): a repository of 10,000
# files and 100 branches, each changing 1-20 files (some overlapping, some
# conflicting); `braid merge plan` builds the conflict matrix (every pair
# sharing a file checked with git merge-tree). Target: <= 5 s.
#
#   bench/merge.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-$(mktemp -d /tmp/braid-merge.XXXXXX)}"
B="$ROOT/target/release/braid"
export NO_COLOR=1
cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
R="$WORK/repo"
rm -rf "$R" && mkdir -p "$R" && cd "$R"
git init -q -b main && git config user.email b@example.com && git config user.name bench
python3 - <<'PY'
import os
for i in range(10000):
    d = f"src/m{i % 100:02d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i}.txt", "w") as f:
        f.write("".join(f"line {j} of file {i}\n" for j in range(20)))
PY
git add -A && git commit -qm base
# 100 branches: each edits 1-20 files chosen from a pool of 2,000, so pairs
# overlap; an edit rewrites line 5, so overlapping edits conflict unless equal.
python3 - "$R" <<'PY'
import random, subprocess, sys, os
repo = sys.argv[1]
rnd = random.Random(7)
def git(*a, cwd=repo):
    subprocess.run(["git", *a], cwd=cwd, check=True, stdout=subprocess.DEVNULL)
for b in range(100):
    name = f"feature-{b:03d}"
    git("branch", name, "main")
    wt = f"{repo}/../wt"
    git("worktree", "add", "-q", wt, name)
    for i in rnd.sample(range(2000), rnd.randint(1, 20)):
        p = f"{wt}/src/m{i % 100:02d}/f{i}.txt"
        lines = open(p).read().splitlines(True)
        lines[5] = f"changed by {name}\n"
        open(p, "w").write("".join(lines))
    git("commit", "-qam", name, cwd=wt)
    git("worktree", "remove", "--force", wt)
import json
json.dump({"into": "main", "branches": [{"name": f"feature-{b:03d}"} for b in range(100)]}, open(f"{repo}/../plan.json", "w"))
PY
cd "$R" && "$B" init >/dev/null
/usr/bin/time -f "merge plan (100 branches, 10,000 files): wall %e s, max RSS %M KiB" \
  "$B" merge plan --plan "$WORK/plan.json" --jobs 2 --json > "$WORK/out.json"
python3 -c "
import json; p = json.load(open('$WORK/out.json'))
print(f\"pairs sharing a file: {p['pairs_checked']}, conflicting pairs: {len(p['conflicts'])}, levels: {len(p['order'])}, batches in level 0: {len(p['order'][0]['batches'])}\")"

# ---------------------------------------------------------------------------
# Bisection: `braid merge run` on small branches with a gate that fails when
# a branch carries BAD. The gate cache is off, so every gate run counts.
#  (a) a batch of 8 with one bad branch, 3 parallel slots, for each position
#      of the bad branch: the round that isolated it, and rounds to land the
#      other 7 (bors-ng's halving isolates it in 3 rounds after the batch fails).
#  (b) 50 branches with 2 bad ones: total gate runs with batches of 8 and 3
#      slots, against a one-at-a-time merge queue (--max-batch 1 --jobs 1).
small_repo() { # small_repo DIR N BAD...
  local dir=$1 n=$2; shift 2
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  git init -q -b main && git config user.email b@example.com && git config user.name bench
  echo .braid/ > .gitignore && echo base > base.txt && git add -A && git commit -qm base
  python3 - "$dir" "$n" "$@" <<'PY'
import subprocess, sys, json
repo, n, bad = sys.argv[1], int(sys.argv[2]), {int(b) for b in sys.argv[3:]}
def git(*a): subprocess.run(["git", "-C", repo, *a], check=True, stdout=subprocess.DEVNULL)
base = subprocess.run(["git", "-C", repo, "rev-parse", "main^{tree}"], check=True, capture_output=True, text=True).stdout.strip()
for i in range(1, n + 1):
    body = ("BAD\n" if i in bad else "ok\n").encode()
    blob = subprocess.run(["git", "-C", repo, "hash-object", "-w", "--stdin"], input=body, check=True, capture_output=True).stdout.decode().strip()
    listing = subprocess.run(["git", "-C", repo, "ls-tree", "main"], check=True, capture_output=True, text=True).stdout
    tree = subprocess.run(["git", "-C", repo, "mktree"], input=listing + f"100644 blob {blob}\tb{i:02d}.txt\n", check=True, capture_output=True, text=True).stdout.strip()
    c = subprocess.run(["git", "-C", repo, "commit-tree", tree, "-p", "main", "-m", f"b{i:02d}"], check=True, capture_output=True, text=True).stdout.strip()
    git("branch", f"b{i:02d}", c)
json.dump({"into": "main", "branches": [{"name": f"b{i:02d}"} for i in range(1, n + 1)]}, open(f"{repo}/.git/plan.json", "w"))
PY
  "$B" init >/dev/null
  cat > .braid/config.toml <<'TOML'
[cache]
enabled = false
[[gate]]
name = "nobad"
command = ["sh", "-c", "! grep -rq BAD --exclude-dir=.git ."]
TOML
}
echo
echo "(a) batch of 8, one bad branch, 3 slots:"
total_iso=0; total_rounds=0
for bad in 1 2 3 4 5 6 7 8; do
  small_repo "$WORK/bis" 8 "$bad" >/dev/null
  "$B" merge run --plan .git/plan.json --into main --jobs 3 --json > "$WORK/bis.json" || true
  python3 - "$WORK/bis.json" "$bad" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])); bad = int(sys.argv[2])
r = o["rejected"]; assert [x["branch"] for x in r] == [f"b{bad:02d}"], r
assert len(o["landed"]) == 7, o["landed"]
print(f"  bad at position {bad}: isolated in round {r[0]['isolated_in_round']}, all settled in {o['rounds']} rounds, {o['gate_runs']} gate runs")
PY
done
echo
echo "(b) 50 branches, 2 bad (positions 13 and 37):"
for mode in "batched --jobs 3" "one-at-a-time --jobs 1 --max-batch 1"; do
  name=${mode%% *}; args=${mode#* }
  small_repo "$WORK/q50" 50 13 37 >/dev/null
  start=$(date +%s.%N)
  "$B" merge run --plan .git/plan.json --into main $args --json > "$WORK/q50.json" || true
  end=$(date +%s.%N)
  python3 - "$WORK/q50.json" "$name" "$start" "$end" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
print(f"  {sys.argv[2]:>13}: {o['gate_runs']} gate runs, {o['rounds']} rounds, {len(o['landed'])} landed, rejected {[r['branch'] for r in o['rejected']]}, wall {float(sys.argv[4]) - float(sys.argv[3]):.2f} s")
PY
done
