# forgeline — `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON     ?= python3
VENV       ?= .venv
# CPU build by default; GPU users: make TORCH_SPEC='torch==2.13.0' TORCH_INDEX=… install
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA  ?=
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.forgeline-installed

export DS_ACCELERATOR ?= cpu
export RAY_USAGE_STATS_ENABLED ?= 0
AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/.forgeline/airflow \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -e ".[dev]"
	# the build's leftover metadata in src/ is on sys.path too (the editable .pth): remove it,
	# or Airflow sees forgeline twice ("Plugin 'forgeline' already registered")
	rm -rf src/*.egg-info
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	$(AIRFLOW_ENV) $(BIN)/python -m forgeline.demo

# the multi-node tests build their own Ray clusters in-process: they run in a pytest process
# of their own, so the session's Ray cluster of the other tests is never replaced under them
test: $(STAMP)
	$(BIN)/python -m pytest --ignore=tests/ray/test_multinode.py
	$(BIN)/python -m pytest tests/ray/test_multinode.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -e ".[dev,bench]"
	@for script in benchmarks/*.py; do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .forgeline artifacts
