#!/usr/bin/env bash
# Stop the local SLURM cluster that up.sh started: cancel its jobs, then stop each daemon by its pid file
# (after checking the process name), in reverse start order. Never kills by name.
#   --keep-jobs  leave jobs alone (running ones keep running; slurmd picks them up again on the next up.sh)
#   --purge      also delete the state dir (job state, accounting DB, logs): the next up.sh starts from
#                nothing and job ids restart at 1, so never reuse a submitit log folder across a purge.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

KEEP_JOBS=0 PURGE=0
for arg in "$@"; do
  case "$arg" in
    --keep-jobs) KEEP_JOBS=1 ;;
    --purge) PURGE=1 ;;
    *) log "unknown argument '$arg' (use --keep-jobs, --purge)"; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }
[ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; exit 0; }
lock

# Job processes are children of slurmstepd, not of slurmd: stopping the daemons would leave them running.
if [ $KEEP_JOBS = 0 ] && alive slurmctld; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    # SLURM signals TERM, then KILL after KillWait (30 s).
    wait_for 40 sh -c '[ -z "$(squeue -h -o %i)" ]' || log "some jobs are still listed; stopping anyway"
  fi
fi

for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop "${DAEMONS[i]}"; done

if [ $PURGE = 1 ]; then
  case "$STATE" in /*/*) rm -rf -- "$STATE"; log "removed $STATE" ;; *) log "refusing to purge '$STATE'"; exit 2 ;; esac
fi
log "down"
