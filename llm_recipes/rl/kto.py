"""The KTO stage's trainer, built from its config: labelled rows, tokenizer, policy and reference wired into TRL's
`KTOTrainer` -- and the table a run ends with (`kto_summary`). Only the recipe's main imports this (TRL's trainer
is heavy); its config checks are the recipe's `parse_args`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trl import KTOTrainer

from llm_recipes.data.preferences import PairData
from llm_recipes.data.unpaired import load_unpaired_data
from llm_recipes.models.loading import count_parameters
from llm_recipes.rl.offline import policy_and_reference
from llm_recipes.training.resume import last_logged

if TYPE_CHECKING:
    from trl import KTOConfig, ModelConfig

    from llm_recipes.rl.config import KTOScriptArguments


def build_trainer(
    script_args: KTOScriptArguments, training_args: KTOConfig, model_args: ModelConfig
) -> tuple[KTOTrainer, PairData]:
    """Data, tokenizer, policy and TRL's KTOTrainer (which makes the reference itself, unless a chat template had
    to be added). Returns (trainer, data)."""
    with training_args.main_process_first(desc="loading KTO data"):
        data = load_unpaired_data(
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

    model, ref_model, tokenizer, peft_config = policy_and_reference(training_args, model_args, data.conversational)
    trainer = KTOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return trainer, data


def kto_summary(
    trainer: KTOTrainer, data: PairData, training_loss: float, eval_metrics: dict[str, float], seconds: float
) -> dict[str, Any]:
    """What a KTO run ends with (and records in its manifest): the rows by label, steps, losses, and the implied
    rewards (beta * log-ratio to the reference) of good and bad answers, with the KL baseline they are measured
    against."""
    trainable, total = count_parameters(trainer.model)
    history = trainer.state.log_history
    args = trainer.args
    return {
        "data format": data.reports[0][1].source_format,
        "conversational": data.conversational,
        "training rows": len(data.train),
        "desirable rows (label true)": sum(data.train["label"]),
        "undesirable rows (label false)": len(data.train) - sum(data.train["label"]),
        "unusable rows (dropped)": sum(sum(report.dropped.values()) for _, report in data.reports),
        # TRL drops the rows whose prompt alone fills max_length (no answer token would be left to learn from)
        "rows trained on (prompt within max_length)": len(trainer.train_dataset),
        "eval rows": len(data.eval) if data.eval is not None else 0,
        "beta": args.beta,
        "loss type": args.loss_type,
        "desirable weight": args.desirable_weight,
        "undesirable weight": args.undesirable_weight,
        "optimizer steps": trainer.state.global_step,
        "trainable parameters": trainable,
        "total parameters": total,
        "final train loss": last_logged(history, "loss"),
        "mean train loss": training_loss,
        "train reward margin": last_logged(history, "rewards/margins"),
        "eval loss": eval_metrics.get("eval_loss"),
        "eval reward (desirable)": eval_metrics.get("eval_rewards/chosen"),
        "eval reward (undesirable)": eval_metrics.get("eval_rewards/rejected"),
        "eval reward margin": eval_metrics.get("eval_rewards/margins"),
        "eval KL": eval_metrics.get("eval_kl"),
        "seconds": round(seconds, 1),
        **{f"rows kept from {source}": report.describe() for source, report in data.reports},
    }
