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
from pathlib import Path
from typing import Any

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from transformers import TrainingArguments

from llm_recipes.compress.config import DistillArguments
from llm_recipes.configs import (
    check_dataset_path,
    check_eval_data,
    check_model_path,
    is_planned,
    parse_config,
    run_recipe,
)
from llm_recipes.configs.code import imports_code
from llm_recipes.data.config import dataset_specs
from llm_recipes.errors import UserError
from llm_recipes.runs.outputs import stage_main

# Our defaults where transformers' differ: no tracker unless asked, frequent logs, two checkpoints kept.
DISTILL_DEFAULTS = dict(report_to="none", logging_steps=10, save_total_limit=2)
COMPRESSION_REPORT = "compression_report.json"
# compare_labels_only: the same student trained without the teacher, inside output_dir
LABELS_ONLY = "labels-only"


def parse_args(argv: Sequence[str] | None = None) -> tuple[DistillArguments, TrainingArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model's weights load."""
    from llm_recipes.compress.distill import check_same_tokenizer, check_same_vocab_size, check_student_layers, load_gkd

    script_args, training_args = parse_config((DistillArguments, TrainingArguments), argv, **DISTILL_DEFAULTS)
    for spec in dataset_specs(script_args):
        check_dataset_path(spec.path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(script_args.teacher_name_or_path, "teacher_name_or_path")
    _check_report_fields(script_args)
    _check_student_source(script_args)
    check_eval_data(script_args, training_args)
    if script_args.method == "gkd":
        load_gkd()  # a TRL without it fails now, in one line
    if script_args.compare_labels_only:
        _check_labels_only(script_args)

    # cheap model-level checks: tokenizers and configs, no weights (unless an earlier pipeline stage makes them, or
    # reading them would run a model folder's code in a dry run)
    if is_planned(script_args.teacher_name_or_path) or is_planned(script_args.student_name_or_path):
        return script_args, training_args
    if script_args.trust_remote_code and not imports_code():
        return script_args, training_args
    teacher_tokenizer = _load_tokenizer(script_args.teacher_name_or_path, script_args.trust_remote_code)
    teacher_config = _load_config(script_args.teacher_name_or_path, script_args.trust_remote_code)
    if script_args.student_name_or_path:
        student_tokenizer = _load_tokenizer(script_args.student_name_or_path, script_args.trust_remote_code)
        check_same_tokenizer(teacher_tokenizer, student_tokenizer)
        check_same_vocab_size(
            teacher_config, _load_config(script_args.student_name_or_path, script_args.trust_remote_code)
        )
    if script_args.student_layers is not None:
        check_student_layers(script_args.student_layers, teacher_config.num_hidden_layers)
    return script_args, training_args


def _check_report_fields(script_args: DistillArguments) -> None:
    from llm_recipes.evaluation.protocol import check_protocol_paths, read_protocol

    if script_args.report_reward_model:
        raise UserError(
            "report_reward_model: replaced by protocol (a protocol YAML whose reward_model scores both models' "
            "answers, e.g. configs/demo/protocol.yaml)"
        )
    if script_args.report_max_new_tokens != 64:
        raise UserError("report_max_new_tokens: replaced by protocol (its max_new_tokens)")
    if script_args.protocol:
        check_protocol_paths(read_protocol(script_args.protocol))


def _check_labels_only(script_args: DistillArguments) -> None:
    if script_args.method != "logits":
        raise UserError("compare_labels_only: the baseline is trained by the logits method's trainer (method: logits)")
    if not script_args.protocol or not script_args.compare_with_teacher:
        raise UserError(
            "compare_labels_only: set protocol (and compare_with_teacher), the measures both students share"
        )
    if script_args.alpha == 0:
        raise UserError("compare_labels_only: alpha is 0, so this student is already trained on the labels alone")


def _check_student_source(script_args: DistillArguments) -> None:
    from llm_recipes.models.loading import DECODER_PRESETS
    from llm_recipes.pretrain.build import parse_overrides

    sources = [
        name for name in ("student_layers", "student_preset", "student_name_or_path") if getattr(script_args, name)
    ]
    if len(sources) > 1:
        raise UserError(f"set one student source, not {' and '.join(sources)} (none: every other teacher layer)")
    if script_args.student_preset and script_args.student_preset not in DECODER_PRESETS:
        raise UserError(
            f"student_preset: unknown '{script_args.student_preset}'; choose from {', '.join(DECODER_PRESETS)}"
        )
    if script_args.student_config_overrides and not script_args.student_preset:
        raise UserError("student_config_overrides applies to student_preset only")
    parse_overrides(script_args.student_config_overrides)
    if script_args.student_name_or_path:
        check_model_path(script_args.student_name_or_path, "student_name_or_path")


def _load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load a tokenizer from '{path}': {first_line}") from None


def _load_config(path: str, trust_remote_code: bool):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_models(script_args: DistillArguments) -> tuple[Any, Any, Any, str]:
    """(teacher, student, tokenizer, how the student was made). The teacher is frozen, in eval mode."""
    import copy

    from transformers import AutoModelForCausalLM

    from llm_recipes.compress.distill import student_from_preset, student_from_teacher
    from llm_recipes.models.loading import torch_dtype
    from llm_recipes.pretrain.build import parse_overrides

    tokenizer = _load_tokenizer(script_args.teacher_name_or_path, script_args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out, so which token it is does not matter
    load = dict(trust_remote_code=script_args.trust_remote_code, use_safetensors=True)
    teacher = AutoModelForCausalLM.from_pretrained(
        script_args.teacher_name_or_path, dtype=torch_dtype(script_args.teacher_dtype), **load
    )
    teacher.requires_grad_(False)
    teacher.eval()
    if script_args.student_name_or_path:
        student = AutoModelForCausalLM.from_pretrained(script_args.student_name_or_path, dtype="float32", **load)
        origin = f"model {script_args.student_name_or_path}"
    elif script_args.student_preset:
        overrides = parse_overrides(script_args.student_config_overrides)
        student = student_from_preset(script_args.student_preset, tokenizer, teacher.config, overrides)
        student.generation_config = copy.deepcopy(teacher.generation_config)  # the teacher's stop tokens
        origin = f"preset {script_args.student_preset}"
    else:
        student = student_from_teacher(teacher, script_args.student_layers).float()
        layers = script_args.student_layers or list(range(0, teacher.config.num_hidden_layers, 2))
        origin = f"teacher layers {layers}"
    return teacher, student, tokenizer, origin


def load_data(script_args: DistillArguments, training_args: TrainingArguments, tokenizer, max_length: int):
    """The standard-column data (TrainingData) and its training rows (DistillationRows)."""
    from llm_recipes.compress.distill import prepare_rows
    from llm_recipes.data.config import DatasetSpec
    from llm_recipes.data.loading import load_training_data

    eval_spec = DatasetSpec(path=script_args.eval_dataset_path) if script_args.eval_dataset_path else None
    with training_args.main_process_first(desc="preparing distillation data"):
        data = load_training_data(
            dataset_specs(script_args),
            eval_spec=eval_spec,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=training_args.seed,
            num_proc=script_args.dataset_num_proc,
        )
        if data.shape != "text" and not tokenizer.chat_template:
            raise UserError(
                f"{data.shape} data needs a chat template, and the teacher's tokenizer has none: distill from a "
                "chat model (the SFT stage's output), or use text data"
            )
        if script_args.method == "gkd":
            if data.shape != "messages":
                raise UserError(f"method: gkd needs conversations (messages, alpaca, sharegpt), not {data.shape} data")
            return data, None
        rows = prepare_rows(
            data.train,
            data.eval,
            tokenizer,
            max_length,
            assistant_only=script_args.assistant_only_loss,
            num_proc=script_args.dataset_num_proc,
            max_eval_texts=script_args.report_eval_texts,
        )
    return data, rows


def build_trainer(script_args: DistillArguments, training_args: TrainingArguments):
    """Teacher, student, data and the trainer, ready to train. Returns (trainer, data, facts for the summary)."""
    from transformers import set_seed

    from llm_recipes.compress.distill import PaddedRowsCollator, check_same_vocab_size, eval_samples
    from llm_recipes.compress.distill_trainer import DistillationTrainer

    set_seed(training_args.seed)  # the student's random initialisation (preset) is reproducible
    teacher, student, tokenizer, origin = load_models(script_args)
    check_same_vocab_size(teacher.config, student.config)
    max_length = _capped_length(script_args.max_length, teacher.config, student.config)
    data, rows = load_data(script_args, training_args, tokenizer, max_length)
    facts = {"student": origin, "max_length": max_length, "data": data, "shape": data.shape}
    if script_args.method == "gkd":
        trainer = _gkd_trainer(script_args, training_args, teacher, student, tokenizer, data, max_length)
        facts["eval_texts"], facts["eval_prompts"] = eval_samples(tokenizer, data.eval, script_args.report_eval_texts)
        return trainer, teacher, facts
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args,
        train_dataset=rows.train,
        eval_dataset=rows.eval,
        processing_class=tokenizer,
        data_collator=PaddedRowsCollator(pad_token_id=tokenizer.pad_token_id),
        alpha=script_args.alpha,
        temperature=script_args.temperature,
        divergence=script_args.divergence,
        jsd_beta=script_args.jsd_beta,
    )
    facts.update(eval_texts=rows.eval_texts, eval_prompts=rows.eval_prompts, training_rows=len(rows.train))
    return trainer, teacher, facts


def _capped_length(max_length: int, *configs: Any) -> int:
    limits = [getattr(config, "max_position_embeddings", None) for config in configs]
    return min([max_length, *(limit for limit in limits if isinstance(limit, int) and limit > 0)])


def _gkd_trainer(script_args, training_args, teacher, student, tokenizer, data, max_length):
    """TRL's experimental GKDTrainer, its config built from our TrainingArguments and distill fields."""
    import dataclasses

    from llm_recipes.compress.distill import gkd_beta, load_gkd

    gkd_config_class, gkd_trainer_class = load_gkd()
    values = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    gkd_args = gkd_config_class(
        **values,
        max_length=max_length,
        temperature=script_args.temperature,
        lmbda=script_args.gkd_lmbda,
        beta=gkd_beta(script_args.divergence, script_args.jsd_beta),
        max_new_tokens=script_args.gkd_max_new_tokens,
        seq_kd=script_args.gkd_seq_kd,
    )
    return gkd_trainer_class(
        model=student,
        teacher_model=teacher,
        args=gkd_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
    )


def compression_report(
    script_args: DistillArguments, output_dir: str, tokenizer, eval_texts: list[str], max_length: int
) -> dict:
    """The saved student vs the teacher on the protocol, both loaded afresh on its device; without a protocol, on
    the eval rows' texts (windows of the length the student trained on), size, CPU latency."""
    from llm_recipes.compress.report import compare_models
    from llm_recipes.evaluation.protocol import read_protocol

    return compare_models(
        script_args.teacher_name_or_path,
        output_dir,
        tokenizer,
        eval_texts,
        max_new_tokens=script_args.latency_new_tokens,
        repeats=script_args.latency_repeats,
        context_length=max_length,
        protocol=read_protocol(script_args.protocol) if script_args.protocol else None,
    )


@stage_main
def main(script_args: DistillArguments, training_args: TrainingArguments) -> dict:
    from llm_recipes.compress.report import comparison_summary, format_comparison
    from llm_recipes.hub import push_trained_output, take_over_trainer_push
    from llm_recipes.runs.manifest import StageRun, write_json_atomically
    from llm_recipes.runs.summary import format_summary
    from llm_recipes.training.resume import resume_point

    configs = {"script": script_args, "training": training_args}
    run = StageRun.begin("distill", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, teacher, facts = build_trainer(script_args, training_args)
    run.inputs = {
        "teacher": script_args.teacher_name_or_path,
        "student": script_args.student_name_or_path,
        "datasets": [path for path, _ in facts["data"].reports],
    }

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    if script_args.method == "logits" and trainer.eval_dataset is not None:
        teacher.to(trainer.args.device)  # already there unless alpha is 0 (the trainer then never placed it)
        eval_metrics["teacher_perplexity"] = trainer.labelled_perplexity(teacher)

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = _summary(script_args, trainer, facts, train_result, eval_metrics, run)
    if trainer.accelerator.is_main_process:
        tokenizer = trainer.processing_class
        tokenizer.save_pretrained(training_args.output_dir)
        trainer.accelerator.unwrap_model(trainer.model).generation_config.save_pretrained(training_args.output_dir)
        del teacher
        trainer.teacher_model = None  # the report loads both models afresh on the CPU
        reporting = script_args.compare_with_teacher and (script_args.protocol or facts["eval_texts"])
        if reporting:
            comparison = compression_report(
                script_args, training_args.output_dir, tokenizer, facts["eval_texts"], facts["max_length"]
            )
            report = {"stage": "distill", "method": summary["loss"], "comparison": comparison}
            if eval_metrics.get("teacher_perplexity") is not None:
                # the trainer's own figure on its eval split (labelled tokens only), kept apart from the protocol's
                report["trainer_eval"] = {
                    "teacher perplexity (labelled tokens)": eval_metrics["teacher_perplexity"],
                    "student perplexity (labelled tokens)": eval_metrics.get("eval_perplexity"),
                }
            write_json_atomically(Path(training_args.output_dir) / COMPRESSION_REPORT, report)
        between = None
        if reporting and script_args.compare_labels_only:
            report["labels_only"], report["labels_only_training"] = train_labels_only(script_args, training_args)
            between = ("labels only, same budget", report["labels_only"])
            write_json_atomically(Path(training_args.output_dir) / COMPRESSION_REPORT, report)
        measures = {"protocol measures": comparison_summary(comparison, between)} if reporting else {}
        run.write(configs, {**summary, **measures})
        print(format_summary(f"distillation finished: {training_args.output_dir}", summary))
        if reporting:
            print(format_comparison(comparison, "student (compressed) vs teacher (source)", between=between))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "distill")
    trainer.accelerator.wait_for_everyone()
    return summary


def train_labels_only(script_args: DistillArguments, training_args: TrainingArguments) -> tuple[dict, dict]:
    """The baseline at equal budget: the same student from the same start, data, steps, rate and seed, trained on the
    labels alone (alpha 0; the teacher never runs), saved in output_dir/labels-only and measured on the protocol.
    Returns (its protocol measures, its training figures). Runs on the main process (the report's)."""
    import copy
    import dataclasses

    from transformers import AutoModelForCausalLM

    from llm_recipes.evaluation.protocol import Protocol, read_protocol
    from llm_recipes.training.resume import last_logged

    folder = Path(training_args.output_dir) / LABELS_ONLY
    baseline_args = dataclasses.replace(script_args, alpha=0.0, compare_labels_only=False)
    baseline_training = copy.deepcopy(training_args)
    baseline_training.output_dir, baseline_training.save_strategy = str(folder), "no"
    trainer, teacher, _ = build_trainer(baseline_args, baseline_training)
    del teacher
    result = trainer.train()
    trainer.save_model(str(folder))
    trainer.processing_class.save_pretrained(folder)
    student = trainer.accelerator.unwrap_model(trainer.model)
    student.generation_config.save_pretrained(folder)
    training = {
        "loss": "CE only (alpha 0), same student start, data, steps, rate and seed",
        "optimizer steps": trainer.state.global_step,
        "final train loss": last_logged(trainer.state.log_history, "loss"),
        "mean train loss": result.training_loss,
    }
    protocol = Protocol(read_protocol(script_args.protocol)).load()
    model = AutoModelForCausalLM.from_pretrained(folder).to(protocol.device()).eval()
    try:
        measured = protocol.measure(model, trainer.processing_class, model_dir=folder, name=str(folder)).as_dict()
    finally:
        protocol.close()
    return measured, training


def _summary(script_args, trainer, facts, train_result, eval_metrics, run) -> dict:
    from llm_recipes.models.loading import count_parameters
    from llm_recipes.training.resume import last_logged

    state = trainer.state
    _, parameters = count_parameters(trainer.accelerator.unwrap_model(trainer.model))
    summary = {
        "method": script_args.method,
        "student": facts["student"],
        "student parameters": parameters,
        "data shape": facts["shape"],
        "max length": facts["max_length"],
        "loss": (
            f"{script_args.alpha} * T^2 * {script_args.divergence} + {1 - script_args.alpha:g} * CE, "
            f"T={script_args.temperature}"
            if script_args.method == "logits"
            else f"GKD, lmbda={script_args.gkd_lmbda}, {script_args.divergence}"
        ),
        "training rows": facts.get("training_rows", len(facts["data"].train)),
        "optimizer steps": state.global_step,
        "final train loss": last_logged(state.log_history, "loss"),
        "mean train loss": train_result.training_loss,
        "final kd loss": last_logged(state.log_history, "kd_loss"),
        "final ce loss": last_logged(state.log_history, "ce_loss"),
        "eval loss": eval_metrics.get("eval_loss"),
        "eval ce loss": eval_metrics.get("eval_ce_loss"),
        "eval perplexity (labelled tokens)": eval_metrics.get("eval_perplexity"),
        "teacher eval perplexity (labelled tokens)": eval_metrics.get("teacher_perplexity"),
        "seconds": round(run.seconds, 1),
    }
    for source, report in facts["data"].reports:
        summary[f"rows kept from {source}"] = report.describe()
    return {key: value for key, value in summary.items() if value is not None}


if __name__ == "__main__":
    run_recipe(main, parse_args)
