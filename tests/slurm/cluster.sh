#!/usr/bin/env bash
# A real Slurm cluster on this machine, for the tests labelled `slurm`:
# munged, slurmctld and NODES slurmd daemons (Debian's packages), all state,
# sockets, logs and config under one scratch directory, ports chosen free.
#
#   tests/slurm/cluster.sh up   DIR [NODES]   # start (NODES=1: the host itself; 2: n1 and n2 on this host)
#   tests/slurm/cluster.sh down DIR           # stop every daemon it started, by PID
#   tests/slurm/cluster.sh env  DIR           # print `export SLURM_CONF=...`
#
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf. Needs root
# (slurmd runs jobs as their user) and slurmctld slurmd slurm-client munge
# (scripts/setup.sh installs them). The gotchas it works around: docs/slurm.md.
set -euo pipefail

cmd=${1:?usage: cluster.sh up|down|env DIR [NODES]}
dir=${2:?usage: cluster.sh up|down|env DIR [NODES]}
nodes=${3:-2}

free_port() {  # a TCP port nobody listens on, from a range unlikely to be used
  local p
  for p in $(seq "$1" "$(($1 + 200))"); do
    if ! ss -Hltn "sport = :$p" | grep -q .; then
      if [ -z "${taken:-}" ] || ! grep -qw "$p" <<<"$taken"; then
        taken="${taken:-} $p"
        echo "$p"
        return
      fi
    fi
  done
  echo "cluster.sh: no free port from $1" >&2
  exit 1
}

stop_pidfiles() {  # TERM every daemon named by these pid files at once, wait, then KILL (by PID only)
  local f pid pids=()
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    rm -f "$f"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

case "$cmd" in
  env)
    echo "export SLURM_CONF=$dir/slurm.conf"
    ;;
  down)
    [ -d "$dir" ] || exit 0
    export SLURM_CONF=$dir/slurm.conf
    stop_pidfiles "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid" "$dir/munge/munged.pid"
    echo "cluster.sh: stopped the cluster in $dir"
    ;;
  up)
    [ "$(id -u)" -eq 0 ] || { echo "cluster.sh: needs root (slurmd runs jobs as their user)" >&2; exit 1; }
    for b in munged slurmctld slurmd sbatch; do
      command -v "$b" >/dev/null || { echo "cluster.sh: $b not found: install slurmctld slurmd slurm-client munge (scripts/setup.sh)" >&2; exit 1; }
    done
    "$0" down "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
    mkdir -p "$dir"/{state,log,run,munge}
    dir=$(cd "$dir" && pwd)
    host=$(hostname)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
    ctld_port=$(free_port 16817)
    # munge: its own key and socket (mode 755 directory), run as the munge user.
    chown munge:munge "$dir/munge"
    chmod 755 "$dir/munge"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$dir/munge/munge.key"
    chmod 600 "$dir/munge/munge.key"
    runuser -u munge -- munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket.2" \
      --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
    cat >"$dir/slurm.conf" <<CONF
ClusterName=shammietest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket.2,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=600
JobRequeue=1
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
# Per-node scratch: two slurmd on one host must not share PMIx's client directories.
TmpFS=$dir/tmp/%n
# ... and Open MPI's shared-memory segments (named by host name) need a directory per node too.
TaskProlog=$dir/task_prolog.sh
CONF
    cat >"$dir/task_prolog.sh" <<PROLOG
#!/bin/sh
echo "export OMPI_MCA_btl_vader_backing_directory=$dir/tmp/\$SLURMD_NODENAME"
PROLOG
    chmod 755 "$dir/task_prolog.sh"
    names=()
    if [ "$nodes" -le 1 ]; then
      names=("$host")
      echo "NodeName=$host NodeAddr=127.0.0.1 Port=$(free_port 16900) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN" >>"$dir/slurm.conf"
    else
      for i in $(seq "$nodes"); do
        names+=("n$i")
        echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$(free_port $((16900 + i * 10))) CPUs=$cpus RealMemory=$((mem_mb / nodes)) State=UNKNOWN" >>"$dir/slurm.conf"
      done
    fi
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >>"$dir/slurm.conf"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld
    for n in "${names[@]}"; do
      mkdir -p "$dir/spool/slurmd-$n" "$dir/tmp/$n"
      slurmd -N "$n"
    done
    # Ready when every node is idle.
    for _ in $(seq 300); do
      idle=$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
      [ "$idle" -ge "${#names[@]}" ] && { echo "cluster.sh: ${#names[@]} node(s) up (${names[*]}); SLURM_CONF=$SLURM_CONF"; exit 0; }
      sleep 0.1
    done
    echo "cluster.sh: nodes did not come up; logs in $dir/log" >&2
    sinfo -N >&2 || true
    tail -n 20 "$dir"/log/*.log >&2 || true
    exit 1
    ;;
  *)
    echo "usage: cluster.sh up|down|env DIR [NODES]" >&2
    exit 2
    ;;
esac
