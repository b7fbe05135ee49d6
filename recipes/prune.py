"""Prune a model: magnitude, Wanda or N:M sparsity, or structured head/channel removal, with an optional recovery.

    llm-recipes prune --config configs/demo/prune.yaml [field overrides]
    python recipes/prune.py --config configs/demo/prune.yaml --method structured --heads_to_prune 2
    accelerate launch recipes/prune.py --config configs/demo/prune.yaml   # the recovery fine-tune data-parallel

Reads a full-precision model folder (or a LoRA/DoRA adapter, merged into its full-precision base first) and prunes
the linear layers of its transformer blocks: unstructured (smallest |W| per layer, or Wanda's |W| x input norm per
output row from a few calibration windows) to a target sparsity, N:M semi-structured (2:4), or structured --
whole attention heads (GQA-aware) and MLP channels removed, the config rewritten, so the model really shrinks.
Pruned weights are stored as zeros, so the folder loads with `AutoModelForCausalLM.from_pretrained` anywhere.
Optionally the pruned model is fine-tuned briefly to recover (the pretrain stage's trainer on your text, or SFT's on
chats; pruned weights are kept at zero). The report (printed, and compression_report.json) gives the achieved
sparsity per layer and compares the source, the pruned model and the recovered one on the evaluation protocol
(`protocol`: the evaluate stage's measures -- held-out perplexity, task scores, reward, latency, size; without one,
the report fields make a small protocol of eval_dataset_path).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from accelerate import PartialState
from transformers import TrainingArguments

from llm_recipes.compress.config import PruneArguments
from llm_recipes.compress.prune_build import load_calibration, load_source_model, measure_model, prune_model
from llm_recipes.compress.prune_checks import check_data, check_method, check_source, recovery_specs
from llm_recipes.compress.prune_recovery import recover
from llm_recipes.compress.prune_report import prune_report
from llm_recipes.compress.quantize import check_report_fields
from llm_recipes.compress.report import COMPRESSION_REPORT, protocol_from_fields
from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.errors import UserError
from llm_recipes.evaluation.protocol import Protocol
from llm_recipes.export.folder import load_tokenizer, save_model_folder
from llm_recipes.export.source import inspect_source, parse_shard_size
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.runs.manifest import StageRun, write_json_atomically
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary

# the pruned model before recovery, inside output_dir while the recovery fine-tune reads it
UNRECOVERED = ".pruned-before-recovery"
# Our defaults where transformers' differ (they apply to the recovery fine-tune): no tracker unless asked, frequent
# logs, two checkpoints kept, a short run.
PRUNE_DEFAULTS = dict(
    output_dir="outputs/pruned", report_to="none", logging_steps=10, save_total_limit=2, max_steps=100
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[PruneArguments, TrainingArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args = parse_config((PruneArguments, TrainingArguments), argv, **PRUNE_DEFAULTS)
    source = check_source(script_args, training_args.output_dir)  # None while a pipeline's earlier stage makes it
    check_data(script_args)
    check_method(script_args, source)
    check_report_fields(script_args)
    if training_args.eval_strategy != "no":
        raise UserError("eval_strategy: the recovery fine-tune is evaluated by the report (its protocol)")
    return script_args, training_args


@stage_main
def main(script_args: PruneArguments, training_args: TrainingArguments) -> dict:
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

    # The source is measured first: unstructured pruning changes the model in place
    source_folder = source_dir or script_args.model_name_or_path
    source_measure = measure_model(protocol, model, tokenizer, source_folder, script_args.model_name_or_path)
    pruned = prune_model(script_args, model, calibration)
    recovering = bool(script_args.recovery_dataset_path or script_args.recovery_datasets)
    pruned_dir = output / UNRECOVERED if recovering else output
    if state.is_main_process:
        save_model_folder(pruned, tokenizer, pruned_dir, parse_shard_size("5GB"))
    state.wait_for_everyone()
    pruned_name = f"{output} (before recovery)" if recovering else str(output)
    pruned_measure = measure_model(protocol, pruned, tokenizer, pruned_dir, pruned_name)

    final, recovery = pruned, None
    if recovering:
        final, recovery = recover(script_args, training_args, pruned_dir, run)
        run.inputs["recovery dataset"] = script_args.recovery_dataset_path or [
            spec.path for spec in recovery_specs(script_args)
        ]
    if not state.is_main_process:
        return {}
    final_measure = measure_model(protocol, final, tokenizer, output, str(output)) if recovering else None
    if recovering:
        shutil.rmtree(pruned_dir, ignore_errors=True)

    report = prune_report(script_args, protocol, (source_measure, pruned_measure, final_measure), final, recovery)
    protocol.close()
    write_json_atomically(output / COMPRESSION_REPORT, report.as_dict())
    summary = report.summary(script_args.model_name_or_path, run.seconds).as_summary()
    run.write(configs, {**summary, "protocol measures": report.protocol_measures()})
    print(format_summary(f"pruning finished: {output}", summary))
    print(report.format())
    if push:
        push_trained_output(training_args, "prune")
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
