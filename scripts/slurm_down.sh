#!/usr/bin/env bash
# Stop the single-node Slurm cluster that scripts/slurm_up.sh started (as root).
#
#   usage:   sudo bash scripts/slurm_down.sh
#   result:  slurmd, slurmctld, slurmdbd, munged and MariaDB are stopped; packages, configuration, the job
#            accounting database and /var/log/slurm stay, so slurm_up.sh brings the same cluster back.
#
# Daemons are stopped through their pid files, never by process name. Running jobs are killed with slurmd.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "slurm_down: must run as root" >&2; exit 3; }

stop() {  # stop PIDFILE NAME: SIGTERM the process named by PIDFILE and wait up to 10 s for it to exit
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { echo "slurm_down: $2 (pid $pid) did not exit on SIGTERM" >&2; return 1; }
    echo "slurm_down: stopped $2"
  fi
  rm -f "$1"
}

stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/slurmdbd.pid slurmdbd
stop /run/munge/munged.pid munged
if command -v mysqladmin >/dev/null && mysqladmin --silent ping >/dev/null 2>&1; then
  service mariadb stop >/dev/null && echo "slurm_down: stopped mariadb"
fi
