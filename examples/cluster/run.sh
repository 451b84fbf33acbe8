#!/usr/bin/env bash
# run.sh — a three-node twinmesh cluster (n1, n2, n3) on one host.
#
#   examples/cluster/run.sh          start the nodes; stays in the foreground,
#                                    Ctrl-C (or SIGTERM) stops them gracefully
#   examples/cluster/run.sh stop     stop the nodes a run left behind (pid files)
#
# Node nX keeps its bbolt file, admin.token, node.log and pid in $BASE/nX.
# n1 starts first; n2 and n3 --join n1's gossip address. Every node runs
# with --replicas $REPLICAS.
#
# Environment:
#   BASE           folder of the cluster's data (default ./cluster-data)
#   TWINMESH_BIN   twinmesh binary to run (default: `go build ./cmd/twinmesh`
#                  once into a temporary folder, removed on exit)
#   HOST           address every listener binds (default 127.0.0.1)
#   HTTP_PORTS     HTTP ports of n1 n2 n3 (default "8081 8082 8083")
#   MQTT_PORTS     MQTT ports (default "1884 1885 1886")
#   GOSSIP_PORTS   gossip ports (default "7947 7948 7949")
#   PORTS=random   bind every listener to port 0 and read the bound
#                  addresses from the nodes' logs
#   REPLICAS       --replicas (default $TWINMESH_REPLICAS, else 2)
#   READY_TIMEOUT  seconds to wait for each node to log "node ready" (60)
#   STOP_TIMEOUT   seconds a node gets to stop after SIGTERM before SIGKILL (30)
# Other TWINMESH_* variables (TWINMESH_GOSSIP_KEY, TWINMESH_LOG_LEVEL, …)
# reach every node; the flags set here win over them.
set -euo pipefail

NODES=(n1 n2 n3)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE=${BASE:-./cluster-data}
HOST=${HOST:-127.0.0.1}
REPLICAS=${REPLICAS:-${TWINMESH_REPLICAS:-2}}
READY_TIMEOUT=${READY_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
read -r -a HTTP_P <<<"${HTTP_PORTS:-8081 8082 8083}"
read -r -a MQTT_P <<<"${MQTT_PORTS:-1884 1885 1886}"
read -r -a GOSSIP_P <<<"${GOSSIP_PORTS:-7947 7948 7949}"
if [[ ${PORTS:-} == random ]]; then
	HTTP_P=(0 0 0) MQTT_P=(0 0 0) GOSSIP_P=(0 0 0)
fi

say() { echo "run.sh: $*" >&2; }

# alive PID DIR: PID is a running twinmesh serve process with --data DIR.
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	command -v ps >/dev/null || return 0
	ps -p "$1" -o args= 2>/dev/null | grep -qF -e "--data $2 "
}

# stop_all NAME…: SIGTERM the nodes named (pid files in $BASE/NAME/pid),
# wait up to STOP_TIMEOUT for them to leave, then SIGKILL what is left.
stop_all() {
	local name pid pids=() names=()
	for name in "$@"; do
		[[ -f $BASE/$name/pid ]] || continue
		pid=$(<"$BASE/$name/pid")
		if alive "$pid" "$BASE/$name"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid") names+=("$name")
		else
			rm -f "$BASE/$name/pid"
		fi
	done
	((${#pids[@]})) || return 0
	say "stopping ${names[*]} (SIGTERM)"
	local deadline=$((SECONDS + STOP_TIMEOUT)) i left
	while :; do
		left=0
		for i in "${!pids[@]}"; do
			if kill -0 "${pids[$i]}" 2>/dev/null; then
				left=1
			else
				rm -f "$BASE/${names[$i]}/pid"
			fi
		done
		((left)) || break
		if ((SECONDS >= deadline)); then
			for i in "${!pids[@]}"; do
				if kill -0 "${pids[$i]}" 2>/dev/null; then
					say "${names[$i]} still running after ${STOP_TIMEOUT}s: SIGKILL"
					kill -KILL "${pids[$i]}" 2>/dev/null || true
					rm -f "$BASE/${names[$i]}/pid"
				fi
			done
			break
		fi
		sleep 0.1
	done
	say "stopped ${names[*]}"
}

case ${1:-start} in
stop)
	if [[ -d $BASE ]]; then
		BASE=$(cd "$BASE" && pwd)
		stop_all "${NODES[@]}"
	fi
	exit 0
	;;
start) ;;
*)
	echo "usage: $0 [start|stop]" >&2
	exit 2
	;;
