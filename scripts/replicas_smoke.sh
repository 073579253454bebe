#!/usr/bin/env bash
# `make replicas-smoke`: api replicas behind HAProxy (docker-compose.replicas.yml) on a real
# Docker engine, under load, while replicas die and join, the model is reloaded and Redis restarts.
#
# In a scratch copy of the tree with its own compose project and port (scripts/smoke_lib.sh, as
# `make compose-smoke`): build, train the `demo` preset, start one replica behind the proxy, train
# a second version (one epoch each: the model's quality is not under test). Then
#   1. the proxy's cost: the one replica loaded directly and through the proxy in turn, at the same
#      rate, CPU time of the api and proxy containers per request (cgroup counters); then one
#      run of repeated support sets (the replica's answer memo);
#   2. three replicas, an open-loop load through the proxy (SMOKE_RATE req/s, SMOKE_DURATION s),
#      and during it: one replica killed (docker kill), one added (--scale api=4 --no-recreate),
#      an admin reload to the second version through the proxy's published port, Redis
#      restarted, the proxy's configuration reloaded (SIGUSR2).
# bench/replicas.py runs the load (in a container on the compose network) and judges it:
# sent / answered / non-200 / lost, requests in flight on the killed replica (HAProxy's log),
# the version every replica answers with after the reload's 200 + 1 s, the proxy's cost.
# Fails when a target is missed; `docker compose down -v` also on failure.
#
# Needs what `make compose-smoke` needs (../shared/tools/container-engine.sh up; curl, python3).
# Environment: TANP_DATA_HOST_DIR, SMOKE_TRAIN_ARGS (default: one epoch of compose-smoke's),
# SMOKE_RATE (30), SMOKE_DURATION (60), SMOKE_COST_SECONDS (15 per run, two rounds of direct +
# proxy), SMOKE_OUT (a folder that keeps the loads' records, the logs and the summary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SMOKE=replicas-smoke
# shellcheck source=scripts/smoke_lib.sh
source scripts/smoke_lib.sh

# The model's quality is not under test here: one epoch of the demo preset (the compose smoke
# trains all eight); the second version differs in its training seed.
SMOKE_TRAIN_ARGS=${SMOKE_TRAIN_ARGS:---split hetrec-median --preset demo --no-baselines --epochs 1}
RATE=${SMOKE_RATE:-30}
DURATION=${SMOKE_DURATION:-60}
COST_SECONDS=${SMOKE_COST_SECONDS:-15}

smoke_preflight
smoke_scratch tanpreplicas
export COMPOSE_FILE=docker-compose.yml:docker-compose.replicas.yml
smoke_env_file
V2=$V1-v2
OUT=$SCRATCH/out
mkdir -p "$OUT"
chmod 0777 "$OUT" # the load container runs as the image's user
NETWORK=${COMPOSE_PROJECT_NAME}_default
smoke_extra_cleanup() { # before `compose down`: the load containers are on its network
  local loads
  loads=$(docker ps -aq --filter "name=^/$COMPOSE_PROJECT_NAME-load-")
  [ -z "$loads" ] || docker rm -f $loads >/dev/null
  [ -z "${SMOKE_OUT:-}" ] || { mkdir -p "$SMOKE_OUT" && cp -r "$OUT"/. "$SMOKE_OUT"/; }
}
say "project $COMPOSE_PROJECT_NAME in $WORK, proxy on port $PORT, data $DATA"

