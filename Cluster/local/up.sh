#!/usr/bin/env bash
# Brings up a Weft cluster of N nodes on this machine: one etcd, and one `weft node` per
# network namespace weft-h1..N (10.77.0.11.., behind bridge weftbr0 at 10.77.0.1), or, with
# --loopback (or when namespaces are not allowed here), on 127.0.0.1 ports 7400+10*i.
#
#   up.sh N [--data] [--replicas R] [--lease-ttl S] [--loopback | --netns] [--json] [-- NODE-ARGS…]
#
#   --data         give each node a data directory under the state dir (kept across restart.sh)
#   --replicas R   passed to every node (chain length)
#   --lease-ttl S  passed to every node (membership lease, seconds)
#   --loopback     no namespaces: nodes on 127.0.0.1:7400+10*i (http 7480+10*i), N <= 8
#   --netns        namespaces or fail (no fallback to loopback)
#   --json         print a JSON summary on stdout instead of the table
#   -- NODE-ARGS   passed as they are to every `weft node` (e.g. -- --shards 16)
#
# Environment: WEFT_BIN (default .build/release/weft, then .build/debug/weft), WEFT_CLUSTER_DIR
# (state dir, default /tmp/weft-cluster), WEFT_READY_TIMEOUT (s, default 60), WEFT_NS_PREFIX
# (weft-h), WEFT_BRIDGE (weftbr0), WEFT_SUBNET (10.77.0), WEFT_KEEP_ON_FAILURE=1 (leave a
# failed cluster up for inspection instead of tearing it down).
# Every up starts fresh: a new etcd data dir and empty node data dirs.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

n=
data=0
replicas=
lease_ttl=
mode=auto
json=0
extra=()
while (($# > 0)); do
  case $1 in
    --data) data=1; shift ;;
    --replicas) replicas=${2:?--replicas needs a number}; shift 2 ;;
    --lease-ttl) lease_ttl=${2:?--lease-ttl needs seconds}; shift 2 ;;
    --loopback) mode=loopback; shift ;;
    --netns) mode=netns; shift ;;
    --json) json=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) [[ -z $n ]] || die "N given twice"; n=$1; shift ;;
  esac
done
if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 200)); then
  usage >&2
  die "N must be 1..200, got '${n}'"
