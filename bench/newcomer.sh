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
DEFAULT_PAYLOAD='{"support":[{"item_id":"36","rating":1},{"item_id":"46","rating":1},{"item_id":"87","rating":0}],"k":5}'
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
stop_server
