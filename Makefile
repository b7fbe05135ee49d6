# Two entry points for a fresh machine with only Python: `make demo` and `make test`.
# Both create .venv and install torch *first* (TORCH_SPEC; the CPU build here), so pip never pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the demo's own raw pages (configs/demo/pipeline.yaml): corpus -> tokenizer -> pretrain -> SFT
# -> reward -> PPO -> evaluate -> distill/quantize/prune -> export, ending with a table of what each stage did.
# Rerunning skips the stages that are done. One thread per process: tiny models only lose time syncing threads.
demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/llm-recipes pipeline --config configs/demo/pipeline.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
