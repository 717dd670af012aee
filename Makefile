# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what the project needs, then runs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint typecheck results bench bench-deploy screenshot clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of PyTorch; a newer or unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[torch,data,report,tracking,ray,deploy,privacy,dpsgd,dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# FedAvg, FedProx and SCAFFOLD on label-skewed digits: per-run tables, a comparison table and
# a comparison plot; every run is recorded in runs/fedloom.db (`fedloom runs` lists them).
demo: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/fedloom run examples/digits-fedavg.toml \
		examples/digits-fedprox.toml examples/digits-scaffold.toml --plot runs/demo-comparison.png

lint: setup
	$(VENV)/bin/ruff check src tests examples bench
	$(VENV)/bin/ruff format --check src tests examples bench
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy

test: lint typecheck
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q

# The README's non-IID table (five algorithms beside a centralized upper bound).
results: setup
	OMP_NUM_THREADS=1 $(PY) examples/noniid.py --rounds 30 --markdown docs/results.md

# fedloom's executors beside Flower's simulation engine and a plain PyTorch loop on the same
# data; writes docs/benchmarks.md and bench/results.json (about 12 minutes; the first run also
# installs Flower into bench/.venv-flower). Then secure aggregation's costs, into
# docs/benchmarks-secagg.md (about seven minutes, most of it Flower's SecAgg+ runs), each update codec's bytes, accuracy and speed
# (bench/codecs.py → docs/benchmarks-compression.md, about 5 minutes), and the robustness table: every attack against
# the mean and each robust reducer (docs/robustness-results.md, about 8 minutes). Not part of
# `make test`.
bench: setup
	OMP_NUM_THREADS=1 $(PY) bench/run.py
	OMP_NUM_THREADS=1 $(PY) bench/secagg.py
	OMP_NUM_THREADS=1 $(PY) bench/codecs.py
	OMP_NUM_THREADS=1 $(PY) bench/robustness.py
	$(MAKE) bench-deploy

# gRPC with mutual TLS on loopback: 20 site processes, a 10-million-parameter model, 5 rounds,
# beside a bare TLS socket; writes docs/deploy-benchmark.md (about a minute on 2 cores).
bench-deploy: setup
	OMP_NUM_THREADS=1 $(PY) bench/deploy_bench.py

# Regenerate the committed protobuf code from proto/ (docs/protocol.md describes the schema).
# Only messages are generated: the transport wires the one gRPC method itself.
PROTO_OUT := src/fedloom/transport/proto/v1
proto: setup
	rm -rf build/proto && mkdir -p build/proto
	$(PY) -m grpc_tools.protoc -I proto --python_out=build/proto --pyi_out=build/proto \
		proto/fedloom/v1/fedloom.proto
	cp build/proto/fedloom/v1/fedloom_pb2.py build/proto/fedloom/v1/fedloom_pb2.pyi $(PROTO_OUT)/

# docs/dashboard.png: the dashboard's page for the demo's FedAvg run, in headless chromium.
screenshot: setup
	OMP_NUM_THREADS=1 $(PY) examples/dashboard_screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
