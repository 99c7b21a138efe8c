#!/usr/bin/env bash
# Starts host I's node again with the same arguments and data dir (after kill.sh, or to
# bounce a running node: a running one is first stopped with SIGTERM). Waits, bounded by
# WEFT_READY_TIMEOUT (default 60 s), for its ready line and /healthz, unless --no-wait or the
# host is partitioned (it could not become ready).
#
#   restart.sh I [--no-wait]
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wait=1
idx=
for a in "$@"; do
  case $a in
    --no-wait) wait=0 ;;
    *) [[ -z $idx ]] || die "usage: restart.sh I [--no-wait]"; idx=$a ;;
  esac
done
load_env
check_index "$idx"
i=$((10#$idx))
if pid=$(node_pid "$i"); then
  log "node $i is running (pid $pid): stopping it first"
  stop_pids "$pid"
fi
part=$STATE_DIR/partitions/node-$i
if [[ -f $part && $(cat "$part") == pause ]]; then
  # A pause partition belonged to the old process.
  rm -f "$part"
fi
start_node "$i"
if [[ -f $part ]]; then
  log "node $i is partitioned ($(cat "$part")): started, not waiting for it to be ready; heal.sh $i"
elif ((wait == 1)); then
  wait_ready "$i"
fi
log "node $i restarted: $(node_addr "$i") pid $(node_pid "$i" || echo '?')"
