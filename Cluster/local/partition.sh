#!/usr/bin/env bash
# Cuts host I off from the others and from etcd until heal.sh I.
#
#   partition.sh I [--mode down|drop|pause]
#
#   down   (default) the host's veth goes link-down: sends fail, nothing arrives
#   drop   every packet is silently lost both ways: tc netem loss 100% on both ends of the
#          veth; where sch_netem is missing, a zero-length pfifo (drops all it is given);
#          where tc cannot, nft (or iptables) DROP rules inside the namespace
#   pause  SIGSTOP the node process (it keeps its sockets but answers nothing)
#
# In loopback mode there is no network to cut: the node is paused with SIGSTOP instead (a
# pause nemesis: its peers see it hang, then time out), and heal.sh sends SIGCONT.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=
idx=
while (($# > 0)); do
  case $1 in
    --mode) mode=${2:?--mode needs down, drop or pause}; shift 2 ;;
    -*) die "usage: partition.sh I [--mode down|drop|pause]" ;;
    *) [[ -z $idx ]] || die "usage: partition.sh I [--mode down|drop|pause]"; idx=$1; shift ;;
  esac
done
load_env
check_index "$idx"
i=$((10#$idx))
[[ -z $mode || $mode == down || $mode == drop || $mode == pause ]] || die "--mode must be down, drop or pause"
mkdir -p "$STATE_DIR/partitions"
marker=$STATE_DIR/partitions/node-$i

if [[ -f $marker ]]; then
  log "node $i is already partitioned ($(cat "$marker")); heal.sh $i first to change it"
  exit 0
fi

if [[ $WEFT_MODE == loopback || $mode == pause ]]; then
  [[ $WEFT_MODE != loopback || -z $mode || $mode == pause ]] || log "loopback mode: --mode $mode does not apply"
  pid=$(node_pid "$i") || die "node $i is not running; nothing to pause"
  kill -STOP "$pid"
  echo pause > "$marker"
  if [[ $WEFT_MODE == loopback ]]; then
    log "loopback mode has no network to cut: node $i ($(node_addr "$i")) paused with SIGSTOP (pid $pid); heal.sh $i resumes it"
  else
    log "node $i ($(node_addr "$i")) paused with SIGSTOP (pid $pid); heal.sh $i resumes it"
  fi
  exit 0
fi

ns=$(ns_name "$i")
case ${mode:-down} in
  down)
    ip link set "$ns" down
    echo down > "$marker"
    log "node $i ($(node_addr "$i")) partitioned: veth $ns link down"
    ;;
  drop)
    method=
    if command -v tc > /dev/null; then
      if tc qdisc replace dev "$ns" root netem loss 100% 2> /dev/null &&
        ip netns exec "$ns" tc qdisc replace dev eth0 root netem loss 100% 2> /dev/null; then
        method="tc netem loss 100%"
      else
        net_heal "$i"
        if tc qdisc replace dev "$ns" root pfifo limit 0 2> /dev/null &&
          ip netns exec "$ns" tc qdisc replace dev eth0 root pfifo limit 0 2> /dev/null; then
          method="tc pfifo limit 0 (no sch_netem in this kernel)"
        else
          net_heal "$i"
        fi
      fi
    fi
    if [[ -z $method ]] && command -v nft > /dev/null; then
      if ip netns exec "$ns" nft -f - 2> /dev/null <<'NFT'; then
table inet weft_partition {
  chain input { type filter hook input priority -10; policy accept; iifname "eth0" drop; }
  chain output { type filter hook output priority -10; policy accept; oifname "eth0" drop; }
}
NFT
        method="nft drop in $ns"
      else
        net_heal "$i"
      fi
    fi
    if [[ -z $method ]] && command -v iptables > /dev/null; then
      if ip netns exec "$ns" iptables -I INPUT -i eth0 -j DROP 2> /dev/null &&
        ip netns exec "$ns" iptables -I OUTPUT -o eth0 -j DROP 2> /dev/null; then
        method="iptables DROP in $ns"
      else
        net_heal "$i"
      fi
    fi
    [[ -n $method ]] || die "no way to drop packets here (tc, nft and iptables all failed); use --mode down"
    echo "drop: $method" > "$marker"
    log "node $i ($(node_addr "$i")) partitioned: all packets dropped both ways ($method)"
    ;;
esac
