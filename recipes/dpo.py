"""Direct preference optimization (DPO) over TRL's DPOTrainer: a policy learns straight from preference pairs.

No reward model and no sampling: the loss raises the policy's likelihood of the chosen answer over the rejected
one, relative to a frozen reference.

    llm-recipes dpo --config configs/demo/dpo.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/dpo.py --config configs/demo/dpo.yaml
    python recipes/dpo.py --config configs/demo/dpo.yaml

Reads the same preference data as the reward stage (prompt/chosen/rejected, implicit prompt, ShareGPT, HH-RLHF),
trains the policy (usually the SFT model) fully or with LoRA/DoRA/QLoRA against a frozen reference -- a copy of
the starting policy, or the base model under the adapter with LoRA -- and writes a model (or adapter) with its
tokenizer, generation config and a manifest. `beta`, `loss_type` and the rest are TRL's DPOConfig fields.
"""

from __future__ import annotations

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import DPOConfig, ModelConfig

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
from llm_recipes.rl.config import DPOScriptArguments
from llm_recipes.rl.offline import build_dpo_trainer, count_parameters
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.training.resume import last_logged, resume_point

# Our defaults where TRL's differ: no tracker unless asked, private pushes.
DPO_DEFAULTS = dict(report_to="none", hub_private_repo=True, logging_steps=10)


def parse_args(argv: Sequence[str] | None = None) -> tuple[DPOScriptArguments, DPOConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args, model_args = parse_config(
        (DPOScriptArguments, DPOConfig, ModelConfig), argv, **DPO_DEFAULTS
    )
    if not script_args.dataset_path:
        raise UserError("dataset_path is required: the preference pairs to train on")
    check_dataset_path(script_args.dataset_path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(model_args.model_name_or_path)
    check_quantized_training(model_args)
    check_eval_data(script_args, training_args)
    return script_args, training_args, model_args


@stage_main
def main(script_args: DPOScriptArguments, training_args: DPOConfig, model_args: ModelConfig) -> dict:
    configs = {"script": script_args, "training": training_args, "model": model_args}
    run = StageRun.begin("dpo", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, data = build_dpo_trainer(script_args, training_args, model_args)
    run.inputs = {"model": model_args.model_name_or_path, "datasets": [path for path, _ in data.reports]}

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if data.eval is not None else {}

    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    trainable, total = count_parameters(trainer.model)
    history = trainer.state.log_history
    summary = {
        "data format": data.reports[0][1].source_format,
        "conversational": data.conversational,
        "training pairs": len(data.train),
        "unusable pairs (dropped)": sum(sum(report.dropped.values()) for _, report in data.reports),
        "eval pairs": len(data.eval) if data.eval is not None else 0,
        "beta": training_args.beta,
        "loss type": ",".join(training_args.loss_type),
        "optimizer steps": trainer.state.global_step,
        "trainable parameters": trainable,
        "total parameters": total,
        "final train loss": last_logged(history, "loss"),
        "mean train loss": train_result.training_loss,
        "train reward accuracy": last_logged(history, "rewards/accuracies"),
        "train reward margin": last_logged(history, "rewards/margins"),
        "eval loss": eval_metrics.get("eval_loss"),
        "eval reward accuracy": eval_metrics.get("eval_rewards/accuracies"),
        "eval reward margin": eval_metrics.get("eval_rewards/margins"),
        "seconds": round(run.seconds, 1),
        **{f"rows kept from {source}": report.describe() for source, report in data.reports},
    }
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
        trainer.accelerator.unwrap_model(trainer.model).generation_config.save_pretrained(training_args.output_dir)
        run.write(configs, summary)
        print(format_summary(f"DPO finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "dpo")
    trainer.accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
