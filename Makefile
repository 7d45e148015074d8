# The two set-up commands: `make demo` and `make test`. Both create .venv and install the project first.
#
# CPU or GPU is an explicit choice:
#   make demo                      CPU: onnxruntime + torch $(TORCH_VERSION) (the CPU build on these machines)
#   make demo ACCEL=gpu            GPU: onnxruntime-gpu (CUDA 13) + the CUDA build of torch
# Never install onnxruntime and onnxruntime-gpu into one environment: both provide the `onnxruntime` module.

PYTHON ?= python3
VENV ?= .venv
ACCEL ?= cpu
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url <your CPU or CUDA wheel index>".
TORCH_PIP_ARGS ?=
PIP := $(VENV)/bin/python -m pip
STAMP := $(VENV)/.installed-$(ACCEL)

.PHONY: install browser demo lint test test-slow test-cluster bench bench-peers notebook clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(PIP) install -q --disable-pip-version-check -e ".[$(ACCEL),dev]"
	$(VENV)/bin/python -c "import onnxruntime, torch, ray, great_expectations, mlflow, deltalake; \
	  print('installed: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_device())"
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(VENV)/bin/python -m jobs.tools.demo

# The checks that keep the code's shape (also the pre-commit hooks): lint and format, the layers contract and no
# import cycles (import-linter, [tool.importlinter] in pyproject.toml), types (mypy). About 40 s on 2 cores.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/mypy

test: lint browser
	$(VENV)/bin/python -m pytest

# Headless Chromium, from Debian's packages, for tests/tracking/test_mlflow_ui.py (MLflow's UI read in a browser).
# Installed where `make test` runs as root with apt-get, as CI does; elsewhere without it that test skips, saying so.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	else echo "make: no /usr/bin/chromium, and no root to apt-get it: tests/tracking/test_mlflow_ui.py will skip"; fi

test-slow: install
	$(VENV)/bin/python -m pytest -m "slow or cluster"

test-cluster: install
	$(VENV)/bin/python -m pytest -m cluster

# `score bench` on the reference workloads at full size (about 15 minutes on 2 cores): before a release, and
# after any change to the read, check, score or write path. SCORE_BENCH_SCALE=0.02 checks the suite itself.
bench: install
	$(VENV)/bin/python -m pytest -m benchmarks -s

# The same read -> score -> write by a bare loop, Ray Data by hand, Daft, Spark and `score run`, side by side, outputs
# checked equal (benchmarks/peers/README.md; each peer in its own venv, made on first use). About 12 minutes on 2
# cores; PEERS_SCALE=0.02 checks the harness in about 2 minutes.
PEERS_SCALE ?= 1
bench-peers: install
	$(VENV)/bin/python -m benchmarks.peers.run --workload demo --repeat 3 --scale $(PEERS_SCALE) --json data/bench/peers/demo.json
	$(VENV)/bin/python -m benchmarks.peers.run --workload mlp --repeat 3 --scale $(PEERS_SCALE) --json data/bench/peers/mlp.json

# The ad-hoc notebook in JupyterLab (installed into .venv on first use; run `make demo` first for its data).
notebook: install
	$(VENV)/bin/python -c "import jupyterlab" 2>/dev/null || $(PIP) install -q --disable-pip-version-check jupyterlab
	$(VENV)/bin/jupyter lab notebooks/adhoc_run.ipynb

clean:
	rm -rf data warehouse .score models/churn/*.onnx models/churn/*.pt .mypy_cache .ruff_cache .import_linter_cache