api_containers() { # the api replicas' ids; `-a`: stopped ones too
  docker ps "$@" -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter label=com.docker.compose.service=api
}
address() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
name_of() { docker inspect -f '{{.Name}}' "$1" | sed "s|^/$COMPOSE_PROJECT_NAME-||"; } # api-N
cpu_ns() { # CONTAINER: CPU time its cgroup has used, in ns (cgroup v2 or v1)
  local usage
  usage=$(docker exec "$1" cat /sys/fs/cgroup/cpu.stat 2>/dev/null | awk '$1 == "usage_usec" {print $2}')
  if [ -n "$usage" ]; then echo $((usage * 1000)); else docker exec "$1" cat /sys/fs/cgroup/cpuacct/cpuacct.usage; fi
}
proxy_stats() { # one line per replica slot of the proxy: SLOT STATUS (UP, DOWN, MAINT_(resolution)...)
  docker compose exec -T proxy bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/8404 && printf "GET /stats;csv HTTP/1.0\r\n\r\n" >&3 && cat <&3' \
    | python3 -c '
import csv, sys
head, _, body = sys.stdin.buffer.read().partition(b"\r\n\r\n")
if b"chunked" in head.lower():  # HAProxy answers HTTP/1.1, chunked
    chunks = []
    while body:
        size, _, body = body.partition(b"\r\n")
        chunks.append(body[: int(size, 16)])
        body = body[int(size, 16) + 2 :]
    body = b"".join(chunks)
for row in csv.DictReader(body.decode().lstrip("# ").splitlines()):
    if row["pxname"] == "api" and row["svname"] not in ("FRONTEND", "BACKEND"):
        print(row["svname"], row["status"].replace(" ", "_"))'
}
wait_replicas() { # N SECONDS: until the proxy checks N replicas as UP
  local deadline=$(($(date +%s) + $2))
  while [ "$(proxy_stats | awk '$2 == "UP"' | wc -l)" -lt "$1" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the proxy does not see $1 replicas up within $2 s: $(proxy_stats | tr '\n' ';')"
    sleep 1
  done
}
load() { # NAME HOST PORT RATE SECONDS [--repeat RUN]: bench/replicas.py load in a container on the network
  docker run --rm --name "$COMPOSE_PROJECT_NAME-load-$1" --network "$NETWORK" --no-healthcheck \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    -v "$WORK/bench:/bench:ro" -v "$OUT:/out" tanp-rec:api \
    python /bench/replicas.py load --name "$1" --host "$2" --port "$3" --rate "$4" \
    --duration "$5" --items /out/items.json --out "/out/$1.jsonl" "${@:6}"
}

# --- build, train, one replica behind the proxy, a second version --------------------------------
step build docker compose --profile train build
step train docker compose --profile train run --rm train
step up docker compose up -d --wait --scale api=1
step retrain env TRAIN_RUN_NAME="$V2" TRAIN_ARGS="$SMOKE_TRAIN_ARGS --train-seed 7" \
  docker compose --profile train run --rm train

[ -z "$(docker inspect -f '{{json .NetworkSettings.Ports}}' "$(api_containers)" | grep -o HostPort)" ] \
  || fail "an api replica publishes a port"
published=$(docker compose port proxy 8080)
[ "${published%:*}" = 127.0.0.1 ] || fail "the proxy is published on $published, not 127.0.0.1"
proxy=$(docker compose ps -q proxy)
hardening=$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.LogConfig.Config}}' "$proxy")
[[ $hardening == "true [ALL] [no-new-privileges:true] "[1-9]*"max-file:3 max-size:10m"* ]] \
  || fail "proxy hardening: $hardening"
headers=$(get -D - -o /dev/null "$BASE/readyz")
grep -qi '^x-served-by: api[0-9]' <<<"$headers" || fail "/readyz through the proxy: $headers"
get -X POST "$BASE/v1/recommend" -H 'Content-Type: application/json' -d '{"support": [], "k": 100}' \
  | json 'json.dumps([item["item_id"] for item in d["items"]])' >"$OUT/items.json"
say "proxy on $published ($hardening); api publishes no port; $(json 'len(d)' <"$OUT/items.json") items for the load"

# --- 1. the proxy's cost: one replica, direct and through the proxy, the same rate ------------------
api=$(api_containers)
api_address=$(address "$api")
start=$(now)
load warmup "$api_address" 8000 "$RATE" 5 >/dev/null
: >"$OUT/cpu.txt"
for round in 1 2; do
  for path in direct proxy; do
    if [ $path = direct ]; then target="$api_address 8000"; else target="proxy 8080"; fi
    api_before=$(cpu_ns "$api") proxy_before=$(cpu_ns "$proxy")
    # shellcheck disable=SC2086 # HOST PORT
    say "$(load "$path-$round" $target "$RATE" "$COST_SECONDS" | grep -v "^started")"
    echo "$path-$round $(($(cpu_ns "$api") - api_before)) $(($(cpu_ns "$proxy") - proxy_before))" >>"$OUT/cpu.txt"
  done
