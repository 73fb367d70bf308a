#!/usr/bin/env bash
# Start a single-node Slurm cluster with accounting on this machine, for the Slurm tests and CI.
#
#   usage:   sudo bash scripts/slurm_up.sh            (as root; the test suite's `slurm` fixture runs it)
#   result:  "slurm_up: ready ..." and exit 0: munged, MariaDB, slurmdbd, slurmctld and slurmd are up, the
#            node is idle in partition `debug`, and `sbatch`, `squeue`, `sacct` work.
#
# Debian 12 (bookworm) without systemd or cgroups (../shared/reference/pipeline-stack.md, section 5):
# slurm-wlm 22.05, munge, MariaDB + slurmdbd (submitit polls `sacct`; without accounting a cancelled or
# killed job never reports done). Proctrack is linuxproc and there is no task plugin, so nothing needs
# cgroups. Jobs run as root.
#
# Idempotent: packages are installed only when missing, daemons are started only when not running, and a
# running cluster is restarted only when the generated slurm.conf changed. Concurrent calls serialize on a
# lock. Stop everything with scripts/slurm_down.sh.
#
# Exit codes: 0 ready; 3 this machine cannot host the cluster (not root, not Linux, no apt-get and the
# packages are missing): the tests skip with the printed reason; 1 anything else failed: the message names
# the daemon and prints the tail of its log.
set -euo pipefail

say() { echo "slurm_up: $*"; }
cannot() { echo "slurm_up: cannot start Slurm here: $*" >&2; exit 3; }
die() { echo "slurm_up: FAILED: $*" >&2; exit 1; }
trap 'echo "slurm_up: FAILED: line $LINENO: \`$BASH_COMMAND\` exited $?" >&2' ERR
log_tail() {  # log_tail FILE: the last lines of a daemon log, on stderr
  if [ -f "$1" ]; then echo "--- last lines of $1 ---" >&2; tail -n 25 "$1" >&2; else echo "(no log at $1)" >&2; fi
}

[ "$(uname -s)" = Linux ] || cannot "Linux only (this is $(uname -s))"
[ "$(id -u)" = 0 ] || cannot "must run as root (it installs packages and starts daemons); run: sudo bash $0"

CLUSTER=cosmos
PARTITION=debug
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
LOCK=/run/lock/cosmos-slurm-up.lock
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -w 300 9 || die "another slurm_up.sh held $LOCK for 300 s"

T0=$(date +%s)

# --- packages: only the missing ones (slurm-wlm would pull ~40 unneeded plugin packages)
PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || cannot "packages ${missing[*]} are missing and there is no apt-get (Debian/Ubuntu only)"
  say "installing ${missing[*]}"
  # Keep the postinst scripts from starting daemons with the packaged defaults; this script starts them.
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_added=1
  fi
  apt_log=$(mktemp)
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; }
  if ! apt_install; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >"$apt_log" 2>&1 && apt_install || {
      [ $policy_added = 1 ] && rm -f /usr/sbin/policy-rc.d
      tail -n 20 "$apt_log" >&2
      die "apt-get install ${missing[*]} failed (output above); check the network access to the Debian mirror"
    }
  fi
  [ $policy_added = 1 ] && rm -f /usr/sbin/policy-rc.d
  rm -f "$apt_log"
fi
T1=$(date +%s)

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # running PIDFILE
daemon() { "$@" 9>&-; }  # start a daemon without the lock's file descriptor (it would hold the lock forever)

# --- munge: the key comes from the package postinst; /run/munge does not survive a reboot
mkdir -p /run/munge /var/log/munge /var/lib/munge "$LOG_DIR" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
if ! running /run/munge/munged.pid; then
  rm -f /run/munge/munged.pid
  daemon runuser -u munge -- /usr/sbin/munged || { log_tail /var/log/munge/munged.log; die "munged did not start"; }
fi
for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
munge -n | unmunge >/dev/null || { log_tail /var/log/munge/munged.log; die "munge cannot encode/decode a credential"; }

