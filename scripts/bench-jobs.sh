#!/usr/bin/env bash
# Times an updateTwin job over DEVICES devices at maxConcurrency 1, 10 and
# 50, against the same merge patches sent as PATCH /api/v1/twins/{id} from
# as many keep-alive clients (BENCHMARKS.md, "Jobs"). It starts its own
# node on 127.0.0.1:$PORT with a fresh data folder and stops it at the end.
#
#   go build -o /tmp/twinmesh ./cmd/twinmesh && scripts/bench-jobs.sh /tmp/twinmesh
set -euo pipefail
bin=${1:?usage: bench-jobs.sh path/to/twinmesh}
devices=${DEVICES:-5000}
port=${PORT:-18932}
data=$(mktemp -d)
"$bin" serve --data "$data" --http "127.0.0.1:$port" --mqtt 127.0.0.1:0 --coap "" >"$data/log" 2>&1 &
pid=$!
trap 'kill $pid; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do [ -s "$data/admin.token" ] && curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
token=$(cat "$data/admin.token")
H="Authorization: Bearer $token"
{
  echo '{"entity":{"id":"bp","kind":"building"}}'
  for i in $(seq -w 1 "$devices"); do
    echo "{\"entity\":{\"id\":\"b$i\",\"kind\":\"device\",\"parent\":\"bp\"},\"identity\":{},\"twin\":{\"tags\":{\"g\":1}}}"
  done
} | curl -sf -H "$H" -X POST "127.0.0.1:$port/api/v1/import" --data-binary @- >/dev/null
for c in 1 10 50; do
  id=$(curl -sf -H "$H" "127.0.0.1:$port/api/v1/jobs" \
    -d "{\"type\":\"updateTwin\",\"condition\":\"tags.g = 1\",\"twinPatch\":{\"desired\":{\"c$c\":$c}},\"maxConcurrency\":$c}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["jobId"])')
  while :; do
    job=$(curl -sf -H "$H" "127.0.0.1:$port/api/v1/jobs/$id")
    grep -q '"status":"completed"' <<<"$job" && break
    sleep 0.5
  done
  python3 -c '
import datetime, json, sys
j = json.loads(sys.argv[1])
t = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")[:26] + "+00:00")
d = (t(j["endTime"]) - t(j["startedTime"])).total_seconds()
n = j["progress"]["succeeded"]
print(f"job  maxConcurrency {sys.argv[2]:>2}: {n} devices in {d:.2f} s, {n/d:.0f} devices/s")' "$job" "$c"
done
python3 - "$token" "$port" "$devices" <<'PY'
import http.client, json, sys, threading, time
token, port, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def patch(ids, errors):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in ids:
        c.request("PATCH", "/api/v1/twins/b%0*d" % (len(str(devices)), i), body=json.dumps({"desired": {"base": 1}}),
                  headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 200: errors.append(r.status)
for clients, n in ((1, 500), (10, 1000), (50, 1000)):
    n = min(n, devices)
    ids, errors = list(range(1, n + 1)), []
    start = time.time()
    ts = [threading.Thread(target=patch, args=(ids[k::clients], errors)) for k in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    d = time.time() - start
    print(f"REST clients {clients:>2}: {n} patches in {d:.2f} s, {n/d:.0f} patches/s, {len(errors)} errors")
PY