done
# the support sets of direct-2 again: answered from the replica's answer memo
api_before=$(cpu_ns "$api") proxy_before=$(cpu_ns "$proxy")
say "$(load repeat "$api_address" 8000 "$RATE" "$COST_SECONDS" --repeat direct-2 | grep -v "^started")"
echo "repeat $(($(cpu_ns "$api") - api_before)) $(($(cpu_ns "$proxy") - proxy_before))" >>"$OUT/cpu.txt"
T[cost]=$(secs "$start")

# --- 2. three replicas under load: kill one, add one, reload, restart Redis, reload the proxy ------
step scale docker compose up -d --wait --no-deps --no-recreate --scale api=3 api
wait_replicas 3 60
: >"$OUT/events.txt"
event() { echo "$1 $(now) ${*:2}" >>"$OUT/events.txt"; }
load chaos proxy 8080 "$RATE" "$DURATION" >"$OUT/chaos.out" 2>&1 &
LOAD=$!
for _ in $(seq 100); do [ -s "$OUT/chaos.out" ] && break; sleep 0.2; done
STARTED=$(awk '$1 == "started" {print $2}' "$OUT/chaos.out")
[ -n "$STARTED" ] || fail "the load did not start: $(cat "$OUT/chaos.out")"
at() { python3 -c 'import sys, time; time.sleep(max(0.0, float(sys.argv[1]) + float(sys.argv[2]) - time.time()))' "$STARTED" "$1"; }
addresses() { # which replica has which address now (a restart may change it)
  local id
  for id in $(api_containers); do echo "$(name_of "$id") $(address "$id") $(now)"; done >>"$OUT/addresses.txt"
}
addresses

at 5
victim=$(api_containers | head -n 1)
victim_name=$(name_of "$victim") victim_address=$(address "$victim")
docker kill "$victim" >/dev/null
event kill "$victim_name" "$victim_address"
at 6
event scale-to-4
docker compose up -d --no-deps --no-recreate --scale api=4 api >"$OUT/scale.log" 2>&1 \
  || fail "scale to 4: $(tail -n 5 "$OUT/scale.log")"
addresses
# the reload waits for four replicas, and leaves 15 s of load after it
wait_replicas 4 $((DURATION - 15 - 6))
event four-up
addresses
at 20
answer=$(reload "$V2")
event reload "$V2" "$V1"
[ "$(json 'd["version"], d["previous"]' <<<"$answer")" = "('$V2', '$V1')" ] || fail "reload: $answer"
sleep 5
docker compose restart redis >/dev/null 2>&1 || fail "restart redis"
event redis-restarted
sleep 4
docker compose kill -s USR2 proxy >/dev/null 2>&1 || fail "proxy reload (SIGUSR2)"
event proxy-reloaded
wait "$LOAD" || fail "the load: $(cat "$OUT/chaos.out")"
running=$(for id in $(api_containers); do name_of "$id"; done | tr '\n' ' ')
event running $running
addresses
docker compose logs --no-color --no-log-prefix proxy >"$OUT/haproxy.log" 2>&1
docker compose logs --no-color --timestamps api >"$OUT/api.log" 2>&1

# --- the verdict ---------------------------------------------------------------------------------
status=0
python3 bench/replicas.py report --dir "$OUT" | tee "$OUT/summary.txt" || status=$?
step down docker compose down -v
say "timings (s): build ${T[build]}, train ${T[train]}, up ${T[up]}, retrain ${T[retrain]}, proxy cost ${T[cost]}, scale to 3 ${T[scale]}, down -v ${T[down]}"
[ $status = 0 ] || fail "a target was missed (MISSED lines above)"
say "passed"
