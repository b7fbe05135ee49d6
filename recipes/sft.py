"""Supervised fine-tuning over TRL's SFTTrainer.

    llm-recipes sft --config configs/demo/sft.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/sft.py --config configs/demo/sft.yaml
    python recipes/sft.py --config configs/demo/sft.yaml

Reads Alpaca, ShareGPT, messages, prompt/completion or plain-text data (one file, or a weighted mixture),
trains fully, with LoRA/DoRA/QLoRA, or only the top layers, with the loss on assistant turns and completions
by default, and writes a model (or adapter) with its tokenizer, generation config and a manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import ModelConfig, SFTConfig

from llm_recipes.configs import (
    check_dataset_path,
    check_eval_data,
    check_model_path,
    check_quantized_training,
    parse_config,
    run_recipe,
)
from llm_recipes.data.config import dataset_specs
from llm_recipes.errors import UserError
from llm_recipes.runs.outputs import stage_main
from llm_recipes.sft.config import SFTScriptArguments

# Our defaults where TRL's differ: loss on what the assistant says, no tracker unless asked, private pushes.
SFT_DEFAULTS = dict(assistant_only_loss=True, report_to="none", hub_private_repo=True, logging_steps=10)


def parse_args(argv: Sequence[str] | None = None) -> tuple[SFTScriptArguments, SFTConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args, model_args = parse_config(
        (SFTScriptArguments, SFTConfig, ModelConfig), argv, **SFT_DEFAULTS
    )
    specs = dataset_specs(script_args)
    for spec in specs:
        check_dataset_path(spec.path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(model_args.model_name_or_path)
    check_quantized_training(model_args)
    check_eval_data(script_args, training_args)
    partial = script_args.trainable_top_layers is not None or script_args.trainable_embeddings
    if partial and model_args.use_peft:
        raise UserError(
            "trainable_top_layers/trainable_embeddings (partial fine-tuning) and use_peft exclude each other"
        )
    return script_args, training_args, model_args


def build_trainer(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Data, tokenizer, model and TRL's SFTTrainer, ready to train. Returns (trainer, data)."""
    from transformers import set_seed
    from trl import SFTTrainer, get_peft_config

    from llm_recipes.data.config import DatasetSpec
    from llm_recipes.data.loading import load_training_data
    from llm_recipes.data.mixture import check_batches
    from llm_recipes.models.chat import ensure_chat_template, read_chat_template, set_stop_tokens
    from llm_recipes.models.loading import freeze_for_partial_finetuning, load_causal_lm, load_tokenizer

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


@stage_main
def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
    from llm_recipes.hub import push_trained_output, take_over_trainer_push
    from llm_recipes.models.loading import count_parameters
    from llm_recipes.runs.manifest import StageRun
    from llm_recipes.runs.summary import format_summary
    from llm_recipes.sft.summary import check_loss_mask, sft_summary
    from llm_recipes.training.resume import resume_point

    configs = {"script": script_args, "training": training_args, "model": model_args}
    run = StageRun.begin("sft", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, data = build_trainer(script_args, training_args, model_args)
    run.inputs = {"model": model_args.model_name_or_path, "datasets": [path for path, _ in data.reports]}
    mask = check_loss_mask(trainer.train_dataset, rows_before=len(data.train))

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if data.eval is not None else {}

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = sft_summary(trainer, data, mask, train_result, eval_metrics, count_parameters(trainer.model), run.seconds)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
        trainer.accelerator.unwrap_model(trainer.model).generation_config.save_pretrained(training_args.output_dir)
        run.write(configs, summary)
        print(format_summary(f"SFT finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "sft")
    trainer.accelerator.wait_for_everyone()
    return summary


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


if __name__ == "__main__":
    run_recipe(main, parse_args)
