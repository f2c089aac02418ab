# The two commands a newcomer needs: `make dev` (run everything locally) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev test install lint typecheck bench clean

# Install when pyproject.toml or package-lock.json changed since the last install.
$(STAMP): pyproject.toml package.json package-lock.json
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(PY) scripts/devstack.py

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Benchmarks print figures (never part of `make test`); results also go to bench/results/.
# `make bench BENCH_FLAGS=--quick` runs the end-to-end and growth benchmarks small (minutes).
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
	@mkdir -p bench/results
	$(PY) -m bench.instructions --out bench/results/instructions.md
	$(PY) -m bench.ingest --out bench/results/ingest.md
	$(PY) -m bench.gas_report --out bench/results/gas.md
	$(PY) -m bench.e2e $(BENCH_FLAGS) --out bench/results/e2e.md
	$(PY) -m bench.growth $(BENCH_FLAGS) --out bench/results/growth.md

typecheck: $(STAMP)
	$(VENV)/bin/mypy app db jobs

clean:
	rm -rf $(VENV) node_modules .dev
