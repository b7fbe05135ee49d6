"""What the offline preference stages (dpo, kto) build alike: the policy, its frozen reference and the LoRA config,
seeded, with a chat template that stops generation -- and DPO's trainer on them. Only the recipes' mains import this
(TRL's trainers and model loading are heavy); their config checks are the recipes' `parse_args`."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from transformers import set_seed
from trl import DPOTrainer, get_peft_config

from llm_recipes.data.preferences import PairData, load_preference_data
from llm_recipes.models.chat import ensure_chat_template
from llm_recipes.models.loading import count_parameters, load_causal_lm, load_tokenizer

__all__ = ["build_dpo_trainer", "count_parameters", "policy_and_reference"]

if TYPE_CHECKING:
    from trl import DPOConfig, ModelConfig

    from llm_recipes.rl.config import DPOScriptArguments


def policy_and_reference(training_args: Any, model_args: ModelConfig, conversational: bool) -> tuple[Any, ...]:
    """(policy, reference or None, tokenizer, LoRA config or None). The reference is None when TRL can make it
    itself (a copy of the starting policy, or the base under the adapter); a copy is made here only when a chat
    template had to be added, since TRL would load its reference from the path, without the new tokens' rows."""
    # Seeded first: a chat template's new tokens get random embedding rows, and TRL seeds only in its trainer
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    model = load_causal_lm(model_args, training_args.trust_remote_code)
    peft_config = get_peft_config(model_args)
    reference = None
    if conversational and ensure_chat_template(tokenizer, model):
        if peft_config is not None:
            # new chat tokens start untrained: the adapter trains their embedding and output rows in full
            peft_config.modules_to_save = list({*(peft_config.modules_to_save or []), "embed_tokens", "lm_head"})
        else:
            reference = copy.deepcopy(model).eval().requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, reference, tokenizer, peft_config


def build_dpo_trainer(
    script_args: DPOScriptArguments, training_args: DPOConfig, model_args: ModelConfig
) -> tuple[DPOTrainer, PairData]:
    """Data, tokenizer, policy and TRL's DPOTrainer. Returns (trainer, data)."""
    with training_args.main_process_first(desc="loading preference data"):
        data = load_preference_data(
            script_args.dataset_path,
            script_args.data_format,
            split=script_args.dataset_split,
            eval_path=script_args.eval_dataset_path,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=training_args.seed,
            num_proc=training_args.dataset_num_proc,
        )
    # DPO's loss has no use for a margin column
    data.train = data.train.remove_columns([c for c in data.train.column_names if c == "margin"])
    if data.eval is not None:
        data.eval = data.eval.remove_columns([c for c in data.eval.column_names if c == "margin"])

    model, reference, tokenizer, peft_config = policy_and_reference(training_args, model_args, data.conversational)
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return trainer, data
