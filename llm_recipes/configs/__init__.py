"""Config parsing: one parser that turns YAML + command line into checked dataclasses, and the checks and
options the stages' arguments share. Each stage's arguments live with the stage (`llm_recipes.sft.config`,
`llm_recipes.rl.config`, `llm_recipes.compress.config`, ...); this package exports only what its four modules define.

    parsing.py  TrlParser plus one-line errors: unknown keys, types, ranges; run_recipe()
    paths.py    local paths must exist (except what an earlier pipeline stage will write)
    options.py  option groups several stages' arguments share (output folder, resuming)
    code.py     user code a config names (reward functions, filters) checked before anything loads
"""

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
    mapping_field,
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

__all__ = [
    "DATA_FILE_SUFFIXES",
    "DATA_FORMATS",
    "RANGE_CHECKS",
    "TXT_UNITS",
    "Check",
    "ConfigError",
    "check_ranges",
    "exit_with_config_error",
    "given_values",
    "is_first_process",
    "load_yaml_config",
    "mapping_field",
    "parse_config",
    "parse_or_exit",
    "run_recipe",
    "check_dataset_path",
    "check_eval_data",
    "check_model_path",
    "check_quantized_training",
    "is_planned",
    "looks_local",
    "planned_outputs",
]
