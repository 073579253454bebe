#!/usr/bin/env bash
# `make demo` after the Makefile installed .venv (extras train,serve): find the data, train a demo
# model when MODELS_DIR holds none, migrate the SQLite registry, then serve on 127.0.0.1:$PORT with
# the in-process cache. Environment: TANP_DATA_DIR, MODELS_DIR (models), DATABASE_URL
# (sqlite:///./tanp.db), PORT (8000). Re-running reuses the data, the model and the database.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'demo: %s\n' "$*"; }
fail() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

for tool in tanp-train tanp-serve; do
  [ -x ".venv/bin/$tool" ] || fail ".venv/bin/$tool is missing: run 'make demo' (it installs .venv first)"
done

has_data() { [ -f "$1/user_artists.dat" ]; }

if [ -n "${TANP_DATA_DIR:-}" ]; then
  DATA=$TANP_DATA_DIR
  if ! has_data "$DATA"; then
    say "TANP_DATA_DIR=$DATA holds no dataset: downloading HetRec Last.fm-2k into it"
    .venv/bin/tanp-train fetch-data --to "$DATA" || fail "could not fetch the data into $DATA"
  fi
elif has_data ../shared/data/lastfm; then
  DATA=../shared/data/lastfm
else
  DATA="$HOME/.cache/tanp-rec/lastfm"
  say "no local dataset found: fetching HetRec Last.fm-2k into $DATA"
  .venv/bin/tanp-train fetch-data --to "$DATA" \
    || fail "could not fetch the data; set TANP_DATA_DIR to a folder with the Last.fm files"
fi
export TANP_DATA_DIR=$DATA
say "data: $DATA"

export MODELS_DIR=${MODELS_DIR:-models}
export DATABASE_URL=${DATABASE_URL:-sqlite:///./tanp.db}
PORT=${PORT:-8000}

# The served model covers the whole HetRec catalog (every artist of user_artists.dat); the
# paper's 3,846-artist protocol (--split tanp) is for reproducing the paper's numbers.
SPLIT=(--split hetrec-median --seed 1)

existing=$(find "$MODELS_DIR" -mindepth 2 -maxdepth 2 -name manifest.json -print -quit 2>/dev/null || true)
if [ -n "$existing" ]; then
  say "model: $(dirname "$existing") (already trained; remove it to train again)"
else
  RUN="$MODELS_DIR/demo-$(date +%Y%m%d%H%M%S)"
  say "no model under $MODELS_DIR: training a demo model into $RUN"
  mkdir -p "$MODELS_DIR"
  .venv/bin/tanp-train train --data "$DATA" "${SPLIT[@]}" --out "$RUN" --preset demo --no-baselines --quiet \
    || fail "training failed (see the log above)"
fi

say "database: $DATABASE_URL"
.venv/bin/tanp-serve migrate || fail "database migration failed (DATABASE_URL=$DATABASE_URL)"

cat <<MSG

  tanp-rec demo: open http://127.0.0.1:$PORT/  (API docs: http://127.0.0.1:$PORT/docs)
  Try a recommendation for a new user with three rated artists:

  curl -s -X POST http://127.0.0.1:$PORT/v1/recommend -H 'Content-Type: application/json' -d '{"support":[{"item_id":"163","rating":1},{"item_id":"207","rating":1},{"item_id":"349","rating":0}],"k":5}'

  Stop with Ctrl-C.

MSG
exec .venv/bin/tanp-serve --host 127.0.0.1 --port "$PORT"
