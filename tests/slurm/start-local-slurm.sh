#!/usr/bin/env bash
# Install (Debian packages) and start a single-node SLURM cluster on this machine, for the tests.
# Needs root and apt. Idempotent: daemons already running are left alone.
# Every daemon this script starts is recorded as "name pid" in $STATE_DIR/pids;
# stop-local-slurm.sh stops exactly those, by pid.
#
# No slurmdbd: `sacct` does not work, so run Snakemake with `--slurm-status-command squeue`
# (the plugin otherwise waits forever on a failing sacct). MinJobAge=300 keeps finished jobs
# visible to squeue long enough for the plugin's status checks.
set -euo pipefail

STATE_DIR="${MATSCREEN_SLURM_STATE:-/run/matscreen-slurm}"
WAIT_S="${SLURM_WAIT_S:-60}"
NODE=localhost
PIDS="$STATE_DIR/pids"

say() { echo "[start-local-slurm] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
record() {  # name pidfile: append "name pid" to $PIDS once the daemon has written its pid
    local end=$((SECONDS + 15)) pid=""
    until [[ "$pid" =~ ^[0-9]+$ ]]; do   # a daemon may truncate and rewrite its pid file after forking
        [ "$SECONDS" -lt "$end" ] || die "$1 wrote no pid to $2"
        sleep 0.2; pid="$(cat "$2" 2>/dev/null || true)"
    done
    echo "$1 $pid" >> "$PIDS"
}
wait_until() {  # seconds what cmd...
    local end=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || die "timed out waiting for $what"
        sleep 0.5
    done
}

[ "$(id -u)" -eq 0 ] || die "needs root"
mkdir -p "$STATE_DIR"; touch "$PIDS"

need=()
for p in munge slurm-client slurmctld slurmd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || die "no apt-get to install ${need[*]}"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# munge: authentication between the SLURM daemons and clients
if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! (munge -n | unmunge) >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force   # --force: a killed munged leaves a stale socket
    wait_until 15 munged sh -c 'munge -n | unmunge'
    record munged /run/munge/munged.pid
fi

# slurm.conf: one node "localhost" with this machine's CPUs and most of its memory
HW="$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *RealMemory=[0-9]*//')"
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') - 512 ))
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf="$(mktemp)"
cat > "$conf" <<CONF
# written by matscreen tests/slurm/start-local-slurm.sh
ClusterName=matscreen
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
MinJobAge=300
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$NODE NodeAddr=127.0.0.1 $HW RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$conf" /etc/slurm/slurm.conf; then
    install -m 0644 "$conf" /etc/slurm/slurm.conf
    for d in slurmd slurmctld; do   # running daemons must reread a changed config
        if alive "/run/$d.pid"; then kill "$(cat /run/$d.pid)"; sleep 1; fi
    done
fi
rm -f "$conf"

if ! alive /run/slurmctld.pid; then
    slurmctld
    wait_until 30 slurmctld sh -c 'scontrol ping | grep -q UP'
    record slurmctld /run/slurmctld.pid
fi
if ! alive /run/slurmd.pid; then
    slurmd -N "$NODE"
    record slurmd /run/slurmd.pid
fi

end=$((SECONDS + WAIT_S))
while :; do
    state="$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null || true)"
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*|fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    [ "$SECONDS" -lt "$end" ] || die "node $NODE not idle after ${WAIT_S}s (state '$state'); see /var/log/slurm/"
    sleep 0.5
done
say "cluster up: $(sinfo -h -o '%P %D %t %N')"
