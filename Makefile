# Two entry points (README): `make run` and `make test`. Both create the environment on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

# The stack runs offline and sends no telemetry (also set in sbir.env for direct Python use).
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export BENTOML_DO_NOT_TRACK := True
export GX_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: setup setup-system run compare serve flow test test-fast bench clean

setup: $(STAMP) $(NODE_STAMP)

# System packages: headless Chromium and its driver (Debian's) for the browser tests of the sketch pad, Node.js
# with npm for the artwork packages of package.json, the Symbola font (the `symbola` sketch style), and
# PostgreSQL (the scheduler's database as a team runs it; its test starts a throwaway server). Installed only when missing; sudo only when not root.
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup-system:
	@missing=""; \
	if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then missing="chromium chromium-driver"; fi; \
	if ! command -v npm >/dev/null 2>&1; then missing="$$missing nodejs npm"; fi; \
	if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing="$$missing postgresql"; fi; \
	if [ ! -f /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf ]; then missing="$$missing fonts-symbola"; fi; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Artwork that datasets are built from, pinned by package-lock.json (Twemoji, Fluent Emoji flat / high contrast /
# 3D, EmojiOne monotone: the artwork styles of sbir/datasets/artwork_sources.py): installed into node_modules/
# without running install scripts; nothing is downloaded at run time.
$(NODE_STAMP): package.json package-lock.json | setup-system
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(STAMP): pyproject.toml requirements.lock | setup-system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

# The pipeline on the embedded default (OpenMoji-ZS), cached by DVC: the models of params.yaml `run.models`
# (the best method and the baselines), then register, index and package; a summary table at the end.
run: setup
	zssbir run

# Every model of dvc.yaml (all three methods and the baselines, `dvc repro`), and the comparison table.
compare: setup
	zssbir run --all --table benchmarks/results/methods_openmoji_zs.md

# The built Bento (make run builds it) on http://127.0.0.1:3000 (sketch pad at /ui/).
serve: setup
	zssbir serve

# The pipeline once through the Prefect training flow (report as Prefect artifacts); schedule it with
# `zssbir scheduler start` (a real Prefect server on 127.0.0.1:4200) and stop it with `zssbir scheduler stop`.
flow: setup
	zssbir flow

# Tests run on $(TEST_WORKERS) pytest-xdist workers, a test file at a time (module fixtures are built once; the
# files of the real server share one worker: tests/conftest.py), in collection order (the files that wait for the
# shared build last); the reproduced pipeline that the DVC, flow and schedule tests copy is built once for all, in
# the background (tests/shared_build.py).
TEST_WORKERS ?= 2
PYTEST := pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

bench: setup
	python benchmarks/bench_prepare.py
	python benchmarks/bench_metrics.py
	python benchmarks/bench_train_data.py
	python benchmarks/bench_data.py
	python benchmarks/bench_index.py
	python benchmarks/bench_serving.py

clean:
	rm -rf data artifacts dvclive .pytest_cache
