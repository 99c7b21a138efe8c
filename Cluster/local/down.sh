#!/usr/bin/env bash
# Stops the cluster that up.sh started: every node (SIGTERM, so it leaves the cluster; SIGKILL
# after WEFT_STOP_TIMEOUT seconds, default 10), then etcd; removes the namespaces, veths and
# bridge. Safe to run twice, or after an up.sh that failed half way.
#
#   down.sh [--purge] [--net] [--quiet]
#
#   --purge   also delete the state dir (logs, data dirs); without it they stay for a look
#   --net     with no cluster.env (state dir gone), still remove namespaces WEFT_NS_PREFIX<n>
#             (weft-h<n>) and bridge WEFT_BRIDGE (weftbr0)
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
net=0
quiet=0
while (($# > 0)); do
  case $1 in
    --purge) purge=1; shift ;;
    --net) net=1; shift ;;
    --quiet) quiet=1; shift ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
say() { if ((quiet == 0)); then log "$@"; fi; }

if [[ -f $ENV_FILE ]]; then
  load_env
  pids=()
  for ((i = 1; i <= WEFT_N; i++)); do
    if pid=$(node_pid "$i"); then pids+=("$pid"); fi
  done
  if ((${#pids[@]} > 0)); then
    say "stopping ${#pids[@]} node(s): ${pids[*]}"
    stop_pids "${pids[@]}"
  fi
  if pid=$(etcd_pid); then
    say "stopping etcd (pid $pid)"
    stop_pids "$pid"
  fi
else
  # No cluster.env: up.sh started nothing here (it writes cluster.env before it creates
  # anything). The network is only touched on request, as it may belong to another state dir.
  WEFT_MODE=none
  WEFT_NS_PREFIX=${WEFT_NS_PREFIX:-weft-h}
  WEFT_BRIDGE=${WEFT_BRIDGE:-weftbr0}
  if ((net == 1)); then
    WEFT_MODE=netns
  else
    say "no cluster at $STATE_DIR"
    if ip link show "$WEFT_BRIDGE" > /dev/null 2>&1; then
      log "note: bridge $WEFT_BRIDGE exists (a cluster with another state dir?); down.sh --net removes it"
    fi
  fi
fi

if [[ $WEFT_MODE == netns ]]; then
  net_down
  say "network removed (namespaces ${WEFT_NS_PREFIX}<n>, bridge $WEFT_BRIDGE)"
fi

if [[ -d $STATE_DIR ]]; then
  rm -rf "${STATE_DIR:?}/pids" "$STATE_DIR/partitions"
  rm -f "$ENV_FILE" "$STATE_DIR/cluster.json"
  if ((purge == 1)); then
    rm -rf "$STATE_DIR/etcd" "$STATE_DIR/data" "$STATE_DIR/logs" "$STATE_DIR/extra-args"
    rmdir "$STATE_DIR" 2> /dev/null || log "warning: $STATE_DIR holds files up.sh did not make; left in place"
    say "state dir $STATE_DIR removed"
  else
    say "logs and data kept in $STATE_DIR (down.sh --purge removes them)"
  fi
fi
