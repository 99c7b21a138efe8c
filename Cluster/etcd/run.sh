#!/usr/bin/env bash
# Runs one single-member etcd for a Weft cluster, in the foreground (it execs etcd, so the
# caller may background it and keep its pid). Weft keeps only membership and the shard map
# in etcd, so one member is enough for a development or test cluster; use three or five for
# a cluster that must survive losing the etcd host.
#
#   run.sh [--data DIR] [--listen HOST:PORT[,HOST:PORT…]] [--advertise URL]
#          [--peer HOST:PORT] [--name NAME] [-- ETCD-FLAGS…]
#
# Defaults: --data ${WEFT_ETCD_DATA:-/tmp/weft-etcd}, --listen 127.0.0.1:2379, --advertise
# the first --listen URL, --peer 127.0.0.1:2380, --name weft-etcd. $ETCD_BIN picks the etcd
# binary (default: etcd on PATH; Debian's package is etcd-server, etcdctl is in etcd-client).
# Works with etcd 3.4 and 3.5.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

data=${WEFT_ETCD_DATA:-/tmp/weft-etcd}
listen=127.0.0.1:2379
advertise=
peer=127.0.0.1:2380
name=weft-etcd
extra=()
while (($# > 0)); do
  case $1 in
    --data) data=${2:?--data needs a directory}; shift 2 ;;
    --listen) listen=${2:?--listen needs HOST:PORT}; shift 2 ;;
    --advertise) advertise=${2:?--advertise needs a URL}; shift 2 ;;
    --peer) peer=${2:?--peer needs HOST:PORT}; shift 2 ;;
    --name) name=${2:?--name needs a name}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

etcd=${ETCD_BIN:-etcd}
command -v "$etcd" > /dev/null || {
  echo "run.sh: no etcd binary ($etcd): apt-get install etcd-server, or set ETCD_BIN" >&2
  exit 1
}

client_urls=
IFS=, read -r -a hosts <<< "$listen"
for h in "${hosts[@]}"; do client_urls+=${client_urls:+,}http://$h; done
if [[ -z $advertise ]]; then
  first=${hosts[0]}
  [[ $first != 0.0.0.0:* ]] || { echo "run.sh: listening on 0.0.0.0 needs --advertise URL" >&2; exit 2; }
  advertise=http://$first
fi

mkdir -p "$data"
echo "run.sh: etcd $name serving $advertise (listening on $client_urls), data in $data" >&2
exec "$etcd" \
  --name "$name" \
  --data-dir "$data" \
  --listen-client-urls "$client_urls" \
  --advertise-client-urls "$advertise" \
  --listen-peer-urls "http://$peer" \
  --initial-advertise-peer-urls "http://$peer" \
  --initial-cluster "$name=http://$peer" \
  --initial-cluster-state new \
  --initial-cluster-token "$name" \
  --logger zap --log-outputs stderr \
  "${extra[@]}"
