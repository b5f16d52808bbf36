#!/usr/bin/env bash
# Bring up (or check) a real one-node SLURM cluster with accounting on this machine, for ablate's tests.
#
# Idempotent: with packages present, daemons healthy and configs unchanged it returns in well under a
# second; otherwise it installs what is missing and (re)starts only what is not running.
# Settings come from the environment (see lib.sh): ABLATE_SLURM_STATE, _CLUSTER, _PARTITION, _CPUS, _DB_PORT, _WAIT_S.
# Exit codes: 0 up; 1 failed (the message names the step and shows the log); 2 can't run here
# (not root, no apt-get); 3 packages missing and apt can't fetch them (no network).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
T0=$(date +%s.%N)

PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
POLICY=/usr/sbin/policy-rc.d

[ "$(id -u)" = 0 ] || { log "must run as root (it installs packages and starts daemons)"; exit 2; }

# ---------------------------------------------------------------- packages
missing_packages() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || echo "$p"
  done
}

# Maintainer scripts would try to start munge, mariadb and slurm the Debian way (and fail or race
# with us, there is no systemd); a policy-rc.d answering 101 ("not allowed") stops them.
block_service_starts() {
  # A copy left by an interrupted run is the real original: keep it rather than save our own over it.
  [ -e "$POLICY" ] && [ ! -e "$STATE/policy-rc.d.saved" ] && cp -p "$POLICY" "$STATE/policy-rc.d.saved"
  printf '#!/bin/sh\n# ablate scripts/slurm/up.sh: no service starts while it installs\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  trap allow_service_starts EXIT
}
allow_service_starts() {
  if [ -e "$STATE/policy-rc.d.saved" ]; then mv -f "$STATE/policy-rc.d.saved" "$POLICY"; else rm -f "$POLICY"; fi
  trap - EXIT
}

apt_unreachable() {
  log "packages missing (${*}) and apt can't fetch them; see $LOG/apt.log"
  tail -n 5 "$LOG/apt.log" >&2
  exit 3
}

install_packages() {
  local missing p need_update=0
  mapfile -t missing < <(missing_packages)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { log "missing ${missing[*]} and no apt-get: this script needs Debian/Ubuntu"; exit 2; }
  log "installing ${missing[*]} (apt output in $LOG/apt.log)"
  block_service_starts
  export DEBIAN_FRONTEND=noninteractive
  # Update only when the package lists don't know a package (a fresh image has none).
  for p in "${missing[@]}"; do
    [ -n "$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -vx '(none)')" ] || need_update=1
  done
  if [ $need_update = 1 ]; then apt-get update >>"$LOG/apt.log" 2>&1 || apt_unreachable "${missing[@]}"; fi
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1; then
    # Stale lists name files the mirror has dropped: refresh once and retry.
    apt-get update >>"$LOG/apt.log" 2>&1 || apt_unreachable "${missing[@]}"
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1; then
      grep -qE 'Could not resolve|Failed to fetch|Temporary failure|Unable to connect|Connection failed' \
        "$LOG/apt.log" && apt_unreachable "${missing[@]}"
      die "apt-get install ${missing[*]} failed" "$LOG/apt.log"
    fi
  fi
  allow_service_starts
}

# ---------------------------------------------------------------- configuration
# render TEMPLATE DEST MODE: fill the @KEY@ placeholders; rewrite DEST only when its text changes.
# Returns 0 when DEST changed, so running daemons know to restart.
render() {
  local tmp
  tmp=$(mktemp)
  sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
      -e "s|@PARTITION@|$PARTITION|g" -e "s|@STATE@|$STATE|g" -e "s|@DB_PORT@|$DB_PORT|g" \
      -e "s|@DB_PASS@|$DB_PASS|g" "$1" >"$tmp"
  if cmp -s "$tmp" "$2"; then rm -f "$tmp"; return 1; fi
  install -m "$3" "$tmp" "$2"
  rm -f "$tmp"
}

configure() {
  install -d -m 755 "$STATE" "$RUN" "$LOG" "$STATE/slurmctld" "$STATE/slurmd" "$SLURM_ETC"
  NODE=$(hostname -s)
  MEM_MB=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  [ -n "$MEM_MB" ] || die "could not read RealMemory from 'slurmd -C'"
  # The accounting DB password only has to be stable across runs; hex keeps it safe inside sed.
  [ -s "$STATE/db.pass" ] || (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/db.pass")
  DB_PASS=$(cat "$STATE/db.pass")
  SLURM_CHANGED=0 DBD_CHANGED=0
  render "$HERE/slurm.conf.in" "$SLURM_ETC/slurm.conf" 644 && SLURM_CHANGED=1
  # slurmdbd refuses a config that others can read (it holds the DB password).
  render "$HERE/slurmdbd.conf.in" "$SLURM_ETC/slurmdbd.conf" 600 && DBD_CHANGED=1
  return 0
}

# ---------------------------------------------------------------- health
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }
node_ok() { case "$(node_state)" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac; }
cluster_registered() { sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; }
healthy() {
  local d
  for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
  node_ok && cluster_registered
}