esac

mkdir -p "$BASE"
BASE=$(cd "$BASE" && pwd)
for name in "${NODES[@]}"; do
	if [[ -f $BASE/$name/pid ]] && alive "$(<"$BASE/$name/pid")" "$BASE/$name"; then
		say "$name is already running (pid $(<"$BASE/$name/pid")); run '$0 stop' first"
		exit 1
	fi
done

STARTED=()
declare -A PID_OF=()
TMPBIN=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	((${#STARTED[@]})) && stop_all "${STARTED[@]}"
	[[ -n $TMPBIN ]] && rm -rf "$TMPBIN"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BIN=${TWINMESH_BIN:-}
if [[ -z $BIN ]]; then
	TMPBIN=$(mktemp -d "${TMPDIR:-/tmp}/twinmesh-cluster.XXXXXX")
	BIN=$TMPBIN/twinmesh
	say "building ./cmd/twinmesh"
	(cd "$ROOT" && go build -o "$BIN" ./cmd/twinmesh)
fi

# start_node INDEX [JOIN]: start node NODES[INDEX] in the background.
start_node() {
	local i=$1 join=${2:-} name=${NODES[$1]} dir=$BASE/${NODES[$1]}
	mkdir -p "$dir"
	[[ -f $dir/node.log ]] && mv -f "$dir/node.log" "$dir/node.log.1"
	local args=(serve --data "$dir" --node-name "$name"
		--http "$HOST:${HTTP_P[$i]}" --mqtt "$HOST:${MQTT_P[$i]}" --coap ""
		--gossip "$HOST:${GOSSIP_P[$i]}" --remote "$HOST:0"
		--replicas "$REPLICAS" --log-format text)
	[[ -n $join ]] && args+=(--join "$join")
	"$BIN" "${args[@]}" >"$dir/node.log" 2>&1 &
	echo $! >"$dir/pid"
	PID_OF[$name]=$!
	STARTED+=("$name")
	say "started $name (pid $!)"
}

# wait_ready NAME: until NAME logs "node ready"; fails if it exits first.
wait_ready() {
	local name=$1 log=$BASE/$1/node.log pid=${PID_OF[$1]} deadline=$((SECONDS + READY_TIMEOUT))
	until grep -q 'msg="node ready"' "$log" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then
			say "$name exited before it was ready; the end of $log:"
			tail -n 20 "$log" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			say "$name not ready after ${READY_TIMEOUT}s; the end of $log:"
			tail -n 20 "$log" >&2
			return 1
		fi
		sleep 0.1
	done
}

# bound NAME LISTENER: the address NAME logged for LISTENER.
bound() {
	sed -n "s/.*msg=listening listener=$2 addr=\([^ ]*\).*/\1/p" "$BASE/$1/node.log" | tail -n 1
}

start_node 0
wait_ready n1
SEED=$(bound n1 gossip)
start_node 1 "$SEED"
start_node 2 "$SEED"
wait_ready n2
wait_ready n3

if [[ -n ${TWINMESH_API_TOKEN:-} ]]; then
	token() { echo '$TWINMESH_API_TOKEN'; }
else
	token() { echo "$BASE/$1/admin.token"; }
fi
printf '%-5s %-28s %-22s %-22s %s\n' node http mqtt gossip "admin token"
for name in "${NODES[@]}"; do
	printf '%-5s %-28s %-22s %-22s %s\n' "$name" "http://$(bound "$name" http)" \
		"$(bound "$name" mqtt)" "$(bound "$name" gossip)" "$(token "$name")"
done
echo "logs: $BASE/nX/node.log; stop: Ctrl-C here, or $0 stop"
echo "cluster ready"

# Stay in the foreground until every node has exited (a node killed by hand
# is reported and the others keep running). `sleep & wait` lets a signal
# interrupt the wait at once.
rc=0
running=("${NODES[@]}")
while ((${#running[@]})); do
	sleep 1 &
	wait $! || true
	still=()
	for name in "${running[@]}"; do
		pid=${PID_OF[$name]}
		if kill -0 "$pid" 2>/dev/null; then
			still+=("$name")
			continue
		fi
		st=0
		wait "$pid" 2>/dev/null || st=$?
		say "$name exited (status $st)"
		((st == 0)) || rc=1
		rm -f "$BASE/$name/pid"
	done
	running=("${still[@]+"${still[@]}"}")
done
STARTED=()
exit "$rc"
