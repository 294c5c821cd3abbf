# Two commands for a new user: `make up` starts everything, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: up test kafka-start kafka-stop kafka-status bench clean cluster-test fuzz soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# setuptools greets every editable install of a flat layout with an "Editable installation"
# warning about same-named folders; it says nothing actionable to someone running `make up`.
PIP    := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip

# The client distribution (client/) first: the server depends on it, and it is not on PyPI.
$(VENV)/.installed: pyproject.toml client/pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ./client -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e ./client -e '.[test]'
	touch $@

up: $(VENV)/.installed
	$(BIN)/runledger up

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

kafka-start: $(VENV)/.installed
	$(BIN)/runledger kafka start

kafka-stop: $(VENV)/.installed
	$(BIN)/runledger kafka stop

kafka-status: $(VENV)/.installed
	$(BIN)/runledger kafka status

# Runledger vs MLflow (SQLite) on this machine; MLflow goes into bench/.venv-mlflow on first use.
# BENCH_ARGS=--quick for small sizes (~3 min); the full run takes ~15 min. See bench/README.md.
bench: $(VENV)/.installed-test
	$(BIN)/python bench/run_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info

# Issue 21 (docs/replicas.md, README "What survives what"): the slow proofs, outside `make test`.
# A three-broker Kafka cluster, the partition leader SIGKILLed under load (~3 min).
cluster-test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m cluster -s -p no:randomly tests/test_cluster.py $(PYTEST_ARGS)

# schemathesis over every route of /openapi.json without a time limit (make test runs 90 s of it).
fuzz: $(VENV)/.installed-test
	RUNLEDGER_FUZZ_SECONDS=0 RUNLEDGER_FUZZ_EXAMPLES=$${RUNLEDGER_FUZZ_EXAMPLES:-300} \
		$(BIN)/python -m pytest -s -p no:randomly tests/test_fuzz.py $(PYTEST_ARGS)

# Steady streaming with readers for RUNLEDGER_SOAK_SECONDS (600): RSS and lag figures.
soak: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m soak -s -p no:randomly tests/test_soak.py $(PYTEST_ARGS)
