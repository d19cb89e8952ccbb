#!/usr/bin/env bash
# Merge-plan benchmark (issue: the merge pyramid): a repository of 10,000
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
