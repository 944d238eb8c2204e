# Two entry points (README): `make run` and `make test`. Both create the environment on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

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

.PHONY: setup setup-system run serve flow test test-fast bench clean

setup: $(STAMP)

# System packages: headless Chromium and its driver (Debian's) for the browser tests of the sketch pad.
# Installed only when missing; sudo only when not root.
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup-system:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver; \
	fi

$(STAMP): pyproject.toml requirements.lock | setup-system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

# The pipeline on the embedded default (OpenMoji-ZS): every stage of dvc.yaml, cached by DVC.
run: setup
	dvc repro
	dvc status
	python -m stages.report

# The built Bento (make run builds it) on http://127.0.0.1:3000 (sketch pad at /ui/).
serve: setup
	zssbir serve

# The pipeline once through the Prefect training flow (report as Prefect artifacts); schedule it with
# `zssbir scheduler start` (a real Prefect server on 127.0.0.1:4200) and stop it with `zssbir scheduler stop`.
flow: setup
	zssbir flow

test: setup
	pytest -q

test-fast: setup
	pytest -q -m "not slow"

bench: setup
	python benchmarks/bench_prepare.py
	python benchmarks/bench_metrics.py
	python benchmarks/bench_train_data.py
	python benchmarks/bench_data.py
	python benchmarks/bench_index.py
	python benchmarks/bench_serving.py

clean:
	rm -rf data artifacts dvclive .pytest_cache
