# The two set-up commands (README.md): `make run` and `make test`.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export PYANNOTE_METRICS_ENABLED := false
PORT ?= 8765
LAB_PORT ?= 8888
DEMO_PORT ?= 8866
DATA ?= data

.PHONY: run demo serve lab test test-fast bench bootstrap bootstrap-test

bootstrap:
	@scripts/bootstrap.sh

bootstrap-test:
	@scripts/bootstrap.sh --test

## Main job: recording server + JupyterLab on notebooks/ (Ctrl-C stops both).
run: bootstrap
	@scripts/run.sh $(PORT) $(LAB_PORT) $(DATA)

## Demo: recording server + the Voilà dashboard (notebooks/dashboard.ipynb; Ctrl-C stops both).
demo: bootstrap
	@scripts/demo.sh $(PORT) $(DEMO_PORT) $(DATA)

## The recording server alone.
serve: bootstrap
	$(PY) -m server --host 127.0.0.1 --port $(PORT) --data-dir $(DATA)

## The whole test suite (unit, functional, models, notebooks, browser), on TEST_WORKERS
## pytest-xdist processes; a test file's tests, and a notebook's cells, stay on one.
## `make test TEST_WORKERS=0`: everything in one process, in order.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile
test: bootstrap-test
	$(PYTEST) --durations=15 --nbval-lax --nbval-current-env tests notebooks

## Quick subset: no models, no notebooks, no browser.
test-fast: bootstrap-test
	$(PYTEST) -m "not models and not browser" tests

## Benchmarks: print figures and write benchmarks/results/*.json
bench: bootstrap-test
	$(PY) -m benchmarks
