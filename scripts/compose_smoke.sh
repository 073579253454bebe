#!/usr/bin/env bash
# `make compose-smoke`: the README's production path on a real Docker engine, end to end.
#
# In a scratch copy of the working tree (tracked and untracked, not ignored files), with its own
# compose project name and a free host port, so neither the developer's .env nor a running stack
# is touched: .env from .env.example with the two secrets, the data folder and the short `demo`
# preset filled in; then exactly the README's commands (build, train, up --wait), the API checks
# (/readyz, POST /recommend and /v1/recommend, a cached repeat, the page at / and its script,
# hardening), a retrain into a second version and an admin reload while requests flow, /metrics,
# the Redis and Postgres figures the README's sizing uses, image sizes, a code-only rebuild, and
# `docker compose down -v` (also on failure). Prints the timings.
#
# Needs a Docker engine with the compose plugin (../shared/tools/container-engine.sh up prints the
# DOCKER_HOST to export), curl and python3. Environment: TANP_DATA_HOST_DIR (default
# ../shared/data/lastfm), SMOKE_TRAIN_ARGS (default: --split hetrec-median --preset demo --no-baselines), SMOKE_NO_CACHE=1
# (build without the layer cache, for a cold-build time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SMOKE=compose-smoke
# shellcheck source=scripts/smoke_lib.sh
source scripts/smoke_lib.sh

smoke_preflight
smoke_scratch tanpsmoke
smoke_extra_cleanup() { [ -z "${REBUILT:-}" ] || docker image rm "$REBUILT" >/dev/null 2>&1; }
smoke_env_file
say "project $COMPOSE_PROJECT_NAME in $WORK, API on port $PORT, data $DATA"

# --- the README's production path ----------------------------------------------------------------
step build docker compose --profile train build ${SMOKE_NO_CACHE:+--no-cache}
step train docker compose --profile train run --rm train
step up docker compose up -d --wait

ready=$(get "$BASE/readyz")
[ "$(json 'd["model_version"]' <<<"$ready")" = "$V1" ] || fail "/readyz: $ready"
first=$(recommend /v1/recommend)
[ "$(json 'len(d["items"]), d["model_version"], d["cached"]' <<<"$first")" = "(5, '$V1', False)" ] \
  || fail "POST /v1/recommend: $first"
repeat=$(recommend /recommend)
[ "$(json 'd["cached"], d["items"] == json.loads(sys.argv[1])["items"]' "$first" <<<"$repeat")" \
  = "(True, True)" ] || fail "POST /recommend (a cached repeat of the same support set): $repeat"
say "recommend: $(json '", ".join(i["name"] or i["item_id"] for i in d["items"])' <<<"$first")"

page_type=$(get -o "$SCRATCH/index.html" -w '%{http_code} %{content_type}' "$BASE/")
[[ $page_type == "200 text/html"* ]] || fail "GET /: $page_type"
grep -q '<script type="module" src="app.js"></script>' "$SCRATCH/index.html" \
  || fail "GET /: the page does not load app.js"
script_type=$(get -o /dev/null -w '%{http_code} %{content_type}' "$BASE/app.js")
[[ $script_type == "200 text/javascript"* || $script_type == "200 application/javascript"* ]] \
  || fail "GET /app.js: $script_type"
items=$(get "$BASE/v1/items?q=pink%20floyd&limit=1")
[ "$(json 'd["items"][0]["name"]' <<<"$items")" = "Pink Floyd" ] || fail "GET /v1/items: $items"
say "page: / is HTML and loads app.js ($script_type); catalog search answers"

api=$(docker compose ps -q api)
hardening=$(docker inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.LogConfig.Config}}' "$api")
[[ $hardening == "10001:10001 true [ALL] [no-new-privileges:true] "[1-9]*"max-file:3 max-size:10m"* ]] \
  || fail "api hardening: $hardening"
say "api container: $hardening"
unauthorised=$(get -o /dev/null -w '%{http_code}' -X POST "$BASE/admin/models/reload" \
  -H 'Content-Type: application/json' -d '{"latest": true}')
[ "$unauthorised" = 401 ] || fail "admin reload without the token: $unauthorised"

# --- retrain into a second version and reload it while requests flow (README "Retrain") ---------
V2=$V1-v2
step retrain env TRAIN_RUN_NAME="$V2" docker compose --profile train run --rm train
: >"$SCRATCH/flow"
touch "$SCRATCH/flowing"
(
  while [ -e "$SCRATCH/flowing" ]; do
    curl -sS --max-time 10 -X POST "$BASE/v1/recommend" -H 'Content-Type: application/json' \
      -d "$SUPPORT" -w ' %{http_code}\n' 2>&1 | grep -o '"model_version":"[^"]*".* [0-9]*$' \
      >>"$SCRATCH/flow" || echo "error" >>"$SCRATCH/flow"
  done
) &
FLOW=$!
sleep 2
start=$(now)
reload=$(reload "$V2")
T[reload]=$(secs "$start")
sleep 2
rm -f "$SCRATCH/flowing"
wait "$FLOW"
[ "$(json 'd["version"], d["previous"]' <<<"$reload")" = "('$V2', '$V1')" ] || fail "reload: $reload"
total=$(wc -l <"$SCRATCH/flow")
ok=$(grep -c ' 200$' "$SCRATCH/flow" || true)
on_v1=$(grep -c "\"model_version\":\"$V1\"" "$SCRATCH/flow" || true)
on_v2=$(grep -c "\"model_version\":\"$V2\"" "$SCRATCH/flow" || true)
[ "$total" -gt 0 ] && [ "$ok" = "$total" ] && [ "$on_v1" -gt 0 ] && [ "$on_v2" -gt 0 ] \
  || fail "requests during the reload: $ok of $total answered 200 ($on_v1 on $V1, $on_v2 on $V2)"
