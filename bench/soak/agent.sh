#!/bin/sh
# A fake coding agent for bench/soak_agents.sh. POSIX sh, no $RANDOM.
#
# Writes its span to $SOAK_SPANS (one line each, appended atomically):
#   start TASK ATTEMPT PID EPOCH_NS BEHAVIOUR
#   end   TASK ATTEMPT PID EPOCH_NS HOW        (on any exit, SIGTERM included)
# then behaves at random:
#   fast   10%  commits a file and exits 0 at once
#   work   74%  works 1-15 s printing a line every 1-3 s, then exits 0
#               (after committing a file) or 1, three to one
#   hang    8%  keeps printing for 60 s: the agent timeout stops it
#   stall   8%  prints nothing for 60 s: the stall limit stops it
# BRAID_TASK and BRAID_ATTEMPT come from braid; it runs in the task's worktree.

TASK="${BRAID_TASK:-?}"
ATTEMPT="${BRAID_ATTEMPT:-?}"
SPANS="${SOAK_SPANS:?SOAK_SPANS must name the spans file}"

# A random number in [0, $1).
rnd() {
  n=$(od -An -N2 -tu2 /dev/urandom)
  echo $(( ${n:-0} % $1 ))
}
now_ns() { date +%s%N; }

ended=
finish() {
  [ -n "$ended" ] && return
  ended=1
  echo "end $TASK $ATTEMPT $$ $(now_ns) $1" >>"$SPANS"
}
trap 'finish "exit $?"' EXIT
trap 'finish term; exit 143' TERM
trap 'finish int; exit 130' INT

r=$(rnd 100)
if   [ "$r" -lt 10 ]; then how=fast
elif [ "$r" -lt 84 ]; then how=work
elif [ "$r" -lt 92 ]; then how=hang
else how=stall
fi
echo "start $TASK $ATTEMPT $$ $(now_ns) $how" >>"$SPANS"

commit() {
  echo "$TASK attempt $ATTEMPT pid $$ $how" >"soak-$ATTEMPT.txt" &&
    git add -A >/dev/null 2>&1 &&
    git commit -qm "soak: $TASK attempt $ATTEMPT" >/dev/null 2>&1
}

# Print something every 1-3 s for about $1 seconds (well under the stall limit).
chatter() {
  left=$1
  while [ "$left" -gt 0 ]; do
    step=$(( $(rnd 3) + 1 ))
    [ "$step" -gt "$left" ] && step=$left
    sleep "$step"
    left=$(( left - step ))
    echo "step: $(od -An -N8 -tx1 /dev/urandom | tr -d ' ') ($left s left)"
  done
}

case "$how" in
  fast)
    commit || exit 1
    exit 0 ;;
  work)
    echo "working on $TASK (attempt $ATTEMPT)"
    chatter $(( $(rnd 15) + 1 ))
    if [ "$(rnd 4)" -eq 0 ]; then
      echo "giving up: a random failure"
      exit 1
    fi
    commit || { echo "commit failed"; exit 1; }
    echo "done"
    exit 0 ;;
  hang)
    echo "hanging on $TASK, chatting for 60 s"
    chatter 60
    exit 0 ;;
  stall)
    sleep 60
    exit 0 ;;
esac
