"""Kahneman-Tversky optimization (KTO) over TRL's KTOTrainer: a policy learns from thumbs up / thumbs down.

One answer per row, labelled good or bad, and no pairs needed: the loss raises the policy's likelihood of good
answers and lowers that of bad ones, each relative to a frozen reference and measured against a KL baseline.

    llm-recipes kto --config configs/demo/kto.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/kto.py --config configs/demo/kto.yaml
    python recipes/kto.py --config configs/demo/kto.yaml

Reads unpaired rows (prompt/completion/label, or messages/label as LLaMA-Factory's kto_en_demo.json) or preference
pairs in any shape the reward stage reads, split into a true and a false row each; data with only one label is
refused. Trains the policy (usually the SFT model) fully or with LoRA/DoRA/QLoRA against a frozen reference -- a
copy of the starting policy, or the base model under the adapter with LoRA -- and writes a model (or adapter) with
its tokenizer, generation config and a manifest. `beta`, `desirable_weight`, `undesirable_weight` and `loss_type`
are TRL's KTOConfig fields.
"""

from __future__ import annotations

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import KTOConfig, ModelConfig

from llm_recipes.configs import (
    check_dataset_path,
    check_eval_data,
    check_model_path,
    check_quantized_training,
    parse_config,
    run_recipe,
)
from llm_recipes.errors import UserError
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.rl.config import KTOScriptArguments
from llm_recipes.rl.kto import build_trainer, kto_summary
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.training.resume import resume_point

# Our defaults where TRL's differ: no tracker unless asked, private pushes.
KTO_DEFAULTS = dict(report_to="none", hub_private_repo=True, logging_steps=10)


def parse_args(argv: Sequence[str] | None = None) -> tuple[KTOScriptArguments, KTOConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args, model_args = parse_config(
        (KTOScriptArguments, KTOConfig, ModelConfig), argv, **KTO_DEFAULTS
    )
    if not script_args.dataset_path:
        raise UserError("dataset_path is required: the labelled answers (or preference pairs) to train on")
    check_dataset_path(script_args.dataset_path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(model_args.model_name_or_path)
    check_quantized_training(model_args)
    check_eval_data(script_args, training_args)
    if training_args.loss_type == "kto" and training_args.per_device_train_batch_size < 2:
        # the KL baseline pairs each prompt with another row's answer from the same batch
        raise UserError("per_device_train_batch_size: KTO's KL estimate needs at least 2 rows per batch")
    if training_args.loss_type == "kto" and training_args.train_sampling_strategy != "sequential":
        raise UserError("train_sampling_strategy: KTO needs 'sequential' (the rows are shuffled once when loaded)")
    return script_args, training_args, model_args


@stage_main
def main(script_args: KTOScriptArguments, training_args: KTOConfig, model_args: ModelConfig) -> dict:
    configs = {"script": script_args, "training": training_args, "model": model_args}
    run = StageRun.begin("kto", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, data = build_trainer(script_args, training_args, model_args)
    run.inputs = {"model": model_args.model_name_or_path, "datasets": [path for path, _ in data.reports]}

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if data.eval is not None else {}

    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    summary = kto_summary(trainer, data, train_result.training_loss, eval_metrics, run.seconds)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
        trainer.accelerator.unwrap_model(trainer.model).generation_config.save_pretrained(training_args.output_dir)
        run.write(configs, summary)
        print(format_summary(f"KTO finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "kto")
    trainer.accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
