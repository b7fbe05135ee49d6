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
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.models.loading import count_parameters
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.sft.build import build_trainer
from llm_recipes.sft.config import SFTScriptArguments
from llm_recipes.sft.summary import check_loss_mask, sft_summary
from llm_recipes.training.resume import resume_point

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


@stage_main
def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
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


if __name__ == "__main__":
    run_recipe(main, parse_args)
