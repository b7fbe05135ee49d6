"""Knowledge distillation: a smaller student trained on a teacher's next-token distributions.

    llm-recipes distill --config configs/demo/distill.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/distill.py --config configs/demo/distill.yaml
    python recipes/distill.py --config configs/demo/distill.yaml --method gkd

The student is the teacher with every other decoder layer (or the layers you list), a preset size, or an existing
model with the teacher's tokenizer. `method: logits` (default) trains it with our DistillationTrainer on text
(packed like pretraining) or chats (assistant turns): `alpha * T^2 * KL + (1 - alpha) * CE`, forward/reverse KL or
JSD. `method: gkd` uses TRL's experimental on-policy GKDTrainer on chats. Writes a model that loads with
`from_pretrained`, its tokenizer, a manifest, and compression_report.json: student vs teacher on the evaluation
protocol (`protocol`: the evaluate stage's measures -- held-out perplexity, task scores, reward, latency, size;
without one: perplexity of the eval rows, size, CPU latency), also printed as a table. A rerun into the same
output_dir resumes from the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from transformers import TrainingArguments

from llm_recipes.compress.config import DistillArguments
from llm_recipes.compress.distill import load_gkd
from llm_recipes.compress.distill_build import build_trainer, write_teacher_comparison
from llm_recipes.compress.distill_checks import (
    check_labels_only,
    check_models,
    check_report_fields,
    check_student_source,
)
from llm_recipes.compress.report import comparison_summary, format_comparison
from llm_recipes.compress.summaries import DistillSummary
from llm_recipes.configs import check_dataset_path, check_eval_data, check_model_path, parse_config, run_recipe
from llm_recipes.data.config import dataset_specs
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.training.resume import resume_point

# Our defaults where transformers' differ: no tracker unless asked, frequent logs, two checkpoints kept.
DISTILL_DEFAULTS = dict(report_to="none", logging_steps=10, save_total_limit=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[DistillArguments, TrainingArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model's weights load."""
    script_args, training_args = parse_config((DistillArguments, TrainingArguments), argv, **DISTILL_DEFAULTS)
    for spec in dataset_specs(script_args):
        check_dataset_path(spec.path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(script_args.teacher_name_or_path, "teacher_name_or_path")
    check_report_fields(script_args)
    check_student_source(script_args)
    check_eval_data(script_args, training_args)
    if script_args.method == "gkd":
        load_gkd()  # a TRL without it fails now, in one line
    if script_args.compare_labels_only:
        check_labels_only(script_args)
    check_models(script_args)  # tokenizers and configs, no weights
    return script_args, training_args


@stage_main
def main(script_args: DistillArguments, training_args: TrainingArguments) -> dict:
    configs = {"script": script_args, "training": training_args}
    run = StageRun.begin("distill", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, teacher, inputs = build_trainer(script_args, training_args)
    run.inputs = {
        "teacher": script_args.teacher_name_or_path,
        "student": script_args.student_name_or_path,
        "datasets": [path for path, _ in inputs.data.reports],
    }

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    if script_args.method == "logits" and trainer.eval_dataset is not None:
        teacher.to(trainer.args.device)  # already there unless alpha is 0 (the trainer then never placed it)
        eval_metrics["teacher_perplexity"] = trainer.labelled_perplexity(teacher)

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = DistillSummary.of_run(script_args, trainer, inputs, train_result, eval_metrics, run.seconds).as_summary()
    if trainer.accelerator.is_main_process:
        tokenizer = trainer.processing_class
        tokenizer.save_pretrained(training_args.output_dir)
        trainer.accelerator.unwrap_model(trainer.model).generation_config.save_pretrained(training_args.output_dir)
        del teacher
        trainer.teacher_model = None  # the report loads both models afresh on the CPU
        reporting = script_args.compare_with_teacher and (script_args.protocol or inputs.eval_texts)
        if reporting:
            # compression_report.json; with compare_labels_only, the labels-only baseline trained and measured too
            comparison, between = write_teacher_comparison(
                script_args, training_args, tokenizer, inputs, summary["loss"], eval_metrics
            )
        measures = {"protocol measures": comparison_summary(comparison, between)} if reporting else {}
        run.write(configs, {**summary, **measures})
        print(format_summary(f"distillation finished: {training_args.output_dir}", summary))
        if reporting:
            print(format_comparison(comparison, "student (compressed) vs teacher (source)", between=between))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "distill")
    trainer.accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
