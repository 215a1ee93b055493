# The two commands: `make demo` (install, register the example model, serve it) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The demo's registry and keys live in the checkout (git ignores it), not in the user's ~/.dockyard.
DEMO_HOME ?= $(CURDIR)/demo-home

.PHONY: demo test test-pythons lint bench install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when pyproject.toml changes.
$(VENV)/.core: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.core

install: $(VENV)/.core
install-dev: $(VENV)/.dev

demo: install
	DOCKYARD_HOME=$(DEMO_HOME) $(PY) examples/demo.py --host $(HOST) --port $(PORT)
	DOCKYARD_HOME=$(DEMO_HOME) $(VENV)/bin/dockyard serve diagnosis@staging --host $(HOST) --port $(PORT)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# One pytest process per core (at most 4), each taking whole test files: most of the suite's time
# is real servers starting and answering, which two cores share better than one.
test: lint
	$(PY) -m pytest --numprocesses=auto --maxprocesses=4 --dist loadfile

# The suite on every supported Python installed here (noxfile.py), one virtual environment each
# under .nox/; nox's summary names the interpreters it ran and those it skipped.
test-pythons: lint
	env "$$(bash .ci/pythons.sh)" $(VENV)/bin/nox

# The pythons scenario serves from every supported Python installed here, found as test-pythons finds them.
bench: install-dev
	env "$$(bash .ci/pythons.sh)" $(PY) benchmarks/run.py

# Regenerate the gRPC modules beside src/dockyard/serving/grpc_v2/grpc_predict_v2.proto (grpcio-tools).
grpc-proto: install-dev
	$(PY) tools/grpc_proto.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
