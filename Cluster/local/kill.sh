#!/usr/bin/env bash
# Crashes host I's node: SIGKILL, no clean leave (its etcd lease runs out instead).
#
#   kill.sh I
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 1)) || die "usage: kill.sh I"
load_env
check_index "$1"
i=$((10#$1))
if ! pid=$(node_pid "$i"); then
  log "node $i ($(node_addr "$i")) is not running"
  exit 0
fi
kill -KILL "$pid"
for ((t = 0; t < 50; t++)); do
  [[ -d /proc/$pid && $(proc_state "$pid") != Z ]] || break
  sleep 0.1
done
log "node $i ($(node_addr "$i")) killed (pid $pid, SIGKILL)"