[ "$(get "$BASE/readyz" | json 'd["model_version"]')" = "$V2" ] || fail "/readyz after the reload"
say "reload to $V2 in ${T[reload]} s; requests during it: $ok of $total answered 200 ($on_v1 on $V1, then $on_v2 on $V2)"

metrics=$(get "$BASE/metrics")
for series in 'tanp_requests_total{method="POST",route="/v1/recommend",status="200"}' \
  'tanp_requests_total{method="POST",route="/admin/models/reload",status="200"}'; do
  grep -qF "$series" <<<"$metrics" || fail "/metrics lacks $series"
done
say "metrics: $(grep -c '^tanp_' <<<"$metrics") tanp_* samples"

# --- what the README's sizing rests on -----------------------------------------------------------
key=$(docker compose exec -T redis redis-cli --scan --pattern "tanp:state:*" | head -n 1)
[ -n "$key" ] || fail "no cached task state in Redis"
noauth=$(docker compose exec -T -e REDISCLI_AUTH= redis redis-cli ping 2>&1 | tr -d '\r')
grep -q NOAUTH <<<"$noauth" || fail "redis answered without its password: $noauth"
entry=$(docker compose exec -T redis redis-cli memory usage "$key" | tr -d '\r')
policy=$(docker compose exec -T redis redis-cli config get maxmemory-policy | tail -n 1 | tr -d '\r')
maxmemory=$(docker compose exec -T redis redis-cli config get maxmemory | tail -n 1 | tr -d '\r')
[ "$policy" = allkeys-lru ] && [ "$maxmemory" -gt 0 ] || fail "redis: $policy $maxmemory"
log=$(docker compose exec -T postgres psql -U tanp -d tanp -At -c \
  "select count(*), pg_total_relation_size('request_log') from request_log" | tr -d '\r')
say "redis: one cached task state takes $entry bytes; maxmemory $maxmemory bytes, $policy"
say "postgres: request_log holds ${log%|*} rows in ${log#*|} bytes (table + indexes)"

# --- images ---------------------------------------------------------------------------------------
size() { docker image inspect -f '{{.Size}}' "$1"; }
mb() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e6:.1f} MB')" "$1"; }
say "images: tanp-rec:api $(mb "$(size tanp-rec:api)"), tanp-rec:trainer $(mb "$(size tanp-rec:trainer)")"
[ "$(size tanp-rec:api)" -lt 1000000000 ] || fail "the CPU api image is not under 1 GB"
layers() { docker image inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$1"; }
shared=$(comm -12 <(layers tanp-rec:api | sort) <(layers tanp-rec:trainer | sort) | wc -l)
say "api and trainer share $shared layers (base, torch and core dependencies unless built with --no-cache)"

# --- a code-only change: how long the api image takes to rebuild, what it adds ---------------------
# The reference is a `docker build` of the unchanged tree, not compose's api image: compose builds
# api and trainer side by side, and with a cold cache each gets its own copy of the shared layers,
# of which a later `docker build` may reuse the other one (seen after a lock-file change).
REBUILT=tanp-rec:smoke-rebuild
step reference docker build -f docker/Dockerfile --target runtime -t "$REBUILT" .
before=$(docker history -q --no-trunc "$REBUILT")
# a new line each run: an identical one would find its layers in the cache of the last run
printf '# compose-smoke: a code-only change (%s)\n' "$(date +%s%N)" >>app/__init__.py
step rebuild docker build -f docker/Dockerfile --target runtime -t "$REBUILT" .
added=$(docker history --no-trunc --human=false --format '{{.ID}} {{.Size}}' "$REBUILT" \
  | grep -vFf <(printf '%s\n' $before) | awk '$2 > 0 {n++; s += $2} END {printf "%d %d", n, s}')
[ "${added#* }" -lt 5000000 ] || fail "a code-only change added ${added#* } bytes"
say "code-only change: rebuilt in ${T[rebuild]} s, ${added% *} new layers, $(mb "${added#* }") in all"

step down docker compose down -v
say "timings (s): build ${T[build]}, train ${T[train]}, up --wait ${T[up]}, retrain ${T[retrain]}, reload ${T[reload]}, code-only rebuild ${T[rebuild]}, down -v ${T[down]}"
say "passed"
