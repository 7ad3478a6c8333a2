# `make run` reproduces the pipeline, `make test` runs the suite; both create the virtualenv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
# Stage commands call `python`: make it the virtualenv's.
export PATH := $(BIN):$(PATH)

.PHONY: setup setup-cluster os-packages run test test-fast lint format clean docs

setup: $(VENV)/.installed os-packages

# Debian packages PyPI cannot provide: Fashion-MNIST's test set (the openset stage's clothes; its mirrors are
# tried too) and Chromium (the browser test). Installed only when missing, as root or with `sudo -n` (never a
# prompt); otherwise the command that would is printed and setup goes on.
OS_PACKAGES := dataset-fashion-mnist chromium
os-packages:
	@missing=$$(for p in $(OS_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "setup: no apt-get here; install these yourself: $$missing"; exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else \
		echo "setup: missing OS packages; install them with: sudo apt-get install -y $$missing"; exit 0; fi; \
	echo "setup: installing OS packages: $$missing"; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
		>/dev/null || echo "setup: apt-get failed; install them with: sudo apt-get install -y $$missing"

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Ray and Optuna for `python -m digits.cluster` (docs/scaling.md), pinned in their own lock; not in `make setup`.
setup-cluster: setup $(VENV)/.cluster
$(VENV)/.cluster: requirements-cluster.lock $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-cluster.lock
	$(BIN)/python -m pip check
	touch $@

# Params are checked first: a stage that refuses bad params has already lost its outputs to `dvc repro`.
# --keep-going: a stage that fails (e.g. fashion without its files) stops only the stages that need it; the
# model is still trained, evaluated and exported, and `make run` still fails, naming the stage.
run: setup
	python -m digits.params
	dvc repro --keep-going

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

# The documentation site (docs/, mkdocs.yml) into site/; strict: a broken link or a missing page fails.
docs: setup
	mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dvc_plots site

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
