#!/usr/bin/env bash
# Cluster bring-up: three "node" processes register under nodes/ with a lease (kept alive
# while they run); a fourth waits until all three are there, then goes. When a node stops,
# its lease is revoked and its key disappears.
#
# Usage: Examples/bringup.sh [path/to/weft]   (WEFT_SERVER may point at a running server or at
#        any node of a cluster; without it the script starts its own `weft up` on a free port.)
set -euo pipefail
WEFT=${1:-weft}
OWN=""
if [ -z "${WEFT_SERVER:-}" ]; then
  LOG=$(mktemp)
  "$WEFT" up --listen 127.0.0.1:0 --json >"$LOG" 2>/dev/null &
  OWN=$!
  for _ in $(seq 1 100); do grep -q address "$LOG" && break; sleep 0.05; done
  export WEFT_SERVER=$(sed -E 's/.*"address":"([^"]+)".*/\1/' "$LOG")
fi
NODES=()
cleanup() {
  for p in "${NODES[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${NODES[@]}" 2>/dev/null || true
  if [ -n "$OWN" ]; then kill -TERM "$OWN"; wait "$OWN" 2>/dev/null || true; fi
}
trap cleanup EXIT

for n in 1 2 3; do
  ( sleep "0.$n"; exec "$WEFT" state put "nodes/node-$n" "10.0.0.$n" --ttl 5 --hold >/dev/null ) &
  NODES+=($!)
done

echo "waiting for 3 nodes under nodes/ ..."
"$WEFT" state wait --prefix nodes/ --count 3 --timeout 30
echo "all 3 nodes registered: go"
