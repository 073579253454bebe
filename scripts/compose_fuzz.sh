#!/usr/bin/env bash
# `make compose-fuzz`: bench/fuzz.py (schemathesis, every operation, anonymous and with the admin
# token) against the compose deployment: in a scratch copy as `make compose-smoke` makes it
# (build, train the demo model, up --wait), then `docker compose down -v`. Not run by CI (minutes
# of fuzzing); its figures are in docs/reliability.md. Needs what compose-smoke needs and this
# checkout's .venv (make install-dev). Environment: FUZZ_EXAMPLES (300).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
SMOKE=compose-fuzz
# shellcheck source=scripts/smoke_lib.sh
source scripts/smoke_lib.sh

[ -x "$REPO/.venv/bin/python" ] || fail "no $REPO/.venv: run make install-dev"
smoke_preflight
smoke_scratch tanpfuzz
smoke_env_file
say "project $COMPOSE_PROJECT_NAME in $WORK, API on port $PORT"
step build docker compose --profile train build
step train docker compose --profile train run --rm train
step up docker compose up -d --wait
"$REPO/.venv/bin/python" "$REPO/bench/fuzz.py" --base-url "$BASE" --token "$TOKEN" \
  --examples "${FUZZ_EXAMPLES:-300}" --out "$SCRATCH/fuzz-reports"
say "passed"
