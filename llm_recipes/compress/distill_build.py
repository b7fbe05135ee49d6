"""Building the distill stage: teacher and student, their data, the trainer (ours for `method: logits`, TRL's GKD for
`method: gkd`), the comparison with the teacher written as compression_report.json, and the labels-only baseline."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, TrainingArguments, set_seed

from llm_recipes.compress.config import DistillArguments
from llm_recipes.compress.distill import (
    PaddedRowsCollator,
    check_same_vocab_size,
    eval_samples,
    gkd_beta,
    load_gkd,
    prepare_rows,
    student_from_preset,
    student_from_teacher,
)
from llm_recipes.compress.distill_checks import load_tokenizer
from llm_recipes.compress.distill_trainer import DistillationTrainer
from llm_recipes.compress.report import COMPRESSION_REPORT, compare_models
from llm_recipes.data.config import DatasetSpec, dataset_specs
from llm_recipes.data.loading import load_training_data
from llm_recipes.errors import UserError
from llm_recipes.evaluation.protocol import Protocol, read_protocol
from llm_recipes.models.loading import torch_dtype
from llm_recipes.pretrain.build import parse_overrides
from llm_recipes.runs.manifest import write_json_atomically
from llm_recipes.training.resume import last_logged

# compare_labels_only: the same student trained without the teacher, inside output_dir
LABELS_ONLY = "labels-only"


@dataclass
class DistillInputs:
    """What build_trainer made besides the trainer: where the student came from, the data and its eval samples."""

    student: str  # how the student was made: "model <path>", "preset <name>" or "teacher layers [...]"
    max_length: int
    data: Any  # llm_recipes.data.loading.TrainingData
    eval_texts: list[str] = field(default_factory=list)
    eval_prompts: list[Any] = field(default_factory=list)
    training_rows: int | None = None  # rows after packing/encoding (logits); None: the data's train rows (gkd)

    @property
    def shape(self) -> str:
        return self.data.shape


def load_models(script_args: DistillArguments) -> tuple[Any, Any, Any, str]:
    """(teacher, student, tokenizer, how the student was made). The teacher is frozen, in eval mode."""
    tokenizer = load_tokenizer(script_args.teacher_name_or_path, script_args.trust_remote_code)
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
        overrides = parse_overrides(script_args.student_config_overrides, "student_config_overrides")
        student = student_from_preset(script_args.student_preset, tokenizer, teacher.config, overrides)
        student.generation_config = copy.deepcopy(teacher.generation_config)  # the teacher's stop tokens
        origin = f"preset {script_args.student_preset}"
    else:
        student = student_from_teacher(teacher, script_args.student_layers).float()
        layers = script_args.student_layers or list(range(0, teacher.config.num_hidden_layers, 2))
        origin = f"teacher layers {layers}"
    return teacher, student, tokenizer, origin


def load_data(
    script_args: DistillArguments, training_args: TrainingArguments, tokenizer: Any, max_length: int
) -> tuple[Any, Any]:
    """The standard-column data (TrainingData) and its training rows (DistillationRows; None for gkd)."""
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


def build_trainer(script_args: DistillArguments, training_args: TrainingArguments) -> tuple[Any, Any, DistillInputs]:
    """Teacher, student, data and the trainer, ready to train. Returns (trainer, teacher, what else was built)."""
    set_seed(training_args.seed)  # the student's random initialisation (preset) is reproducible
    teacher, student, tokenizer, origin = load_models(script_args)
    check_same_vocab_size(teacher.config, student.config)
    max_length = capped_length(script_args.max_length, teacher.config, student.config)
    data, rows = load_data(script_args, training_args, tokenizer, max_length)
    inputs = DistillInputs(student=origin, max_length=max_length, data=data)
    if script_args.method == "gkd":
        trainer = gkd_trainer(script_args, training_args, teacher, student, tokenizer, data, max_length)
        inputs.eval_texts, inputs.eval_prompts = eval_samples(tokenizer, data.eval, script_args.report_eval_texts)
        return trainer, teacher, inputs
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
    inputs.eval_texts, inputs.eval_prompts, inputs.training_rows = rows.eval_texts, rows.eval_prompts, len(rows.train)
    return trainer, teacher, inputs


def capped_length(max_length: int, *configs: Any) -> int:
    """max_length, or less where a model's position embeddings end sooner."""
    limits = [getattr(config, "max_position_embeddings", None) for config in configs]
    return min([max_length, *(limit for limit in limits if isinstance(limit, int) and limit > 0)])


def gkd_trainer(
    script_args: DistillArguments,
    training_args: TrainingArguments,
    teacher: Any,
    student: Any,
    tokenizer: Any,
    data: Any,
    max_length: int,
) -> Any:
    """TRL's experimental GKDTrainer, its config built from our TrainingArguments and distill fields."""
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


def compare_with_teacher(
    script_args: DistillArguments, output_dir: str, tokenizer: Any, eval_texts: list[str], max_length: int
) -> dict[str, Any]:
    """The saved student vs the teacher on the protocol, both loaded afresh on its device; without a protocol, on
    the eval rows' texts (windows of the length the student trained on), size, CPU latency."""
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


def write_teacher_comparison(
    script_args: DistillArguments,
    training_args: TrainingArguments,
    tokenizer: Any,
    inputs: DistillInputs,
    loss: str,
    eval_metrics: dict[str, Any],
) -> tuple[dict[str, Any], tuple[str, dict[str, Any]] | None]:
    """Compare the saved student with the teacher and write compression_report.json; with compare_labels_only, then
    train and measure the labels-only baseline and write the report again with it. Returns (the comparison, the
    baseline as (label, its measures) or None): what the manifest and the printed table show."""
    output_dir = training_args.output_dir
    comparison = compare_with_teacher(script_args, output_dir, tokenizer, inputs.eval_texts, inputs.max_length)
    report: dict[str, Any] = {"stage": "distill", "method": loss, "comparison": comparison}
    if eval_metrics.get("teacher_perplexity") is not None:
        # the trainer's own figure on its eval split (labelled tokens only), kept apart from the protocol's
        report["trainer_eval"] = {
            "teacher perplexity (labelled tokens)": eval_metrics["teacher_perplexity"],
            "student perplexity (labelled tokens)": eval_metrics.get("eval_perplexity"),
        }
    write_json_atomically(Path(output_dir) / COMPRESSION_REPORT, report)  # kept should the baseline fail
    if not script_args.compare_labels_only:
        return comparison, None
    report["labels_only"], report["labels_only_training"] = train_labels_only(script_args, training_args)
    write_json_atomically(Path(output_dir) / COMPRESSION_REPORT, report)
    return comparison, ("labels only, same budget", report["labels_only"])


def train_labels_only(script_args: DistillArguments, training_args: TrainingArguments) -> tuple[dict, dict]:
    """The baseline at equal budget: the same student from the same start, data, steps, rate and seed, trained on the
    labels alone (alpha 0; the teacher never runs), saved in output_dir/labels-only and measured on the protocol.
    Returns (its protocol measures, its training figures). Runs on the main process (the report's)."""
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
