#!/usr/bin/env bash
# Shows the local cluster: etcd, each node's pid, process state (running, paused, dead),
# /healthz code and partition; then `weft status` against the first live, unpartitioned node.
# Exits with weft status's exit code (1 when no node can be asked).
#
#   status.sh [--json]      --json: {"cluster": {…}, "status": <weft status --json>}
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

json=0
case ${1-} in
  --json) json=1 ;;
  "") ;;
  *) die "usage: status.sh [--json]" ;;
esac
load_env

# The node to ask: alive, not paused, not partitioned, /healthz answering.
target=
for ((i = 1; i <= WEFT_N; i++)); do
  if pid=$(node_pid "$i") && [[ $(proc_state "$pid") != T && ! -f $STATE_DIR/partitions/node-$i ]] &&
    [[ $(http_code "http://$(node_http "$i")/healthz" 1) != 000 ]]; then
    target=$(node_addr "$i")
    break
  fi
done

if ((json == 1)); then
  rc=1
  out=null
  if [[ -n $target ]]; then
    if out=$("$WEFT_BIN" status --server "$target" --json); then rc=0; else rc=$?; out=null; fi
    [[ -n $out ]] || out=null
  fi
  printf '{"cluster":%s,"statusFrom":%s,"status":%s}\n' "$(cluster_json live)" \
    "$([[ -n $target ]] && json_str "$target" || echo null)" "$out"
  exit "$rc"
fi

etcd_state=dead
if pid=$(etcd_pid); then
  etcd_state="pid $pid, $(curl --noproxy '*' -s -m 1 "$WEFT_ETCD_LOCAL_URL/health" 2> /dev/null || echo 'no answer')"
fi
echo "mode $WEFT_MODE, $WEFT_N node(s), state dir $STATE_DIR"
echo "etcd $WEFT_ETCD_URL ($etcd_state)"
printf '  %-2s %-9s %-18s %-18s %-8s %-8s %-8s %s\n' '#' namespace address http pid state healthz partition
for ((i = 1; i <= WEFT_N; i++)); do
  state=dead
  if pid=$(node_pid "$i"); then
    state=running
    [[ $(proc_state "$pid") != T ]] || state=paused
  else
    pid=-
  fi
  ns=-
  [[ $WEFT_MODE != netns ]] || ns=$(ns_name "$i")
  part=$(cat "$STATE_DIR/partitions/node-$i" 2> /dev/null) || part=-
  printf '  %-2d %-9s %-18s %-18s %-8s %-8s %-8s %s\n' "$i" "$ns" "$(node_addr "$i")" "$(node_http "$i")" \
    "$pid" "$state" "$(http_code "http://$(node_http "$i")/healthz" 1)" "$part"
done
echo
if [[ -z $target ]]; then
  echo "no live, reachable node to ask for weft status"
  exit 1
fi
echo "weft status --server $target:"
exec "$WEFT_BIN" status --server "$target"
