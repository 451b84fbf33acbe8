#!/usr/bin/env bash
# Runs the Jepsen-style fault-injection test of issue 20 (internal/jepsen):
# a twinmesh cluster in network namespaces under pauses, partitions, packet
# loss, crashes and stale restarts, with the history checked by porcupine.
#
#   scripts/jepsen.sh                                   short form: 3 nodes, a few minutes
#   TWINMESH_JEPSEN_DURATION=30m TWINMESH_JEPSEN_NODES=5 scripts/jepsen.sh    long form
#   TWINMESH_JEPSEN_SEED=123 scripts/jepsen.sh          replay a run's schedule
#
# Other variables: TWINMESH_JEPSEN_FAULTS (comma-separated kinds: pause,
# partition, bridge, one-way, loss, slow, kill, stale-restart),
# TWINMESH_JEPSEN_DIR (keep data, logs and visualizations there),
# TWINMESH_JEPSEN_STALE_READS=1 (only acknowledged writes must be
# linearizable: reads and 412s may be stale, as README allows). The full
# output also goes to $TWINMESH_JEPSEN_LOG (default: a file in /tmp, printed).
# Needs root, iproute2 and nftables (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "jepsen: network namespaces need root" >&2
  exit 1
fi
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# go test's timeout: the run's length plus 20 minutes for the cluster's
# start and the final reads, and 25 more in the long form, whose
# linearizability check may take 5 minutes a twin.
secs=0
if [ -n "${TWINMESH_JEPSEN_DURATION:-}" ]; then
  d=$TWINMESH_JEPSEN_DURATION
  case "$d" in
    *h) secs=$(( ${d%h} * 3600 )) ;;
    *m) secs=$(( ${d%m} * 60 )) ;;
    *s) secs=${d%s} ;;
    *) echo "jepsen: TWINMESH_JEPSEN_DURATION=$d: use a whole number of h, m or s (e.g. 30m)" >&2; exit 2 ;;
  esac
fi
extra=1200
[ "$secs" -gt 0 ] && extra=2700
timeout="$(( secs + extra ))s"

log=${TWINMESH_JEPSEN_LOG:-$(mktemp /tmp/twinmesh-jepsen-XXXXXX.log)}
echo "jepsen: output in $log"
export TWINMESH_JEPSEN=1
set +e
go test -count=1 -v -run '^TestJepsenShort$' -timeout "$timeout" ./internal/jepsen 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo "jepsen: exit $rc; output in $log"
exit "$rc"
