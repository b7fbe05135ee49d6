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

# The pipeline on the demo's own raw pages: corpus -> tokenizer -> pretrain -> SFT -> reward -> PPO -> evaluate -> export
demo: $(STAMP)
	$(BIN)/llm-recipes clean-corpus --config configs/demo/clean_corpus.yaml
	$(BIN)/llm-recipes train-tokenizer --config configs/demo/train_tokenizer.yaml
	$(BIN)/llm-recipes pretrain --config configs/demo/pretrain.yaml
	$(BIN)/llm-recipes sft --config configs/demo/sft.yaml
	$(BIN)/llm-recipes reward --config configs/demo/reward.yaml
	$(BIN)/llm-recipes ppo --config configs/demo/ppo.yaml
	$(BIN)/llm-recipes evaluate --config configs/demo/evaluate.yaml
	$(BIN)/llm-recipes export --config configs/demo/export.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
