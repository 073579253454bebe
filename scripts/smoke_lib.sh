# Sourced by the container smoke tests (scripts/compose_smoke.sh, scripts/replicas_smoke.sh): the
# checks that an engine answers, the scratch copy of the working tree with its own compose
# project, port, secrets and .env, a timed step runner, the clean-up, and small HTTP helpers.
# The sourcing script sets SMOKE (its name in messages) first and may define smoke_extra_cleanup.

say() { printf '%s: %s\n' "$SMOKE" "$*"; }
fail() { printf '%s: FAILED: %s\n' "$SMOKE" "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# An engine with the compose plugin, and the dataset folder (DATA) that training reads.
smoke_preflight() {
  command -v docker >/dev/null || fail "no docker CLI (run ../shared/tools/container-engine.sh up)"
  docker compose version >/dev/null 2>&1 || fail "no 'docker compose' plugin"
  docker info >/dev/null 2>&1 || fail "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset})"
  DATA=$(cd "${TANP_DATA_HOST_DIR:-../shared/data/lastfm}" 2>/dev/null && pwd) \
    || fail "no dataset folder ${TANP_DATA_HOST_DIR:-../shared/data/lastfm} (set TANP_DATA_HOST_DIR)"
}

# smoke_scratch PREFIX: copy the working tree (tracked and untracked, not ignored files) to
# SCRATCH/tanp-rec and cd there; a compose project of its own (PREFIX + pid), a free host port
# (PORT, BASE), a fresh admin token (TOKEN); the cleanup runs on exit.
smoke_scratch() {
  SCRATCH=$(mktemp -d "/tmp/$1.XXXXXX")
  WORK=$SCRATCH/tanp-rec
  mkdir -p "$WORK"
  git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$WORK"
  export COMPOSE_PROJECT_NAME="$1$$"
  export COMPOSE_PROGRESS=plain
  unset ADMIN_TOKEN POSTGRES_PASSWORD REDIS_PASSWORD TRAIN_ARGS TRAIN_RUN_NAME API_PORT
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  BASE=http://127.0.0.1:$PORT
  TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  cd "$WORK"
  trap smoke_cleanup EXIT
}

smoke_cleanup() {
  local status=$?
  if [ $status -ne 0 ]; then
    say "logs of the failed run:"
    docker compose --profile train logs --no-color --tail 40 2>&1 | sed 's/^/  /' || true
  fi
  if declare -F smoke_extra_cleanup >/dev/null; then smoke_extra_cleanup || true; fi
  docker compose --profile train down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$SCRATCH"
  exit $status
}

# .env as the README says: the example with the secrets, the data folder, the port and the
# training options (SMOKE_TRAIN_ARGS, default the short `demo` preset) filled in.
smoke_env_file() {
  cp .env.example .env
  python3 - "$TOKEN" "$DATA" "$PORT" "${SMOKE_TRAIN_ARGS:---split hetrec-median --preset demo --no-baselines}" <<'PY'
import re, secrets, sys
token, data, port, train_args = sys.argv[1:]
values = {"ADMIN_TOKEN": token, "POSTGRES_PASSWORD": secrets.token_hex(24),
          "REDIS_PASSWORD": secrets.token_hex(24), "TANP_DATA_HOST_DIR": data, "API_PORT": port, "TRAIN_ARGS": train_args}
text = open(".env").read()
for name, value in values.items():
    text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
    assert count == 1, f".env.example has no single {name}= line"
open(".env", "w").write(text)
PY
  V1=$(grep -E '^TRAIN_RUN_NAME=' .env | cut -d= -f2)
}

declare -A T
step() { # NAME COMMAND...: run, time (T[NAME]), fail with the command's output
  local name=$1 start
  shift
  start=$(now)
  say "\$ $*"
  if ! "$@" >"$SCRATCH/step.log" 2>&1; then
    tail -n 40 "$SCRATCH/step.log" | sed 's/^/  /' >&2
    fail "$name: '$*' exited non-zero"
  fi
  T[$name]=$(secs "$start")
  say "$name: ${T[$name]} s"
}
get() { curl -sS --max-time 30 "$@"; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print(($1))" "${@:2}"; }
# Pink Floyd and Arctic Monkeys liked, The Pussycat Dolls not (HetRec artist ids)
SUPPORT='{"support":[{"item_id":"163","rating":1},{"item_id":"207","rating":1},{"item_id":"349","rating":0}],"k":5}'
recommend() { get -X POST "$BASE$1" -H 'Content-Type: application/json' -d "$SUPPORT"; }
reload() { # VERSION: the admin reload through BASE; prints the answer
  get -X POST "$BASE/admin/models/reload" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d "{\"version\": \"$1\"}"
}
