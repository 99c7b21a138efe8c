#!/usr/bin/env bash
# Undoes partition.sh on host I (or on every host with --all): link up, qdiscs and DROP rules
# removed, SIGCONT for a paused node. Safe to run on a host that is not partitioned.
#
#   heal.sh I | --all
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 1)) || die "usage: heal.sh I | --all"
load_env
if [[ $1 == --all ]]; then
  hosts=$(seq 1 "$WEFT_N")
else
  check_index "$1"
  hosts=$((10#$1))
fi
for i in $hosts; do
  marker=$STATE_DIR/partitions/node-$i
  was=$(cat "$marker" 2> /dev/null) || was=
  if [[ $WEFT_MODE == loopback || $was == pause ]]; then
    if pid=$(node_pid "$i"); then kill -CONT "$pid"; fi
  fi
  if [[ $WEFT_MODE == netns ]]; then net_heal "$i"; fi
  rm -f "$marker"
  if [[ -n $was ]]; then
    log "node $i ($(node_addr "$i")) healed (was: $was)"
  elif [[ $1 != --all ]]; then
    log "node $i ($(node_addr "$i")) was not partitioned"
  fi
done
