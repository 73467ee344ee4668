#!/usr/bin/env bash
# Stand up a single-node SLURM cluster with accounting on localhost (Debian 12, run as root, no systemd
# and no cgroups needed): munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, each waited for.
# Every daemon runs in the foreground of a background job; its PID goes to $SLURM_CI_STATE/pids/ and
# .ci/slurm/stop.sh stops exactly those PIDs. Configuration is written to /etc/slurm (where sbatch, sacct
# and the job steps look for it), everything else under $SLURM_CI_STATE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${SLURM_CI_STATE:-/tmp/seminfo-slurm}
pids=$state/pids

[ "$(id -u)" = 0 ] || { echo "start.sh: needs root" >&2; exit 1; }
bash "$here/stop.sh"  # leftovers of an interrupted run, by their recorded PIDs only
trap 'echo "start.sh: failed; daemon logs in $state" >&2; bash "$here/stop.sh"' ERR

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v mariadbd >/dev/null; then
    echo "== installing slurm-wlm, munge, slurmdbd, mariadb-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
fi

case $state in /tmp/?*) ;; *) echo "start.sh: SLURM_CI_STATE must be a folder under /tmp" >&2; exit 1 ;; esac
rm -rf "$state"  # a fresh cluster every time: no job, node or log state carried over
mkdir -p "$pids" "$state/ctld" "$state/slurmd"
chown slurm:slurm "$state/ctld"
mkdir -p /run/munge /var/log/munge /run/mysqld
chown munge:munge /run/munge /var/log/munge
[ -s /etc/munge/munge.key ] || { mungekey --create && chown munge:munge /etc/munge/munge.key; }
chown mysql:mysql /run/mysqld

wait_for() {  # wait_for <what> <seconds> <command...>
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "start.sh: $what did not come up within ${seconds}s" >&2
    return 1
}
launch() {  # launch <name> <command...>: run in the background, record the PID
    local name=$1
    shift
    "$@" >"$state/$name.out" 2>&1 &
    echo $! >"$pids/$name"
}

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
db_pass=seminfo-ci

echo "== writing /etc/slurm (node $host: $cpus CPUs, $mem_mb MB, one GPU declared for the scheduler)"
mkdir -p /etc/slurm
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=seminfo
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
ReturnToService=2
MpiDefault=none
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# A GPU the scheduler can hand out, so the profile's GPU requests are scheduled as on a real cluster;
# /dev/null stands in for the device file (there is no GPU: the jobs run on the CPU).
cat >/etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=$host Name=gpu Count=1 File=/dev/null
CONF
cat >/etc/slurm/slurmdbd.conf <<CONF
DbdHost=localhost
SlurmUser=slurm
AuthType=auth/munge
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
PidFile=$state/slurmdbd.pid
LogFile=$state/slurmdbd.log
CONF
chown slurm:slurm /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf

echo "== starting daemons"
launch munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
wait_for munged 10 bash -c 'munge -n | unmunge'

launch mariadbd mariadbd --user=mysql --skip-networking
wait_for mariadbd 30 mariadb-admin ping
mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$db_pass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

launch slurmdbd slurmdbd -D
wait_for slurmdbd 30 sacctmgr -n show cluster

launch slurmctld slurmctld -D
wait_for slurmctld 30 scontrol ping
sacctmgr -i add account ci Description=ci Organization=ci >/dev/null || true      # exits 1 when it exists
sacctmgr -i add user "$(id -un)" Account=ci DefaultAccount=ci >/dev/null || true

launch slurmd slurmd -D
wait_for "slurmd (node idle)" 30 bash -c "sinfo -h -N -o %T | grep -qx idle"
echo "== SLURM is up: $(sinfo -h -o '%P %D %T %G')"
