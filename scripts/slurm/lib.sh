# Shared by up.sh and down.sh: settings, logging, and pid-file handling for the local SLURM cluster.
# Sourced, not run. Every daemon is tracked by its pid file and its process name, never by name alone,
# so a stop can't hit a SLURM or MariaDB that somebody else started on this machine.

STATE=${ABLATE_SLURM_STATE:-/var/lib/ablate-slurm}     # pid files, logs, spool, MariaDB data
CLUSTER=${ABLATE_SLURM_CLUSTER:-ablate}               # ClusterName, also the accounting cluster
PARTITION=${ABLATE_SLURM_PARTITION:-debug}
CPUS=${ABLATE_SLURM_CPUS:-8}                          # advertised CPUs (config_overrides): >2 lets 1-CPU tests overlap
DB_PORT=${ABLATE_SLURM_DB_PORT:-6820}                 # MariaDB on 127.0.0.1; not 3306, to leave a system DB alone
WAIT_S=${ABLATE_SLURM_WAIT_S:-60}                     # how long any one daemon may take to become ready
SLURM_ETC=/etc/slurm                                  # Debian's clients (sbatch, sinfo, submitit) read it here
RUN=$STATE/run
LOG=$STATE/log

# Start order; down.sh walks it backwards.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { printf 'ablate-slurm: %s\n' "$*" >&2; }

# die MESSAGE [LOGFILE...]: print the message and the end of each log that explains it, exit 1.
die() {
  local msg=$1; shift
  log "ERROR: $msg"
  local f
  for f in "$@"; do
    [ -s "$f" ] && { printf -- '--- last lines of %s ---\n' "$f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

# lock: hold an exclusive lock until the script exits, so two pytest sessions (or up and down) starting
# at once don't both launch daemons; the second waits and then finds the cluster up.
lock() {
  exec 9>"$STATE/.lock"
  flock -w 600 9 || die "another up.sh/down.sh held $STATE/.lock for 10 minutes"
}

pidfile() {
  # munged runs as user munge and must be able to write its own pid file.
  if [ "$1" = munged ]; then echo "$RUN/munge/munged.pid"; else echo "$RUN/$1.pid"; fi
}

# pid_of NAME: print the pid from NAME's pid file if that process is alive and really is NAME.
pid_of() {
  local f pid comm
  f=$(pidfile "$1")
  [ -r "$f" ] || return 1
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [ "$comm" = "$1" ] || return 1
  gone "$pid" && return 1
  echo "$pid"
}

alive() { pid_of "$1" >/dev/null; }

# gone PID: the process has exited. A zombie counts as gone: daemons are re-parented to pid 1, and this
# machine's init reaps them only every couple of seconds.
gone() {
  local st
  st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 0
  [ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}

# stop NAME: TERM, wait up to 30 s, then KILL; the pid file goes either way.
stop() {
  local pid i
  if pid=$(pid_of "$1"); then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
      gone "$pid" && break
      sleep 0.1
    done
    if ! gone "$pid"; then
      log "$1 (pid $pid) ignored TERM for 30 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$(pidfile "$1")"
}

# wait_for SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds; fail after SECONDS.
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}
