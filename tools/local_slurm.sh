#!/usr/bin/env bash
# A one-machine Slurm cluster, to try ENGINE=slurm on a laptop and to test it (tests/test_engines.py):
# munged, slurmctld and slurmd on this host, all their files under DIR (config, state, logs, its own
# munge key and socket) and ports of their own, so nothing in /etc is changed. Needs root (slurmd and
# munged run as root) and Debian's packages: apt-get install slurm-wlm munge.
#
#   sudo bash tools/local_slurm.sh start DIR     # then: export SLURM_CONF=DIR/slurm.conf
#   sbatch --wrap hostname; squeue; ENGINE=slurm SBATCH_TIMELIMIT=30 TASK=SST-2 bash run_one_task.sh ...
#   sudo bash tools/local_slurm.sh stop DIR      # cancels its jobs, stops the daemons
#
# SLURMCTLD_PORT (16817), SLURMD_PORT (16818): the daemons' ports. The node is this host as
# `slurmd -C` sees it (all its CPUs), in partition `local` (the default, no time limit) and
# `short` (10 minutes at most); processes tracked by parent
# (proctrack/linuxproc), no cgroups, no accounting (squeue, not sacct, tells what runs).
set -euo pipefail
(($# == 2)) && [[ $1 == start || $1 == stop ]] || { echo "usage: bash $(basename "$0") start|stop DIR" >&2; exit 2; }
die() {
    echo "error: $*" >&2
    exit 2
}
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

if [[ $1 == stop ]]; then
    if [[ -f $DIR/slurmctld.pid ]]; then
        scancel --full --quiet --partition local 2>/dev/null || true
        for _ in $(seq 30); do [[ -z $(squeue --noheader 2>/dev/null) ]] && break; sleep 1; done
    fi
    for daemon in slurmd slurmctld; do
        [[ -f $DIR/$daemon.pid ]] && kill "$(cat "$DIR/$daemon.pid")" 2>/dev/null || true
        rm -f "$DIR/$daemon.pid"
    done
    [[ -S $DIR/munge/munge.socket ]] && munged --stop --socket="$DIR/munge/munge.socket" >/dev/null 2>&1 || true
    exit 0
fi

(($(id -u) == 0)) || die "the daemons run as root here: sudo bash $0 start $2"
for command in munged slurmctld slurmd sinfo; do
    command -v $command >/dev/null || die "$command not found (apt-get install slurm-wlm munge)"
done
mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log"
chmod 700 "$DIR/munge"
[[ -s $DIR/munge/munge.key ]] || (umask 077 && head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
# --force: the socket lies in a private folder (root is the only client here), which munged warns about
munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    die "munged did not start (see $DIR/munge/munged.log)"

NODE=$(slurmd -C | head -1)  # NodeName=HOST CPUs=... RealMemory=...
HOST=${NODE%% *}
HOST=${HOST#NodeName=}
cat >"$CONF" <<EOF
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=/dev/null
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=10
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=$HOST MaxTime=10 State=UP
EOF
slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
for _ in $(seq 30); do
    [[ $(sinfo --noheader --format=%T 2>/dev/null) == idle ]] && { echo "export SLURM_CONF=$CONF"; exit 0; }
    sleep 1
done
die "the node did not become idle within 30 s: $(sinfo --noheader 2>&1); see $DIR/log/"