summary() {
  local took
  took=$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }')
  printf 'ablate-slurm: %s in %ss: cluster %s, node %s (%s CPUs, %s MB), partition %s, state %s\n' \
    "$1" "$took" "$CLUSTER" "$NODE" "$CPUS" "$MEM_MB" "$PARTITION" "$STATE"
}

# ---------------------------------------------------------------- daemons, in dependency order
# Each daemon writes its own pid file (lib.sh finds it there); stdio goes to a log so a caller that
# captures our output (pytest) isn't left holding a pipe the daemons keep open, and `9>&-` keeps them
# from inheriting (and holding forever) the lock on fd 9.

start_munged() {
  alive munged && return 0
  local key=/etc/munge/munge.key
  [ -s "$key" ] || dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
  chown munge:munge "$key" && chmod 400 "$key"
  install -d -o munge -g munge -m 755 /run/munge "$RUN/munge"
  rm -f "$(pidfile munged)"
  runuser -u munge -- munged --pid-file="$(pidfile munged)" 9>&- </dev/null >>"$LOG/munged.out" 2>&1 \
    || die "munged did not start" "$LOG/munged.out" /var/log/munge/munged.log
  wait_for "$WAIT_S" sh -c 'munge -n | unmunge' || die "munge does not answer" /var/log/munge/munged.log
}

start_mariadbd() {
  local sock=$RUN/mariadbd.sock data=$STATE/mysql
  if ! alive mariadbd; then
    if [ ! -d "$data/mysql" ]; then
      mariadb-install-db --no-defaults --user=root --datadir="$data" --auth-root-authentication-method=socket \
        --skip-test-db >>"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed" "$LOG/mariadb-install.log"
    fi
    rm -f "$(pidfile mariadbd)"
    # --no-defaults: ignore /etc/mysql so a system MariaDB's socket, port and datadir stay untouched.
    setsid mariadbd --no-defaults --user=root --datadir="$data" --socket="$sock" --pid-file="$(pidfile mariadbd)" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --innodb-lock-wait-timeout=900 \
      --log-error="$LOG/mariadb.log" 9>&- </dev/null >>"$LOG/mariadb.out" 2>&1 &
    wait_for "$WAIT_S" mariadb-admin --no-defaults --socket="$sock" ping || die "MariaDB did not start" "$LOG/mariadb.log"
    wait_for "$WAIT_S" alive mariadbd || die "MariaDB wrote no pid file" "$LOG/mariadb.log"
  fi
  # Idempotent, so it also repairs a half-finished earlier run. --skip-name-resolve makes TCP clients
  # from 127.0.0.1 match 'slurm'@'127.0.0.1'.
  mariadb --no-defaults --socket="$sock" -u root <<SQL || die "creating the accounting database failed" "$LOG/mariadb.log"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start_slurmdbd() {
  if ! alive slurmdbd; then
    rm -f "$(pidfile slurmdbd)"
    slurmdbd 9>&- </dev/null >>"$LOG/slurmdbd.out" 2>&1 || die "slurmdbd did not start" "$LOG/slurmdbd.out" "$LOG/slurmdbd.log"
  fi
  wait_for "$WAIT_S" sacctmgr -n list cluster || die "slurmdbd does not answer" "$LOG/slurmdbd.log"
  # slurmctld only sends accounting for a cluster the database knows.
  cluster_registered || sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed" "$LOG/slurmdbd.log"
}

start_slurmctld() {
  if ! alive slurmctld; then
    rm -f "$(pidfile slurmctld)"
    slurmctld 9>&- </dev/null >>"$LOG/slurmctld.out" 2>&1 || die "slurmctld did not start" "$LOG/slurmctld.out" "$LOG/slurmctld.log"
  fi
  wait_for "$WAIT_S" sh -c 'scontrol ping | grep -q UP' || die "slurmctld does not answer" "$LOG/slurmctld.log"
}

start_slurmd() {
  if ! alive slurmd; then
    rm -f "$(pidfile slurmd)"
    slurmd 9>&- </dev/null >>"$LOG/slurmd.out" 2>&1 || die "slurmd did not start" "$LOG/slurmd.out" "$LOG/slurmd.log"
  fi
  # A node that went away uncleanly comes back DOWN or DRAINED; this cluster has nobody to resume it by hand.
  local deadline=$((SECONDS + WAIT_S)) st
  until node_ok; do
    st=$(node_state)
    case "$st" in down* | drain* | fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;; esac
    [ $SECONDS -lt $deadline ] || die "node $NODE is '${st:-unknown}', not idle, after ${WAIT_S}s" \
      "$LOG/slurmctld.log" "$LOG/slurmd.log"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- main
install -d -m 755 "$STATE" "$LOG"
lock
install_packages
configure
if [ $SLURM_CHANGED = 0 ] && [ $DBD_CHANGED = 0 ] && healthy; then
  summary "already up"
  exit 0
fi
# A daemon keeps the config it started with: restart the ones whose config file changed.
if [ $SLURM_CHANGED = 1 ]; then stop slurmd; stop slurmctld; fi
if [ $DBD_CHANGED = 1 ]; then stop slurmdbd; fi
start_munged
start_mariadbd
start_slurmdbd
start_slurmctld
start_slurmd
summary "up"
