#!/usr/bin/env bash
# The newcomer's path, timed: a fresh clone of this checkout's HEAD, `make demo` (venv, install,
# data, training, migration, server), then the README's curl example. Prints the wall time from
# the start to the first recommendation, stops the server and removes everything it made.
#   bash bench/newcomer.sh [--worktree] [--keep]
#     --worktree  copy the working tree (tracked + untracked, not ignored) instead of cloning HEAD
#     --keep      leave the temporary folder (and its demo.log) for a look afterwards
#   Environment: PORT (18000), READY_TIMEOUT (600 s), PYTHON (python3, passed to make).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-18000}
READY_TIMEOUT=${READY_TIMEOUT:-600}
BASE="http://127.0.0.1:$PORT"
DEFAULT_PAYLOAD='{"support":[{"item_id":"163","rating":1},{"item_id":"207","rating":1},{"item_id":"349","rating":0}],"k":5}'
MODE=clone
KEEP=0
for argument in "$@"; do
  case $argument in
    --worktree) MODE=worktree ;;
    --keep) KEEP=1 ;;
    *) echo "usage: bash bench/newcomer.sh [--worktree] [--keep]" >&2; exit 2 ;;
  esac
done

say() { printf 'newcomer: %s\n' "$*"; }
fail() { printf 'newcomer: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
seconds_since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }

for tool in git make curl python3 setsid; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
if curl -s -o /dev/null --max-time 2 "$BASE/livez"; then
  fail "something already answers on port $PORT: set PORT to a free one"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tanp-newcomer.XXXXXX")
LOG="$TMP/demo.log"
SERVER_PID=""

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  # The demo runs in its own session: its process group holds make, the script and the server.
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 -- "-$SERVER_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  stop_server
  if [ "$KEEP" = 1 ]; then
    say "kept $TMP"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

START=$(now)
if [ "$MODE" = clone ]; then
  COMMIT=$(git -C "$REPO" rev-parse --verify --quiet HEAD) \
    || fail "$REPO has no commit yet: commit first or use --worktree"
  say "cloning $REPO at ${COMMIT:0:12} into $TMP/main"
  git clone --quiet --no-checkout "$REPO" "$TMP/main"
  git -C "$TMP/main" checkout --quiet --detach "$COMMIT"
  dirty=$(git -C "$REPO" status --porcelain --untracked-files=no | head -3)
  [ -z "$dirty" ] || say "note: uncommitted changes in $REPO are not part of the clone"
else
  say "copying the working tree of $REPO into $TMP/main"
  mkdir "$TMP/main"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf -) | tar -xf - -C "$TMP/main"
fi

if [ -d "$REPO/../shared" ]; then
  ln -s "$(cd "$REPO/../shared" && pwd)" "$TMP/shared"
else
  say "no ../shared beside the repository: make demo will download the data"
fi

say "make demo (PORT=$PORT), log: $LOG"
# A newcomer has none of these set; the demo must find its own defaults.
setsid env -u TANP_DATA_DIR -u MODELS_DIR -u DATABASE_URL -u REDIS_URL -u ACTIVE_MODEL \
  -u ADMIN_TOKEN -u VIRTUAL_ENV -u PYTHONPATH PORT="$PORT" \
  make -C "$TMP/main" demo >"$LOG" 2>&1 &
SERVER_PID=$!

until curl -s -f -o /dev/null --max-time 2 "$BASE/readyz"; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -n 30 "$LOG" >&2
    fail "make demo exited before the service was ready (log above)"
  fi
  if awk -v waited="$(seconds_since "$START")" -v limit="$READY_TIMEOUT" \
    'BEGIN { exit !(waited > limit) }'; then
    tail -n 30 "$LOG" >&2
    fail "the service was not ready after ${READY_TIMEOUT}s (log above)"
  fi
  sleep 1
done
READY_AFTER=$(seconds_since "$START")

# The README's example payload when it shows one, else the documented default.
PAYLOAD=$(grep -o -m 1 "\-d '{\"support\".*}'" "$TMP/main/README.md" 2>/dev/null \
  | sed "s/^-d '//; s/'\$//" || true)
PAYLOAD=${PAYLOAD:-$DEFAULT_PAYLOAD}
RESPONSE=$(curl -s -S --max-time 30 -X POST "$BASE/v1/recommend" \
  -H 'Content-Type: application/json' -d "$PAYLOAD") || fail "POST /v1/recommend failed"
FIRST_AFTER=$(seconds_since "$START")

python3 - "$RESPONSE" <<'PY' || fail "unexpected answer: $RESPONSE"
"""Check the first answer: five items and a model version."""
import json
import sys

body = json.loads(sys.argv[1])
items = body.get("items") if isinstance(body, dict) else None
if not isinstance(items, list) or len(items) != 5:
    sys.exit(f"expected 5 items, got {items!r}")
if not body.get("model_version"):
    sys.exit("the answer has no model_version")
print("newcomer: top 5:", ", ".join(str(item.get("name") or item.get("item_id")) for item in items))
print("newcomer: model_version:", body["model_version"])
PY

say "ready after ${READY_AFTER}s"
say "first recommendation after ${FIRST_AFTER}s (clone, venv, install, data, training, serve)"

python3 - "$BASE" "$TMP/main/models" "$TMP/shared/data/lastfm/user_artists.dat" <<'PY' \
  || fail "the onboarding check failed (above)"
"""As a new listener would: find seven of Last.fm's most-listened artists by name, rate them,
get recommendations (server time: the request's wall time on loopback, warm, median of 20)."""
import json
import statistics
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

base, models, plays = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
manifest = json.loads(next(models.glob("*/manifest.json")).read_text())
names = manifest["item_names"]
if plays.is_file():
    listeners: dict[str, int] = {}
    for line in plays.read_text().splitlines()[1:]:
        artist = line.split("\t")[1]
        listeners[artist] = listeners.get(artist, 0) + 1
    popular = {artist for artist, count in listeners.items() if count >= 5}
    missing = popular - set(manifest["items"])
    if missing:
        sys.exit(f"{len(missing)} artists with at least 5 listeners are not served")
    print(f"newcomer: all {len(popular):,} artists with at least 5 listeners are in the catalog")
WANTED = ["Lady Gaga", "Britney Spears", "The Beatles", "Radiohead", "Coldplay", "Muse", "Metallica"]


def call(path, body=None):
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


support = []
for name in WANTED:
    found = call("/v1/items?" + urllib.parse.urlencode({"q": name, "limit": 5}))["items"]
    match = [item for item in found if item["name"] == name]
    if not match:
        sys.exit(f"search for {name!r} found {[item['name'] for item in found]}")
    support.append({"item_id": match[0]["item_id"], "rating": 1})
body = {"support": support, "k": 10}
timings = []
for _ in range(21):
    started = time.perf_counter()
    answer = call("/v1/recommend", body)
    timings.append(1000 * (time.perf_counter() - started))
print(f"newcomer: catalog of {len(names):,} artists; found all seven by search")
print("newcomer: for", ", ".join(WANTED), "->", ", ".join(i["name"] for i in answer["items"][:5]))
print(f"newcomer: first answer {timings[0]:.1f} ms, then median {statistics.median(timings[1:]):.1f} ms, "
      f"max {max(timings[1:]):.1f} ms")
PY
stop_server