fi
[[ -z $replicas || $replicas =~ ^[0-9]+$ ]] || die "--replicas must be a number"
[[ -z $lease_ttl || $lease_ttl =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--lease-ttl must be a number of seconds"
command -v curl > /dev/null || die "curl is needed (apt-get install curl)"
command -v "${ETCD_BIN:-etcd}" > /dev/null || die "etcd is needed (apt-get install etcd-server)"

export WEFT_STATUS=starting WEFT_N=$n WEFT_STATE_DIR=$STATE_DIR WEFT_DATA=$data
export WEFT_REPLICAS=$replicas WEFT_LEASE_TTL=$lease_ttl
WEFT_BIN=$(resolve_weft_bin)
export WEFT_BIN
export WEFT_NS_PREFIX=${WEFT_NS_PREFIX:-weft-h} WEFT_BRIDGE=${WEFT_BRIDGE:-weftbr0} WEFT_SUBNET=${WEFT_SUBNET:-10.77.0}
[[ $WEFT_SUBNET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "WEFT_SUBNET must be three octets, like 10.77.0"
((${#WEFT_NS_PREFIX} + ${#n} + 2 <= 15)) || die "WEFT_NS_PREFIX too long for interface names (15 chars)"

# Refuse to start over a live cluster; clean up what a dead or partial one left.
if [[ -f $ENV_FILE ]]; then
  (
    load_env
    for ((i = 1; i <= WEFT_N; i++)); do
      if node_pid "$i" > /dev/null; then exit 1; fi
    done
    if etcd_pid > /dev/null; then exit 1; fi
  ) || die "a cluster is running from $STATE_DIR: run down.sh first"
  "$WEFT_LOCAL_DIR/down.sh" --quiet
fi

mkdir -p "$STATE_DIR"
rm -rf "${STATE_DIR:?}/etcd" "$STATE_DIR/data" "$STATE_DIR/pids" "$STATE_DIR/logs" "$STATE_DIR/partitions" \
  "$STATE_DIR/cluster.json" "$STATE_DIR/extra-args"
mkdir -p "$STATE_DIR/pids" "$STATE_DIR/logs" "$STATE_DIR/partitions"
if ((${#extra[@]} > 0)); then printf '%s\n' "${extra[@]}" > "$STATE_DIR/extra-args"; fi
EXTRA_ARGS=("${extra[@]}")

# From here on a failure tears the partial cluster down again (logs stay in the state dir).
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    if [[ ${WEFT_KEEP_ON_FAILURE:-0} == 1 ]]; then
      log "failed; cluster left as it is (WEFT_KEEP_ON_FAILURE=1): run down.sh when done"
    else
      log "failed; tearing down (logs stay in $STATE_DIR/logs)"
      "$WEFT_LOCAL_DIR/down.sh" --quiet || true
    fi
  fi
}
trap on_exit EXIT

# Network: namespaces if allowed, else loopback.
WEFT_MODE=$mode
if [[ $mode != loopback ]]; then
  WEFT_MODE=netns
  if command -v ip > /dev/null; then
    if ip link show "$WEFT_BRIDGE" > /dev/null 2>&1 || ip netns list 2> /dev/null | grep -q "^${WEFT_NS_PREFIX}[0-9]"; then
      die "bridge $WEFT_BRIDGE or namespaces ${WEFT_NS_PREFIX}<n> exist (a cluster with another WEFT_CLUSTER_DIR?); down.sh --net removes them"
    fi
  fi
  write_env
  if ! command -v ip > /dev/null || ! net_up 2> "$STATE_DIR/logs/net.log"; then
    net_down
    [[ $mode == auto ]] || die "could not create namespaces/bridge: $(tr '\n' ' ' < "$STATE_DIR/logs/net.log")"
    log "warning: network namespaces are not available here ($(head -n1 "$STATE_DIR/logs/net.log")); falling back to --loopback"
    WEFT_MODE=loopback
  fi
fi
export WEFT_MODE

if [[ $WEFT_MODE == loopback ]]; then
  ((n <= 8)) || die "--loopback supports up to 8 nodes (ports 7400+10*i and 7480+10*i would collide)"
  command -v ss > /dev/null || die "ss (iproute2) is needed"
  for ((i = 1; i <= n; i++)); do
    for addr in "$(node_addr "$i")" "$(node_http "$i")"; do
      port_free "${addr##*:}" || die "port ${addr##*:} (node $i) is in use"
    done
  done
  # etcd: 2379/2380 if free, else the first free pair above.
  port=2379
  until port_free "$port" && port_free $((port + 1)); do
    port=$((port + 2))
    ((port < 2479)) || die "no free port pair for etcd in 2379..2479"
  done
  export WEFT_ETCD_URL=http://127.0.0.1:$port WEFT_ETCD_LOCAL_URL=http://127.0.0.1:$port
  etcd_listen=127.0.0.1:$port
  etcd_peer=127.0.0.1:$((port + 1))
else
  export WEFT_ETCD_URL=http://$WEFT_SUBNET.1:2379 WEFT_ETCD_LOCAL_URL=http://$WEFT_SUBNET.1:2379
  etcd_listen=$WEFT_SUBNET.1:2379
  if port_free 2379; then
    etcd_listen+=,127.0.0.1:2379
    WEFT_ETCD_LOCAL_URL=http://127.0.0.1:2379
  else
    log "warning: 127.0.0.1:2379 is taken; etcd listens on $WEFT_SUBNET.1:2379 only"
  fi
  etcd_peer=$WEFT_SUBNET.1:2380
fi
nodes=() https=()
for ((i = 1; i <= n; i++)); do
  nodes+=("$(node_addr "$i")")
  https+=("$(node_http "$i")")
done
WEFT_NODES=$(IFS=,; echo "${nodes[*]}")
WEFT_HTTPS=$(IFS=,; echo "${https[*]}")
export WEFT_NODES WEFT_HTTPS
write_env

# etcd, in the root namespace.
spawn etcd "$STATE_DIR/logs/etcd.log" "$STATE_DIR/logs/etcd.log" \
  "$REPO_ROOT/Cluster/etcd/run.sh" --data "$STATE_DIR/etcd" --listen "$etcd_listen" \
  --advertise "$WEFT_ETCD_URL" --peer "$etcd_peer" --name weft-local
wait_etcd
log "etcd up at $WEFT_ETCD_URL (pid $(etcd_pid))"

# The nodes: start all, then wait for each.
for ((i = 1; i <= n; i++)); do start_node "$i"; done
for ((i = 1; i <= n; i++)); do wait_ready "$i"; done

WEFT_STATUS=up
write_env
cluster_json static > "$STATE_DIR/cluster.json"
echo >> "$STATE_DIR/cluster.json"

if ((json == 1)); then
  cat "$STATE_DIR/cluster.json"
else
  echo "weft cluster up: $n node(s), mode $WEFT_MODE, etcd $WEFT_ETCD_URL, state $STATE_DIR"
  for ((i = 1; i <= n; i++)); do
    where=
    if [[ $WEFT_MODE == netns ]]; then where=$(ns_name "$i"); fi
    printf '  node %d  %-9s %-18s http %-18s pid %s\n' "$i" "$where" "$(node_addr "$i")" "$(node_http "$i")" "$(node_pid "$i")"
  done
fi
