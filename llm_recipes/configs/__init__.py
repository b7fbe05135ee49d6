"""Script arguments for each stage, and one parser that turns YAML + command line into checked dataclasses.

    parsing.py      TrlParser plus one-line errors: unknown keys, types, ranges; run_recipe()
    paths.py        local paths must exist (except what an earlier pipeline stage will write)
    training.py     SFT and pretraining (and the dataset mixture both read)
    corpus.py       tokenizer training, init-model (corpus cleaning's are in llm_recipes/corpus/config.py)
    preferences.py  reward modelling, DPO, GRPO/RLOO and our PPO
    compression.py  distillation, quantization, pruning
    evaluation.py   evaluate and export
    tasks.py        task fine-tuning (classification, NER, extractive QA)

Everything is importable from here (`from llm_recipes.configs import SFTScriptArguments, parse_config`).
"""

import importlib
from typing import Any

from llm_recipes.configs.compression import (
    DISTILL_DIVERGENCES,
    DISTILL_METHODS,
    PRUNE_METHODS,
    QUANTIZE_METHODS,
    CompressionEvalArguments,
    DistillArguments,
    PruneArguments,
    QuantizeArguments,
)
from llm_recipes.configs.corpus import (
    InitModelArguments,
    TrainTokenizerArguments,
)
from llm_recipes.configs.evaluation import (
    EVAL_METRICS,
    EXPORT_DTYPES,
    EXPORT_QUANTIZATIONS,
    GGUF_TYPES,
    EvaluateArguments,
    ExportArguments,
)
from llm_recipes.configs.parsing import (
    DATA_FILE_SUFFIXES,
    DATA_FORMATS,
    RANGE_CHECKS,
    TXT_UNITS,
    Check,
    ConfigError,
    check_ranges,
    exit_with_config_error,
    given_values,
    is_first_process,
    load_yaml_config,
    parse_config,
    parse_or_exit,
    run_recipe,
)
from llm_recipes.configs.paths import (
    check_dataset_path,
    check_eval_data,
    check_model_path,
    check_quantized_training,
    is_planned,
    looks_local,
    planned_outputs,
)
from llm_recipes.configs.preferences import (
    PPO_KL_ESTIMATORS,
    PPO_LR_SCHEDULES,
    PREFERENCE_FORMATS,
    DPOScriptArguments,
    PPOConfig,
    PPOScriptArguments,
    PreferenceDataArguments,
    RewardScriptArguments,
    RLScriptArguments,
)
from llm_recipes.configs.tasks import (
    FINETUNE_TASKS,
    FinetuneTaskArguments,
)
from llm_recipes.configs.training import (
    PRETRAIN_CURRICULA,
    DatasetSpec,
    PretrainScriptArguments,
    SFTScriptArguments,
    dataset_specs,
)

__all__ = [
    "DATA_FILE_SUFFIXES",
    "DATA_FORMATS",
    "TXT_UNITS",
    "ConfigError",
    "Check",
    "RANGE_CHECKS",
    "load_yaml_config",
    "given_values",
    "parse_config",
    "check_ranges",
    "parse_or_exit",
    "is_first_process",
    "run_recipe",
    "exit_with_config_error",
    "looks_local",
    "planned_outputs",
    "is_planned",
    "check_dataset_path",
    "check_model_path",
    "check_quantized_training",
    "check_eval_data",
    "DatasetSpec",
    "SFTScriptArguments",
    "dataset_specs",
    "PRETRAIN_CURRICULA",
    "PretrainScriptArguments",
    "CORPUS_OUTPUT_FORMATS",
    "CleanCorpusArguments",
    "InitModelArguments",
    "TrainTokenizerArguments",
    "EXPORT_DTYPES",
    "EXPORT_QUANTIZATIONS",
    "GGUF_TYPES",
    "ExportArguments",
    "EVAL_METRICS",
    "EvaluateArguments",
    "PREFERENCE_FORMATS",
    "PreferenceDataArguments",
    "RewardScriptArguments",
    "DPOScriptArguments",
    "RLScriptArguments",
    "PPO_KL_ESTIMATORS",
    "PPO_LR_SCHEDULES",
    "PPOScriptArguments",
    "PPOConfig",
    "DISTILL_METHODS",
    "DISTILL_DIVERGENCES",
    "DistillArguments",
    "CompressionEvalArguments",
    "QUANTIZE_METHODS",
    "QuantizeArguments",
    "PRUNE_METHODS",
    "PruneArguments",
    "FINETUNE_TASKS",
    "FinetuneTaskArguments",
]

# The corpus stage's arguments live in llm_recipes.corpus.config, which imports this package's options and checks:
# looked up on first use, so neither import has to come first.
_MOVED = {"CORPUS_OUTPUT_FORMATS": "llm_recipes.corpus.config", "CleanCorpusArguments": "llm_recipes.corpus.config"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'llm_recipes.configs' has no attribute '{name}'")
