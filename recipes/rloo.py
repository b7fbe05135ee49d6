"""REINFORCE leave-one-out (RLOO) over TRL's RLOOTrainer, rewarded by a reward model or a function.

The policy samples several completions per prompt, and each completion's baseline is the mean reward of the
others -- no value model, and an unbiased advantage.

    llm-recipes rloo --config configs/demo/rloo.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/rloo.py --config configs/demo/rloo.yaml
    python recipes/rloo.py --config configs/demo/rloo.yaml

The same inputs as the GRPO stage: prompts from a `prompt` column or any SFT or preference format, and one
reward -- our trained reward model (`reward_model_path`) or a Python function (`reward_function`). TRL's RLOO
keeps a KL penalty against the starting policy by default (`beta: 0.05`). Writes the policy, its tokenizer and
generation config, and a manifest whose summary shows the eval reward before and after training.
"""

from __future__ import annotations

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import ModelConfig, RLOOConfig, RLOOTrainer

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.rl.config import RLScriptArguments
from llm_recipes.rl.online import build_online_rl_trainer, train_online_rl
from llm_recipes.rl.rewards import check_rl_arguments
from llm_recipes.runs.outputs import stage_main

# Our defaults where TRL's differ: no tracker unless asked, private pushes.
RLOO_DEFAULTS = dict(report_to="none", hub_private_repo=True, logging_steps=10)


def parse_args(argv: Sequence[str] | None = None) -> tuple[RLScriptArguments, RLOOConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args, model_args = parse_config(
        (RLScriptArguments, RLOOConfig, ModelConfig), argv, **RLOO_DEFAULTS
    )
    check_rl_arguments(script_args, training_args, model_args)
    return script_args, training_args, model_args


def build_trainer(script_args: RLScriptArguments, training_args: RLOOConfig, model_args: ModelConfig):
    """Prompts, policy, reward and TRL's RLOOTrainer, ready to train. Returns (trainer, data)."""

    return build_online_rl_trainer(RLOOTrainer, script_args, training_args, model_args)


@stage_main
def main(script_args: RLScriptArguments, training_args: RLOOConfig, model_args: ModelConfig) -> dict:
    return train_online_rl("rloo", RLOOTrainer, script_args, training_args, model_args)


if __name__ == "__main__":
    run_recipe(main, parse_args)
