"""Group relative policy optimization (GRPO) over TRL's GRPOTrainer, rewarded by a reward model or a function.

For each prompt the policy samples a group of completions, and each completion's advantage is its reward
relative to the group's -- no value model.

    llm-recipes grpo --config configs/demo/grpo.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/grpo.py --config configs/demo/grpo.yaml
    python recipes/grpo.py --config configs/demo/grpo.yaml

Prompts come from a `prompt` column or the prompt side of any SFT or preference format. The reward is our
trained reward model (`reward_model_path`, read exactly as the reward stage trained it) or a Python function
(`reward_function: package.module:function`). The policy (usually the SFT model) trains fully or with LoRA;
`beta` > 0 adds a KL penalty against the starting policy. Generation runs in transformers (`use_vllm: true` on a
GPU with vLLM installed). Writes the policy, its tokenizer and generation config, and a manifest whose summary
shows the eval reward before and after training.
"""

from __future__ import annotations

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import GRPOConfig, GRPOTrainer, ModelConfig

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.rl.config import RLScriptArguments
from llm_recipes.rl.online import build_online_rl_trainer, train_online_rl
from llm_recipes.rl.rewards import check_rl_arguments
from llm_recipes.runs.outputs import stage_main

# Our defaults where TRL's differ: no tracker unless asked, private pushes.
GRPO_DEFAULTS = dict(report_to="none", hub_private_repo=True, logging_steps=10)


def parse_args(argv: Sequence[str] | None = None) -> tuple[RLScriptArguments, GRPOConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args, model_args = parse_config(
        (RLScriptArguments, GRPOConfig, ModelConfig), argv, **GRPO_DEFAULTS
    )
    check_rl_arguments(script_args, training_args, model_args)
    return script_args, training_args, model_args


def build_trainer(script_args: RLScriptArguments, training_args: GRPOConfig, model_args: ModelConfig):
    """Prompts, policy, reward and TRL's GRPOTrainer, ready to train. Returns (trainer, data)."""

    return build_online_rl_trainer(GRPOTrainer, script_args, training_args, model_args)


@stage_main
def main(script_args: RLScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> dict:
    return train_online_rl("grpo", GRPOTrainer, script_args, training_args, model_args)


if __name__ == "__main__":
    run_recipe(main, parse_args)
