#!/usr/bin/env bash
# A short tour of Weft against a fresh embedded node: put/get, versions and CAS, a watch,
# a barrier of 3 parties, functions (deploy, invoke, a map/reduce word count), then shut down.
# Used by `make run`; the example functions are expected next to the weft binary.
set -euo pipefail
WEFT=${1:-weft}
LOG=$(mktemp)
"$WEFT" up --listen 127.0.0.1:0 --json >"$LOG" 2>"$LOG.err" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true; rm -f "$LOG" "$LOG.err" "$LOG.text"' EXIT
for _ in $(seq 1 100); do grep -q address "$LOG" && break; sleep 0.05; done
export WEFT_SERVER=$(sed -E 's/.*"address":"([^"]+)".*/\1/' "$LOG")
echo "== weft up is listening on $WEFT_SERVER"

echo "== put and get"
v=$("$WEFT" state put greeting "hello, weft")
echo "greeting written at version $v: $("$WEFT" state get greeting)"

echo "== compare-and-set: a stale version is refused (exit 4)"
"$WEFT" state cas greeting --expect "$v" "hello again" >/dev/null
set +e; "$WEFT" state cas greeting --expect "$v" "lost update" 2>/dev/null; code=$?; set -e
echo "second cas with the old version exited $code (versionMismatch)"

echo "== watch: a watcher sees three puts in order"
"$WEFT" state watch --prefix jobs/ --count 3 --timeout 10 &
WATCH=$!
sleep 0.3
for i in 1 2 3; do "$WEFT" state put "jobs/$i" "job $i" >/dev/null; done
wait $WATCH

echo "== counters"
for i in 1 2 3; do "$WEFT" state add visits 1 >/dev/null; done
echo "visits = $("$WEFT" state get visits)"

echo "== barrier of 3 parties"
PARTIES=()
for p in a b c; do
  ( n=$("$WEFT" barrier demo --parties 3 --timeout 10); echo "party $p passed the barrier (arrived #$n)" ) &
  PARTIES+=($!)
done
wait "${PARTIES[@]}"

BIN=$(dirname "$WEFT")
if [ -x "$BIN/hello" ] && [ -x "$BIN/weft-launcher" ]; then
  echo "== functions: deploy hello, invoke it (cold, then warm)"
  "$WEFT" deploy hello "$BIN/hello" --memory 64 --timeout 5s
  for who in world again; do echo "$("$WEFT" invoke hello "$who")"; done
  echo "== word count: the driver maps over chunks, the mapper adds to state counters"
  "$WEFT" deploy wordcount "$BIN/wordcount" --concurrency 2 >/dev/null
  "$WEFT" deploy wordcount-map "$BIN/wordcount" --concurrency 4 >/dev/null
  for i in $(seq 1 200); do echo "the weft holds the warp, the warp holds the weft $i"; done > "$LOG.text"
  "$WEFT" invoke wordcount --file "$LOG.text"; echo
else
  echo "== (functions skipped: build the hello, wordcount and weft-launcher products to see them)"
fi

echo "== status"
"$WEFT" status
echo "== done; stopping the node"