# --- slurm.conf (cgroup-free), written to a temp file and swapped in only when it changed
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {m = int($2 / 1024) - 1024; print (m < 512 ? 512 : m)}' /proc/meminfo)  # MiB, 1 GiB headroom
new_conf=$(mktemp)
cat > "$new_conf" <<CONF
# Written by cosmos scripts/slurm_up.sh: a single-node test cluster. Do not edit; re-run the script.
ClusterName=${CLUSTER}
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
rm -f "$CONF_DIR/gres.conf"
conf_changed=0
if ! cmp -s "$new_conf" "$CONF_DIR/slurm.conf"; then
  install -m 0644 "$new_conf" "$CONF_DIR/slurm.conf"; conf_changed=1
fi
rm -f "$new_conf"

# --- accounting: MariaDB + slurmdbd (slurm.conf must exist before sacctmgr can reach slurmdbd)
if ! mysqladmin --silent ping >/dev/null 2>&1; then
  daemon service mariadb start >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do mysqladmin --silent ping >/dev/null 2>&1 && break; sleep 0.5; done
  mysqladmin --silent ping >/dev/null 2>&1 || { log_tail /var/log/mysql/error.log; die "MariaDB did not start"; }
fi
mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" \
  || die "could not create the MariaDB user for slurmdbd"
cat > "$CONF_DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=${LOG_DIR}/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
CONF
chmod 600 "$CONF_DIR/slurmdbd.conf"
if ! running /run/slurmdbd.pid; then
  rm -f /run/slurmdbd.pid
  daemon /usr/sbin/slurmdbd || { log_tail "$LOG_DIR/slurmdbd.log"; die "slurmdbd did not start"; }
fi
for _ in $(seq 1 120); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -n list cluster >/dev/null 2>&1 || { log_tail "$LOG_DIR/slurmdbd.log"; die "slurmdbd does not answer sacctmgr"; }
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null \
  || { log_tail "$LOG_DIR/slurmdbd.log"; die "sacctmgr could not register cluster $CLUSTER"; }

# --- controller and node daemon (both daemonize); a changed slurm.conf restarts them
stop() {  # stop PIDFILE: SIGTERM the daemon named by its pid file and wait for it to exit
  if running "$1"; then
    local pid; pid=$(cat "$1"); kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$1"
}
if [ $conf_changed = 1 ] && { running /run/slurmctld.pid || running /run/slurmd.pid; }; then
  say "slurm.conf changed: restarting slurmctld and slurmd"
  stop /run/slurmd.pid; stop /run/slurmctld.pid
fi
if ! running /run/slurmctld.pid; then
  rm -f /run/slurmctld.pid
  daemon /usr/sbin/slurmctld || { log_tail "$LOG_DIR/slurmctld.log"; die "slurmctld did not start"; }
fi
if ! running /run/slurmd.pid; then
  rm -f /run/slurmd.pid
  daemon /usr/sbin/slurmd || { log_tail "$LOG_DIR/slurmd.log"; die "slurmd did not start"; }
fi

node_state() { sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -1; }
up() { case "$(node_state)" in idle|mix|alloc|comp) return 0 ;; *) return 1 ;; esac; }
resumed=0
for _ in $(seq 1 120); do
  up && break
  case "$(node_state)" in  # a node left drained or down by an earlier crash: put it back once
    drain|drng|down|fail) [ $resumed = 0 ] && scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1; resumed=1 ;;
  esac
  sleep 0.5
done
if ! up; then
  log_tail "$LOG_DIR/slurmctld.log"; log_tail "$LOG_DIR/slurmd.log"
  die "node $HOST is '$(node_state)', not idle, after 60 s (sinfo -R: $(sinfo -h -R 2>/dev/null | head -1))"
fi
sacct -n -X -S now >/dev/null 2>&1 || { log_tail "$LOG_DIR/slurmdbd.log"; die "sacct does not work"; }
T2=$(date +%s)
say "ready: cluster $CLUSTER, node $HOST ($CPUS CPUs), partition $PARTITION, accounting on" \
    "(install $((T1 - T0)) s, daemons $((T2 - T1)) s)"
