"""The SFT stage's trainer: data in TRL's standard columns, the model and tokenizer with a chat template that stops
generation, the trainable part chosen, and TRL's `SFTTrainer` over them (the prune stage's chat recovery uses it too).
"""

from __future__ import annotations

from typing import Any

from transformers import set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from llm_recipes.data.config import DatasetSpec, dataset_specs
from llm_recipes.data.loading import TrainingData, load_training_data
from llm_recipes.data.mixture import check_batches
from llm_recipes.models.chat import ensure_chat_template, read_chat_template, set_stop_tokens
from llm_recipes.models.loading import freeze_for_partial_finetuning, load_causal_lm, load_tokenizer
from llm_recipes.sft.config import SFTScriptArguments


def build_trainer(
    script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig
) -> tuple[SFTTrainer, TrainingData]:
    """Data, tokenizer, model and TRL's SFTTrainer, ready to train. Returns (trainer, data)."""
    # Data: every source converted to TRL's standard columns, mixed by weight, eval held out
    eval_spec = DatasetSpec(path=script_args.eval_dataset_path) if script_args.eval_dataset_path else None
    with training_args.main_process_first(desc="loading datasets"):
        data = load_training_data(
            dataset_specs(script_args),
            eval_spec=eval_spec,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=training_args.seed,
            num_proc=training_args.dataset_num_proc,
        )
    check_batches(len(data.train), len(data.eval) if data.eval is not None else None, training_args)
    if data.shape != "messages":
        # assistant-only loss is for conversations; prompt/completion data gets TRL's completion-only loss instead
        training_args.assistant_only_loss = False

    # Model and tokenizer: a chat template that stops generation, and the chosen trainable part. Seeded first: new
    # chat-token rows and a LoRA adapter start random, and the Trainer seeds only once they exist
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    model = load_causal_lm(model_args, training_args.trust_remote_code)
    if training_args.chat_template_path:
        tokenizer.chat_template = read_chat_template(training_args.chat_template_path)
        training_args.chat_template_path = None  # applied here; TRL would otherwise apply it again
    added_token_ids = ensure_chat_template(tokenizer, model)
    set_stop_tokens(model, tokenizer, extra_eos_ids=_as_list(model.generation_config.eos_token_id))
    if script_args.trainable_top_layers is not None or script_args.trainable_embeddings:
        freeze_for_partial_finetuning(model, script_args.trainable_top_layers, script_args.trainable_embeddings)
    peft_config = get_peft_config(model_args)
    if peft_config is not None and added_token_ids:
        # New chat tokens start untrained, so the adapter must train their embedding and output rows. PEFT's
        # trainable_token_indices would do it with a small delta, but TRL's fused LM-head loss reads the raw head
        # weight and never sees it; training the two matrices in full is the combination that works.
        peft_config.modules_to_save = list({*(peft_config.modules_to_save or []), "embed_tokens", "lm_head"})
        peft_config.ensure_weight_tying = bool(model.config.tie_word_embeddings)
        print(f"added chat tokens {added_token_ids}: embeddings and LM head are trained in full with the adapter")

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return trainer, data


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
