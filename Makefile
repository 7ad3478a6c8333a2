# `make run` reproduces the pipeline, `make test` runs the suite; both create the virtualenv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
# Stage commands call `python`: make it the virtualenv's.
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-fast lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Params are checked first: a stage that refuses bad params has already lost its outputs to `dvc repro`.
run: setup
	python -m digits.params
	dvc repro

test: setup
	pytest

# Without the end-to-end pipeline runs and without Chromium (the browser test).
test-fast: setup
	pytest -m "not slow and not browser"

lint: setup
	ruff check .
	ruff format --check .

format: setup
	ruff check --fix .
	ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dvc_plots

# The web app on http://127.0.0.1:8000: drawing page at /, API docs at /docs. Serves models/serving
# (the export stage's bundle: LiteRT, no TensorFlow) if it exists, else models/model.keras.
.PHONY: serve
serve: setup
	python -m digits.serve

# Load-test the web app over loopback: 8 clients, 4000 requests or 30 s; numbers also in benchmarks/results/.
.PHONY: bench-serve
bench-serve: setup
	python benchmarks/serve_load.py --json benchmarks/results/serve_load.json

# Every benchmark with bounded sizes (about 15 minutes on a 2-core box); JSON under benchmarks/results/.
.PHONY: bench
bench: setup
	mkdir -p benchmarks/results
	python benchmarks/train_throughput.py --steps 30 --rounds 3 --preset-rounds 3 \
		--json benchmarks/results/train_throughput.json
	python benchmarks/pipeline_timing.py --json benchmarks/results/pipeline_timing.json
	python benchmarks/inference.py --repeat 3 --json benchmarks/results/inference.json
	python benchmarks/serve_load.py --requests 4000 --seconds 30 --json benchmarks/results/serve_load.json
	python benchmarks/augment_cost.py --batches 40 --repeats 3 --json benchmarks/results/augment_cost.json
