# shellcheck shell=bash
# Shared by the Cluster/local scripts (sourced, not run): the state directory's layout,
# cluster.env, starting and stopping processes, and the namespace network.
#
# State directory (${WEFT_CLUSTER_DIR:-/tmp/weft-cluster}):
#   cluster.env          what up.sh made: mode, N, addresses, etcd URL (shell-sourceable KEY=value)
#   cluster.json         the same as JSON, plus pids and each node's ready line
#   extra-args           arguments after `--` on up.sh, passed to every node (one per line)
#   pids/{etcd,node-I}.pid
#   logs/etcd.log, logs/node-I.log (stderr, appended across restarts), logs/node-I.out (stdout)
#   partitions/node-I    the partition applied to node I (its method), removed by heal.sh
#   etcd/                etcd's data directory
#   data/node-I/         node I's --data directory (with up.sh --data)

WEFT_LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$WEFT_LOCAL_DIR/../.." && pwd)
STATE_DIR=${WEFT_CLUSTER_DIR:-/tmp/weft-cluster}
[[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
ENV_FILE=$STATE_DIR/cluster.env

# Bounds, in seconds (overridable from the environment).
READY_TIMEOUT_S=${WEFT_READY_TIMEOUT:-60}
STOP_TIMEOUT_S=${WEFT_STOP_TIMEOUT:-10}
ETCD_TIMEOUT_S=${WEFT_ETCD_TIMEOUT:-20}

log() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The weft binary as an absolute path: $WEFT_BIN, else .build/release/weft, else .build/debug/weft.
resolve_weft_bin() {
  local bin=${WEFT_BIN:-}
  if [[ -z $bin ]]; then
    if [[ -x $REPO_ROOT/.build/release/weft ]]; then
      bin=$REPO_ROOT/.build/release/weft
    elif [[ -x $REPO_ROOT/.build/debug/weft ]]; then
      bin=$REPO_ROOT/.build/debug/weft
    else
      die "no weft binary: run 'swift build -c release --product weft' or set WEFT_BIN"
    fi
  fi
  [[ -f $bin && -x $bin ]] || die "WEFT_BIN=$bin is not an executable file"
  printf '%s/%s\n' "$(cd "$(dirname "$bin")" && pwd)" "$(basename "$bin")"
}

# Loads cluster.env (dies if there is none) and the extra node arguments.
load_env() {
  [[ -f $ENV_FILE ]] || die "no cluster at $STATE_DIR (no cluster.env): run up.sh first"
  # shellcheck source=/dev/null
  source "$ENV_FILE"
  EXTRA_ARGS=()
  if [[ -f $STATE_DIR/extra-args ]]; then
    mapfile -t EXTRA_ARGS < "$STATE_DIR/extra-args"
  fi
}

# A value for cluster.env: as it is when it needs no quoting (so other languages can read
# KEY=value lines plainly), else single-quoted.
env_quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:,@%+=-]*$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Writes cluster.env from the WEFT_* variables up.sh set.
write_env() {
  local tmp=$ENV_FILE.tmp i
  {
    echo "# Written by Cluster/local/up.sh; read by the other scripts. KEY=value, quoted only where needed."
    for v in WEFT_STATUS WEFT_MODE WEFT_N WEFT_STATE_DIR WEFT_BIN WEFT_ETCD_URL WEFT_ETCD_LOCAL_URL \
      WEFT_NODES WEFT_HTTPS WEFT_DATA WEFT_REPLICAS WEFT_LEASE_TTL WEFT_NS_PREFIX WEFT_BRIDGE WEFT_SUBNET; do
      printf '%s=%s\n' "$v" "$(env_quote "${!v-}")"
    done
    for ((i = 1; i <= WEFT_N; i++)); do
      printf 'WEFT_NODE_%d=%s\nWEFT_HTTP_%d=%s\n' "$i" "$(node_addr "$i")" "$i" "$(node_http "$i")"
      if [[ $WEFT_MODE == netns ]]; then
        printf 'WEFT_NS_%d=%s\n' "$i" "$(ns_name "$i")"
      fi
    done
  } > "$tmp"
  mv "$tmp" "$ENV_FILE"
}

check_index() {
  if ! [[ ${1-} =~ ^[0-9]+$ ]] || ((10#$1 < 1 || 10#$1 > WEFT_N)); then
    die "node index must be 1..$WEFT_N, got '${1-}'"
  fi
}

# Addresses. netns: 10.77.0.(10+i):7400 in namespace weft-hI; loopback: 127.0.0.1:7400+10i.
ns_name() { printf '%s%d\n' "$WEFT_NS_PREFIX" "$1"; }
node_ip() {
  if [[ $WEFT_MODE == netns ]]; then printf '%s.%d\n' "$WEFT_SUBNET" $((10 + $1)); else echo 127.0.0.1; fi
}
node_addr() {
  if [[ $WEFT_MODE == netns ]]; then echo "$(node_ip "$1"):7400"; else echo "127.0.0.1:$((7400 + 10 * $1))"; fi
}
node_http() {
  if [[ $WEFT_MODE == netns ]]; then echo "$(node_ip "$1"):7480"; else echo "127.0.0.1:$((7480 + 10 * $1))"; fi
}

# The arguments of node I, the same on every start (so restart.sh repeats them exactly).
node_args() {
  local i=$1 addr
  addr=$(node_addr "$i")
  NODE_ARGS=(node --etcd "$WEFT_ETCD_URL" --listen "$addr" --advertise "$addr" --http "$(node_http "$i")")
  if [[ $WEFT_DATA == 1 ]]; then NODE_ARGS+=(--data "$STATE_DIR/data/node-$i"); fi
  if [[ -n $WEFT_REPLICAS ]]; then NODE_ARGS+=(--replicas "$WEFT_REPLICAS"); fi
  if [[ -n $WEFT_LEASE_TTL ]]; then NODE_ARGS+=(--lease-ttl "$WEFT_LEASE_TTL"); fi
  NODE_ARGS+=("${EXTRA_ARGS[@]}")
}

# ---- processes -------------------------------------------------------------------------

# Prints the pid in pids/NAME.pid if that process is alive and still ours: its command line
# holds MARK as a whole argument (a node's address, etcd's data dir), so a recycled pid or a
# zombie is never taken for it. Returns 1 otherwise.
live_pid() {
  local name=$1 mark=$2 pid
  pid=$(cat "$STATE_DIR/pids/$name.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$mark" || return 1
  echo "$pid"
}
node_pid() { live_pid "node-$1" "$(node_addr "$1")"; }
etcd_pid() { live_pid etcd "$STATE_DIR/etcd"; }

# R (running/sleeping), T (stopped: SIGSTOP), Z, … from /proc/PID/stat.
proc_state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo '?'; }

# Starts a command in its own session with output to files; the pid file gets the pid of the
# process that becomes the command (bash writes $$, then execs; `ip netns exec` execs too).
# Usage: spawn NAME OUT ERR CMD...
spawn() {
  local name=$1 out=$2 err=$3
  shift 3
  mkdir -p "$STATE_DIR/pids" "$STATE_DIR/logs"
  rm -f "$STATE_DIR/pids/$name.pid"
  # shellcheck disable=SC2016  # $$ and $0 are for the inner bash
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$STATE_DIR/pids/$name.pid" "$@" </dev/null >>"$out" 2>>"$err" &
  local t=0
  until [[ -s $STATE_DIR/pids/$name.pid ]]; do
    ((t++ < 100)) || die "could not start $name"
    sleep 0.05
  done
}

# Starts node I (in its namespace in netns mode).
start_node() {
  local i=$1 prefix=()
  node_args "$i"
  if [[ $WEFT_MODE == netns ]]; then prefix=(ip netns exec "$(ns_name "$i")"); fi
  if [[ $WEFT_DATA == 1 ]]; then mkdir -p "$STATE_DIR/data/node-$i"; fi
  mkdir -p "$STATE_DIR/logs"
  : > "$STATE_DIR/logs/node-$i.out"
  printf -- '--- %s: starting node %d: %s %s\n' "$(date -Is)" "$i" "$WEFT_BIN" "${NODE_ARGS[*]}" >> "$STATE_DIR/logs/node-$i.log"
  spawn "node-$i" "$STATE_DIR/logs/node-$i.out" "$STATE_DIR/logs/node-$i.log" "${prefix[@]}" "$WEFT_BIN" "${NODE_ARGS[@]}"
}

# HTTP status code of GET URL (000 when unreachable), with a short bound.
http_code() {
  curl --noproxy '*' -s -o /dev/null -m "${2:-2}" -w '%{http_code}' "$1" 2>/dev/null || true
}

# Waits (bounded by READY_TIMEOUT_S) for node I's ready line on stdout and a 200 on /healthz.
wait_ready() {
  local i=$1 deadline=$((SECONDS + READY_TIMEOUT_S)) pid http
  http=$(node_http "$i")
  while :; do
    if ! pid=$(node_pid "$i"); then
      log "node $i exited before it was ready; last lines of $STATE_DIR/logs/node-$i.log:"
      tail -n 20 "$STATE_DIR/logs/node-$i.log" >&2 || true
      return 1
    fi
    if grep -q '^{' "$STATE_DIR/logs/node-$i.out" 2>/dev/null &&
      [[ $(http_code "http://$http/healthz" 1) == 200 ]]; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      log "node $i (pid $pid) not ready after ${READY_TIMEOUT_S}s (ready line and /healthz 200); last log lines:"
      tail -n 20 "$STATE_DIR/logs/node-$i.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# Stops pids: SIGCONT (a paused process cannot act on SIGTERM), SIGTERM, then SIGKILL for
# whatever is left after STOP_TIMEOUT_S. Waits until they are gone (or reaped).
stop_pids() {
  (($# > 0)) || return 0
  local deadline=$((SECONDS + STOP_TIMEOUT_S)) p left
  kill -CONT "$@" 2>/dev/null || true
  kill -TERM "$@" 2>/dev/null || true
  while :; do
    left=()
    for p in "$@"; do
      if [[ -d /proc/$p && $(proc_state "$p") != Z ]]; then left+=("$p"); fi
    done
    ((${#left[@]} > 0)) || return 0
    if ((SECONDS >= deadline)); then
      log "still running after ${STOP_TIMEOUT_S}s, sending SIGKILL: ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      sleep 0.2
      return 0
    fi
    sleep 0.1
  done
}

# Waits (bounded) until etcd answers /health with true.
wait_etcd() {
  local deadline=$((SECONDS + ETCD_TIMEOUT_S))
  until curl --noproxy '*' -s -m 1 "$WEFT_ETCD_LOCAL_URL/health" 2>/dev/null | grep -q '"health":"true"'; do
    if ! etcd_pid > /dev/null; then
      log "etcd exited; last lines of $STATE_DIR/logs/etcd.log:"
      tail -n 20 "$STATE_DIR/logs/etcd.log" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "etcd not healthy after ${ETCD_TIMEOUT_S}s at $WEFT_ETCD_LOCAL_URL"
      return 1
    fi
    sleep 0.2
  done
}

# True when nothing listens on TCP port $1 (any address).
port_free() { [[ -z $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }

# ---- JSON ------------------------------------------------------------------------------

json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# The cluster as JSON (cluster_json static|live); live adds each node's process state,
# /healthz code and partition.
cluster_json() {
  local live=$1 i pid ready state code part
  printf '{"mode":%s,"n":%d,"stateDir":%s,"etcd":%s,' "$(json_str "$WEFT_MODE")" "$WEFT_N" \
    "$(json_str "$STATE_DIR")" "$(json_str "$WEFT_ETCD_URL")"
  pid=$(etcd_pid) || pid=null
  printf '"etcdPid":%s,"nodes":[' "$pid"
  for ((i = 1; i <= WEFT_N; i++)); do
    ((i == 1)) || printf ','
    pid=$(node_pid "$i") || pid=null
    ready=$(grep -m1 '^{' "$STATE_DIR/logs/node-$i.out" 2>/dev/null) || ready=null
    printf '{"index":%d,"address":%s,"http":%s,"pid":%s,"ready":%s' "$i" "$(json_str "$(node_addr "$i")")" \
      "$(json_str "$(node_http "$i")")" "$pid" "$ready"
    if [[ $WEFT_MODE == netns ]]; then printf ',"namespace":%s' "$(json_str "$(ns_name "$i")")"; fi
    if [[ $live == live ]]; then
      state=dead
      if [[ $pid != null ]]; then
        state=running
        [[ $(proc_state "$pid") == T ]] && state=paused
      fi
      code=$(http_code "http://$(node_http "$i")/healthz" 1)
      part=$(cat "$STATE_DIR/partitions/node-$i" 2>/dev/null) || part=
      printf ',"state":%s,"healthz":%d,"partition":%s' "$(json_str "$state")" "$((10#${code:-0}))" \
        "$([[ -n $part ]] && json_str "$part" || echo null)"
    fi
    printf '}'
  done
  printf ']}'
}

# ---- network (netns mode) --------------------------------------------------------------

# Creates the bridge, and per node a namespace with a veth into the bridge (host side named
# like the namespace, inside side eth0). Returns non-zero at the first failure.
net_up() {
  local i ns
  ip link add "$WEFT_BRIDGE" type bridge || return 1
  ip addr add "$WEFT_SUBNET.1/24" dev "$WEFT_BRIDGE" || return 1
  ip link set "$WEFT_BRIDGE" up || return 1
  for ((i = 1; i <= WEFT_N; i++)); do
    ns=$(ns_name "$i")
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up || return 1
    ip link add "$ns" type veth peer name "$ns-p" || return 1
    ip link set "$ns-p" netns "$ns" || return 1
    ip -n "$ns" link set "$ns-p" name eth0 || return 1
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
    ip link set "$ns" master "$WEFT_BRIDGE" up || return 1
  done
}

# Removes every namespace and veth named PREFIX<digits>, and the bridge. Idempotent.
net_down() {
  local ns
  if ! command -v ip > /dev/null; then return 0; fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    if [[ $ns =~ ^${WEFT_NS_PREFIX}[0-9]+$ ]]; then ip netns del "$ns" 2>/dev/null || true; fi
  done
  for ns in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    if [[ $ns =~ ^${WEFT_NS_PREFIX}[0-9]+$ ]]; then ip link del "$ns" 2>/dev/null || true; fi
  done
  if ip link show "$WEFT_BRIDGE" > /dev/null 2>&1; then ip link del "$WEFT_BRIDGE" 2>/dev/null || true; fi
}

# Undoes every kind of partition on node I (netns mode); errors ignored, so it is idempotent.
# Returns once both ends of the veth are up again and the bridge forwards (bounded, 5 s):
# a link's carrier comes back asynchronously, up to about a second after `ip link set up`.
net_heal() {
  local ns t
  ns=$(ns_name "$1")
  ip link set "$ns" up 2>/dev/null || true
  for ((t = 0; t < 50; t++)); do
    if [[ $(ip -o link show "$ns" 2>/dev/null) == *"state UP"* &&
      $(ip -n "$ns" -o link show eth0 2>/dev/null) == *"state UP"* &&
      $(bridge -o link show dev "$ns" 2>/dev/null) == *"state forwarding"* ]]; then
      break
    fi
    sleep 0.1
  done
  tc qdisc del dev "$ns" root 2>/dev/null || true
  ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
  if command -v nft > /dev/null; then ip netns exec "$ns" nft delete table inet weft_partition 2>/dev/null || true; fi
  if command -v iptables > /dev/null; then
    while ip netns exec "$ns" iptables -D INPUT -i eth0 -j DROP 2>/dev/null; do :; done
    while ip netns exec "$ns" iptables -D OUTPUT -o eth0 -j DROP 2>/dev/null; do :; done
  fi
}
