"""Prune a model: magnitude, Wanda or N:M sparsity, or structured head/channel removal, with an optional recovery.

    llm-recipes prune --config configs/demo/prune.yaml [field overrides]
    python recipes/prune.py --config configs/demo/prune.yaml --method structured --heads_to_prune 2
    accelerate launch recipes/prune.py --config configs/demo/prune.yaml   # the recovery fine-tune data-parallel

Reads a full-precision model folder (or a LoRA/DoRA adapter, merged into its full-precision base first) and prunes
the linear layers of its transformer blocks: unstructured (smallest |W| per layer, or Wanda's |W| x input norm per
output row from a few calibration windows) to a target sparsity, N:M semi-structured (2:4), or structured --
whole attention heads (GQA-aware) and MLP channels removed, the config rewritten, so the model really shrinks.
Pruned weights are stored as zeros, so the folder loads with `AutoModelForCausalLM.from_pretrained` anywhere.
Optionally the pruned model is fine-tuned briefly to recover (the pretrain stage's trainer on your text; pruned
weights are kept at zero). The report (printed, and compression_report.json) gives the achieved sparsity per layer
and compares the source, the pruned model and the recovered one on the evaluation protocol (`protocol`: the
evaluate stage's measures -- held-out perplexity, task scores, reward, latency, size; without one, the report fields
make a small protocol of eval_dataset_path).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from transformers import TrainingArguments

from llm_recipes.compress.config import PruneArguments
from llm_recipes.configs import check_dataset_path, check_model_path, is_planned, looks_local, parse_config, run_recipe
from llm_recipes.configs.code import imports_code
from llm_recipes.errors import UserError
from llm_recipes.runs.outputs import stage_main

COMPRESSION_REPORT = "compression_report.json"
# the pruned model before recovery, inside output_dir while the recovery fine-tune reads it
UNRECOVERED = ".pruned-before-recovery"
# Our defaults where transformers' differ (they apply to the recovery fine-tune): no tracker unless asked, frequent
# logs, two checkpoints kept, a short run.
PRUNE_DEFAULTS = dict(
    output_dir="outputs/pruned", report_to="none", logging_steps=10, save_total_limit=2, max_steps=100
)
PRUNE_REMEDY = (
    "merge the adapter into the full-precision base first (base_model_name_or_path: the unquantized model), "
    "then prune the merged model"
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[PruneArguments, TrainingArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    from llm_recipes.compress.prune import parse_pattern
    from llm_recipes.compress.quantize import check_report_fields
    from llm_recipes.export.folder import inspect_source

    script_args, training_args = parse_config((PruneArguments, TrainingArguments), argv, **PRUNE_DEFAULTS)
    check_model_path(script_args.model_name_or_path)
    if not looks_local(script_args.model_name_or_path):
        raise UserError(f"model_name_or_path: {script_args.model_name_or_path} must be a local model or adapter folder")
    output = Path(training_args.output_dir).expanduser().resolve()
    if output == Path(script_args.model_name_or_path).expanduser().resolve():
        raise UserError("output_dir must differ from model_name_or_path: the pruned model is a new folder")
    planned = is_planned(script_args.model_name_or_path)  # a pipeline's earlier stage makes it: nothing to look at
    source = None if planned else inspect_source(script_args.model_name_or_path, script_args.base_model_name_or_path)
    if source is not None:
        _check_source(script_args, source)

    for path, what in (
        (script_args.calibration_dataset_path, "calibration"),
        (script_args.recovery_dataset_path, "recovery dataset"),
    ):
        if path:
            check_dataset_path(path, what)
    for spec in recovery_specs(script_args):
        check_dataset_path(spec.path, "recovery dataset")
    if script_args.method == "structured":
        if source is not None:
            _check_structured(script_args, source)
    else:
        parse_pattern(script_args.sparsity_pattern)
        if script_args.heads_to_prune or script_args.mlp_channels_to_prune:
            raise UserError("heads_to_prune and mlp_channels_to_prune are for method: structured")
        if script_args.method == "wanda" and not script_args.calibration_dataset_path:
            raise UserError("method wanda weighs weights by input activations: set calibration_dataset_path")
    check_report_fields(script_args)
    if training_args.eval_strategy != "no":
        raise UserError("eval_strategy: the recovery fine-tune is evaluated by the report (its protocol)")
    return script_args, training_args


def recovery_specs(script_args: PruneArguments) -> list:
    """The recovery_datasets mixture, checked as SFT checks its `datasets` (none without one)."""
    from llm_recipes.data.config import dataset_specs
    from llm_recipes.sft.config import SFTScriptArguments

    if not script_args.recovery_datasets:
        return []
    if script_args.recovery_dataset_path:
        raise UserError("set recovery_dataset_path (text) or recovery_datasets (chats), not both")
    try:
        return dataset_specs(SFTScriptArguments(datasets=script_args.recovery_datasets))
    except UserError as error:
        raise UserError(f"recovery_{error}") from None


def _check_source(script_args: PruneArguments, source) -> None:
    from llm_recipes.export.folder import merge_refusal, quantization_of

    if source.kind == "quantized":
        raise UserError(
            f"{script_args.model_name_or_path} is quantized ({source.quantization}); prune the full-precision model"
        )
    if source.kind == "adapter":
        check_model_path(source.base_model, "base_model_name_or_path")
        if source.config is not None and quantization_of(source.config):
            raise merge_refusal(source.base_model, quantization_of(source.config), PRUNE_REMEDY)


def _check_structured(script_args: PruneArguments, source) -> None:
    from transformers import AutoConfig

    from llm_recipes.compress.prune import check_structured_plan

    if script_args.sparsity_pattern != "unstructured" or script_args.sparsity_group != "auto":
        raise UserError(
            "sparsity_pattern and sparsity_group are for magnitude and wanda; structured removes whole heads and "
            "channels"
        )
    path = source.base_model if source.kind == "adapter" else source.path
    if script_args.trust_remote_code and not imports_code():
        return  # reading the config would run the folder's code: a dry run checks the rest only
    config = AutoConfig.from_pretrained(path, trust_remote_code=script_args.trust_remote_code)
    check_structured_plan(config, structured_plan(script_args))


def structured_plan(script_args: PruneArguments):
    from llm_recipes.compress.prune import StructuredPlan

    return StructuredPlan(
        heads_to_prune=script_args.heads_to_prune,
        prune_kv_heads=script_args.prune_kv_heads,
        mlp_channels_to_prune=script_args.mlp_channels_to_prune,
    )


@stage_main
def main(script_args: PruneArguments, training_args: TrainingArguments) -> dict:
    from accelerate import PartialState

    from llm_recipes.compress.prune import format_layer_sparsity, layer_sparsity
    from llm_recipes.compress.quantize import format_extras
    from llm_recipes.compress.report import comparison_summary, format_comparison, protocol_from_fields
    from llm_recipes.evaluation.footprint import weight_sparsity
    from llm_recipes.evaluation.protocol import Protocol, protocol_header
    from llm_recipes.export.folder import inspect_source, load_tokenizer, parse_shard_size, save_model_folder
    from llm_recipes.hub import push_trained_output, take_over_trainer_push
    from llm_recipes.runs.manifest import StageRun, write_json_atomically
    from llm_recipes.runs.summary import format_summary

    state = PartialState()
    output = Path(training_args.output_dir).expanduser()
    configs = {"script": script_args, "training": training_args}
    run = StageRun.begin("prune", output, configs, training=True)
    state.wait_for_everyone()
    if state.is_main_process:
        run.mark_started()
    run.inputs = {"model": script_args.model_name_or_path}
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card (recovery or not)
    source = inspect_source(script_args.model_name_or_path, script_args.base_model_name_or_path)
    tokenizer = load_tokenizer(script_args.model_name_or_path, script_args.trust_remote_code)
    # the protocol's data is read before any model loads; it measures on the main process only (the others just
    # prune and train)
    protocol = Protocol(protocol_from_fields(script_args)).load() if state.is_main_process else None
    model, source_dir = load_source_model(script_args, source, tokenizer)
    calibration = load_calibration(script_args, tokenizer, model, training_args.seed)

    def measure(model, folder, name):
        if protocol is None:
            return {}
        measured = protocol.measure(model, tokenizer, model_dir=folder, name=name).as_dict()
        measured["details"]["weight_sparsity"] = weight_sparsity(model)
        return measured

    # The source is measured first: unstructured pruning changes the model in place
    source_measure = measure(model, source_dir or script_args.model_name_or_path, script_args.model_name_or_path)
    pruned = prune(script_args, model, calibration)
    recovering = bool(script_args.recovery_dataset_path or script_args.recovery_datasets)
    pruned_dir = output / UNRECOVERED if recovering else output
    if state.is_main_process:
        save_model_folder(pruned, tokenizer, pruned_dir, parse_shard_size("5GB"))
    state.wait_for_everyone()
    pruned_measure = measure(pruned, pruned_dir, f"{output} (before recovery)" if recovering else str(output))

    final, recovery = pruned, None
    if recovering:
        final, recovery = recover(script_args, training_args, pruned_dir, run)
        run.inputs["recovery dataset"] = script_args.recovery_dataset_path or [
            spec.path for spec in recovery_specs(script_args)
        ]
    if not state.is_main_process:
        return {}
    final_measure = measure(final, output, str(output)) if recovering else None
    if recovering:
        shutil.rmtree(pruned_dir, ignore_errors=True)
    sparsity = layer_sparsity(final)  # after recovery too: the pruned weights must still be zero

    report = {
        "stage": "prune",
        "method": describe(script_args),
        "comparison": {
            "protocol": protocol_header(protocol.spec),
            "source": source_measure,
            "compressed": final_measure or pruned_measure,
        },
        "layer_sparsity": [{"layer": r.name, "weights": r.total, "sparsity": r.sparsity} for r in sparsity],
        "config": _shape(final.config),
    }
    if recovery is not None:
        report["pruned_before_recovery"] = pruned_measure
        report["recovery"] = recovery
    protocol.close()
    write_json_atomically(output / COMPRESSION_REPORT, report)
    before = ("before recovery", pruned_measure) if recovery is not None else None
    summary = _summary(script_args, report, sparsity)
    summary["seconds"] = round(run.seconds, 1)
    run.write(configs, {**summary, "protocol measures": comparison_summary(report["comparison"], before)})

    print(format_summary(f"pruning finished: {output}", summary))
    if script_args.method != "structured":
        print(format_layer_sparsity(sparsity))
    sparsities = {side: report["comparison"][side]["details"]["weight_sparsity"] for side in ("source", "compressed")}
    extras = {"zero weights (share)": (sparsities["source"], sparsities["compressed"])}
    print(format_comparison(report["comparison"], f"{describe(script_args)} vs source", extras, before))
    if rows := _report_rows(report):
        print(format_extras(rows))
    if push:
        push_trained_output(training_args, "prune")
    return summary


def load_source_model(script_args: PruneArguments, source, tokenizer) -> tuple[Any, str | None]:
    """(the model to prune in full precision, its folder -- None for an adapter merged in memory)."""
    from llm_recipes.export.folder import load_full_model, merge_adapter

    if source.kind == "adapter":
        return merge_adapter(source, tokenizer, "auto", script_args.trust_remote_code), None
    return load_full_model(source, "auto", script_args.trust_remote_code), script_args.model_name_or_path


def load_calibration(script_args: PruneArguments, tokenizer, model, seed: int):
    """Calibration windows [samples, length], or None."""
    from llm_recipes.compress.prune import token_windows
    from llm_recipes.evaluation.data import load_eval_data

    if not script_args.calibration_dataset_path:
        return None
    texts = load_eval_data(
        script_args.calibration_dataset_path, data_format=script_args.data_format, text_field=script_args.text_field
    ).texts
    positions = getattr(model.config, "max_position_embeddings", None) or script_args.calibration_length
    return token_windows(
        tokenizer,
        texts,
        count=script_args.calibration_samples,
        length=min(script_args.calibration_length, positions),
        seed=seed,
    )


def prune(script_args: PruneArguments, model, calibration):
    """The pruned model: `model` itself with zeros written in (unstructured, N:M), or a new smaller model."""
    from llm_recipes.compress.prune import prune_structured, prune_unstructured

    if script_args.method == "structured":
        return prune_structured(model, structured_plan(script_args), calibration)
    prune_unstructured(
        model,
        script_args.method,
        sparsity=script_args.sparsity,
        pattern=script_args.sparsity_pattern,
        calibration=calibration if script_args.method == "wanda" else None,
        per_row={"auto": None, "row": True, "layer": False}[script_args.sparsity_group],
    )
    return model


def recover(
    script_args: PruneArguments, training_args: TrainingArguments, pruned_dir: Path, run: Any
) -> tuple[Any, dict]:
    """Fine-tune the saved pruned model with the pretrain stage's trainer (packed text blocks, NaN guard, resume
    from checkpoints in output_dir), or with SFT's on recovery_datasets; pruned weights are kept at zero. Saves into
    output_dir."""
    from llm_recipes.cli import load_recipe
    from llm_recipes.compress.prune import MaskKeeper
    from llm_recipes.pretrain.config import PretrainScriptArguments
    from llm_recipes.training.resume import last_logged, resume_point

    if script_args.recovery_datasets:
        return _recover_on_chats(script_args, training_args, pruned_dir, run)
    pretrain = load_recipe("pretrain")
    pretrain_args = PretrainScriptArguments(
        dataset_path=script_args.recovery_dataset_path,
        data_format=script_args.data_format,
        text_field=script_args.text_field,
        eval_split_size=0,
        max_train_samples=script_args.max_recovery_samples,
        model_name_or_path=str(pruned_dir),
        block_size=script_args.recovery_block_size,
        trust_remote_code=script_args.trust_remote_code,
    )
    callbacks = [MaskKeeper()] if script_args.method != "structured" else []
    trainer, blocks, _ = pretrain.build_trainer(pretrain_args, training_args, callbacks)
    last_checkpoint = resume_point(trainer, run)
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    if trainer.loss_guard.failure:
        raise UserError(trainer.loss_guard.failure)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    recovery = {
        "optimizer steps": trainer.state.global_step,
        "training blocks": len(blocks.train),
        "block size": blocks.block_size,
        "final train loss": last_logged(trainer.state.log_history, "loss"),
        "mean train loss": result.training_loss,
    }
    return trainer.accelerator.unwrap_model(trainer.model), recovery


def _recover_on_chats(
    script_args: PruneArguments, training_args: TrainingArguments, pruned_dir: Path, run: Any
) -> tuple[Any, dict]:
    """The recovery fine-tune as SFT: the chat template, loss on the assistant turns, so the pruned chat model keeps
    ending its answers (plain-text recovery taught it to run on)."""
    import dataclasses

    from trl import ModelConfig, SFTConfig

    from llm_recipes.cli import load_recipe
    from llm_recipes.compress.prune import MaskKeeper
    from llm_recipes.sft.config import SFTScriptArguments
    from llm_recipes.training.resume import last_logged, resume_point

    sft = load_recipe("sft")
    values = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    sft_config = SFTConfig(
        **values,
        assistant_only_loss=True,
        max_length=script_args.recovery_block_size,
        trust_remote_code=script_args.trust_remote_code,
    )
    sft_args = SFTScriptArguments(
        datasets=script_args.recovery_datasets, max_train_samples=script_args.max_recovery_samples
    )
    model_args = ModelConfig(model_name_or_path=str(pruned_dir))
    trainer, data = sft.build_trainer(sft_args, sft_config, model_args)
    if script_args.method != "structured":
        trainer.add_callback(MaskKeeper())
    result = trainer.train(resume_from_checkpoint=resume_point(trainer, run))
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    recovery = {
        "optimizer steps": trainer.state.global_step,
        "training rows": len(data.train),
        "data": "chats (SFT: chat template, loss on assistant turns)",
        "final train loss": last_logged(trainer.state.log_history, "loss"),
        "mean train loss": result.training_loss,
    }
    return trainer.accelerator.unwrap_model(trainer.model), recovery


def describe(script_args: PruneArguments) -> str:
    if script_args.method == "structured":
        parts = []
        if script_args.heads_to_prune:
            unit = "KV groups" if script_args.prune_kv_heads else "query heads in each KV group"
            parts.append(f"{script_args.heads_to_prune} heads/layer ({unit})")
        if script_args.mlp_channels_to_prune:
            parts.append(f"{script_args.mlp_channels_to_prune} MLP channels/layer")
        return "structured: " + ", ".join(parts)
    if script_args.sparsity_pattern != "unstructured":
        return f"{script_args.method} {script_args.sparsity_pattern}"
    group = "" if script_args.sparsity_group == "auto" else f" (compared per {script_args.sparsity_group})"
    return f"{script_args.method} {script_args.sparsity:.0%} unstructured{group}"


def _shape(config) -> dict[str, Any]:
    fields = ("num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "hidden_size")
    return {name: getattr(config, name, None) for name in fields}


def _report_rows(report: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    if "recovery" in report:
        rows["recovery optimizer steps"] = report["recovery"]["optimizer steps"]
    return rows


def _summary(script_args: PruneArguments, report: dict[str, Any], sparsity) -> dict[str, Any]:
    from llm_recipes.compress.prune import overall_sparsity

    summary: dict[str, Any] = {"source": script_args.model_name_or_path, "method": report["method"]}
    if "recovery" in report:
        summary["recovery optimizer steps"] = report["recovery"]["optimizer steps"]
    if script_args.method != "structured":
        summary["sparsity of pruned layers"] = round(overall_sparsity(sparsity), 4)
    else:
        summary["config"] = ", ".join(f"{key} {value}" for key, value in report["config"].items() if value)
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
