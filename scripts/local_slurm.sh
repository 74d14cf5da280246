#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, to test `snakemake --profile slurm`.
#
#   scripts/local_slurm.sh install   apt-get the Debian packages (slurmctld slurmd slurm-client munge)
#   scripts/local_slurm.sh start     write /etc/slurm, start munged, slurmctld, slurmd; wait for the node
#   scripts/local_slurm.sh stop      stop those daemons (by their pid files only)
#   scripts/local_slurm.sh status    exit 0 when the node accepts jobs
#
# install/start/stop need root. Partitions: cpu (default) and gpu, both on this node, which
# declares FAKE_GPUS (default 1) GPUs of type GPU_TYPE (default v100) backed by /dev/null:
# GPU jobs are scheduled and see CUDA_VISIBLE_DEVICES, but there is no GPU. No slurmdbd, so
# no sacct: finished jobs stay visible to squeue for MinJobAge (1 h), which is what the
# Snakemake profile's `slurm-status-command: squeue` relies on. Idempotent.
set -euo pipefail

FAKE_GPUS=${FAKE_GPUS:-1}
GPU_TYPE=${GPU_TYPE:-v100}
WAIT_S=${WAIT_S:-90}
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "[local_slurm] $*"; }
die() { echo "[local_slurm] error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "'$1' needs root"; }

# The pid in FILE is alive and its command is NAME (pid files can be stale).
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

stop_daemon() {
  local file=$1 name=$2 pid i
  alive "$file" "$name" || { rm -f "$file"; return 0; }
  pid=$(cat "$file"); log "stopping $name (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do alive "$file" "$name" || break; sleep 0.25; done
  if alive "$file" "$name"; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$file"
}

wait_for() {  # SECONDS WHAT CMD...
  local seconds=$1 what=$2 i; shift 2
  for i in $(seq 1 $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "$what not up after ${seconds}s"
}

node_ready() {
  case "$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -1)" in idle|mixed|allocated|completing) return 0 ;; esac
  return 1
}

cmd_install() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "packages present"; return 0; }
  need_root install
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/local_slurm_apt.log 2>&1 \
    || { tail -20 /tmp/local_slurm_apt.log >&2; die "apt-get install failed"; }
}

slurm_conf() {
  # The hardware line exactly as slurmd detects it, so the node is not drained for a mismatch.
  local hw gres_node="" gres_types=""
  hw=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
  if [ "$FAKE_GPUS" -gt 0 ]; then gres_node=" Gres=gpu:$GPU_TYPE:$FAKE_GPUS"; gres_types="GresTypes=gpu"; fi
  cat <<EOF
# Written by scripts/local_slurm.sh: a one-node test cluster.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default a job without --mem takes all the node's memory and jobs serialise.
DefMemPerCPU=1024
# Finished jobs stay visible to squeue/scontrol this long (no slurmdbd, so no sacct).
MinJobAge=3600
KillWait=10
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
$gres_types
NodeName=$HOST NodeAddr=127.0.0.1 $hw$gres_node State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
}

gres_conf() {
  # A GPU without File= is dropped and the node drains; /dev/null stands in for the device.
  local i
  [ "$FAKE_GPUS" -gt 0 ] || return 0
  echo "AutoDetect=off"
  for i in $(seq 1 "$FAKE_GPUS"); do echo "NodeName=$HOST Name=gpu Type=$GPU_TYPE File=/dev/null"; done
}

cmd_start() {
  need_root start
  command -v slurmctld >/dev/null || die "SLURM is not installed (run: $0 install)"
  install -d -m 755 /etc/slurm /var/log/slurm /var/lib/slurm/slurmd
  install -d -o slurm -g slurm /var/lib/slurm/slurmctld
  chown slurm:slurm /var/log/slurm

  if [ ! -s /etc/munge/munge.key ]; then mungekey --create --keyfile=/etc/munge/munge.key; fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  alive /run/munge/munged.pid munged || { log "starting munged"; runuser -u munge -- /usr/sbin/munged; }
  wait_for 20 munged bash -c 'munge -n | unmunge'

  local conf gres
  conf=$(slurm_conf); gres=$(gres_conf)
  if [ "$conf" != "$(cat $CONF 2>/dev/null)" ] || [ "$gres" != "$(cat $GRES 2>/dev/null)" ]; then
    log "writing $CONF and $GRES"
    printf '%s\n' "$conf" >$CONF
    if [ -n "$gres" ]; then printf '%s\n' "$gres" >$GRES; else rm -f $GRES; fi
    stop_daemon /run/slurmd.pid slurmd
    stop_daemon /run/slurmctld.pid slurmctld
  fi
  alive /run/slurmctld.pid slurmctld || { log "starting slurmctld"; /usr/sbin/slurmctld; }
  wait_for 60 slurmctld bash -c 'scontrol ping | grep -q UP'
  alive /run/slurmd.pid slurmd || { log "starting slurmd"; /usr/sbin/slurmd; }

  local i
  for i in $(seq 1 $((WAIT_S * 4))); do
    node_ready && break
    # A node drained by an earlier configuration comes back once the config fits.
    case "$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -1)" in
      drain*|down*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
  done
  node_ready || { scontrol show node "$HOST" >&2 || true; die "node $HOST not idle after ${WAIT_S}s"; }
  log "up: partitions cpu, gpu; node $HOST with $FAKE_GPUS fake $GPU_TYPE GPU(s)"
}

cmd_stop() {
  need_root stop
  stop_daemon /run/slurmd.pid slurmd
  stop_daemon /run/slurmctld.pid slurmctld
  stop_daemon /run/munge/munged.pid munged
}

cmd_status() {
  command -v sinfo >/dev/null || { log "not installed"; return 1; }
  if node_ready; then sinfo; return 0; fi
  log "not running"; return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
