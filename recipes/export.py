"""Export a trained model for deployment: merge adapters, shard, card, optional GGUF, optional push to the Hub.

    llm-recipes export --config configs/demo/export.yaml [field overrides]
    python recipes/export.py --config configs/demo/export.yaml --push_to_hub true --hub_model_id me/my-model

Reads a stage output (a full model, a quantized model or a LoRA/DoRA adapter), merges an adapter into its
full-precision base, and writes one folder that `transformers.pipeline("text-generation", model=folder)` loads:
safetensors shards, the tokenizer with its chat template, a generation config that stops at EOS, a model card
built from the manifests of every stage that produced the model, and the evaluation report. Optionally the
weights are saved quantized (bitsandbytes int8/nf4), a GGUF file is added for llama.cpp, and the folder is pushed
to a (private by default) Hub repo.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from llm_recipes.configs import check_model_path, is_planned, looks_local, parse_config, run_recipe
from llm_recipes.errors import UserError
from llm_recipes.export.config import ExportArguments
from llm_recipes.runs.outputs import stage_main


def parse_args(argv: Sequence[str] | None = None) -> tuple[ExportArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    from llm_recipes.export.folder import check_gguf_supported, inspect_source, parse_shard_size, read_json

    (args,) = parse_config((ExportArguments,), argv)
    check_model_path(args.model_name_or_path)
    if not looks_local(args.model_name_or_path):
        raise UserError(f"model_name_or_path: {args.model_name_or_path} must be a local stage output folder")
    parse_shard_size(args.max_shard_size)
    if Path(args.output_dir).expanduser().resolve() == Path(args.model_name_or_path).expanduser().resolve():
        raise UserError("output_dir must differ from model_name_or_path: the export is a new folder")
    if not is_planned(args.model_name_or_path):
        _check_source(args, inspect_source(args.model_name_or_path, args.base_model_name_or_path))
    if args.gguf_type != "none" and not is_planned(args.model_name_or_path):
        model_folder = Path(args.model_name_or_path).expanduser()
        tokenizer_file = model_folder / "tokenizer.json"
        source = inspect_source(args.model_name_or_path, args.base_model_name_or_path)
        check_gguf_supported(source.config, read_json(tokenizer_file) if tokenizer_file.is_file() else None)
    if args.eval_results_path and not is_planned(args.eval_results_path):
        from llm_recipes.hub import read_eval_results

        read_eval_results(args.eval_results_path, args.model_name_or_path)
    if args.push_to_hub and args.hub_model_id:
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(args.hub_model_id)
        except ValueError as err:
            raise UserError(f"hub_model_id: {str(err).splitlines()[0]}") from None
    return (args,)


def _check_source(args: ExportArguments, source) -> None:
    """What can be done with this kind of input: adapters merge into a full-precision base; quantized weights and
    unmerged adapters are exported as they are."""
    from llm_recipes.export.folder import merge_refusal, quantization_of

    weights_change = args.quantization != "none" or args.gguf_type != "none" or args.dtype != "auto"
    if source.kind == "adapter":
        if args.merge_adapter:
            check_model_path(source.base_model, "base_model_name_or_path")
            if source.config is not None and quantization_of(source.config):
                raise merge_refusal(source.base_model, quantization_of(source.config))
        elif weights_change:
            raise UserError("quantization, gguf_type and dtype change merged weights: set merge_adapter: true")
    if source.kind == "quantized" and weights_change:
        raise UserError(
            f"{args.model_name_or_path} is already quantized ({source.quantization}): quantization, gguf_type and "
            "dtype need the full-precision model"
        )


@stage_main
def main(args: ExportArguments) -> dict:
    from llm_recipes.export.folder import inspect_source
    from llm_recipes.hub import CardOptions, push_stage_output, write_model_card
    from llm_recipes.runs.manifest import StageRun
    from llm_recipes.runs.outputs import written_in_place
    from llm_recipes.runs.summary import format_summary

    output = Path(args.output_dir).expanduser()
    source = inspect_source(args.model_name_or_path, args.base_model_name_or_path)
    card = CardOptions(
        model_name=args.model_name,
        license=args.license,
        language=args.language,
        tags=args.tags,
        datasets=args.datasets,
        eval_results_path=args.eval_results_path,
        intended_use=args.intended_use,
        limitations=args.limitations,
    )
    if source.kind == "adapter" and args.merge_adapter:
        card.extra_tags.append(source.adapter_method.lower())  # the merged weights no longer show it
    # written beside the output and renamed into place at the end: a crash never leaves a half-written export
    run = StageRun.begin("export", output, {"script": args})
    with written_in_place(output) as staging:
        run.output_dir = staging
        summary = export_folder(args, source, staging)
        run.inputs = {"model": args.model_name_or_path}
        if source.kind == "adapter" and args.merge_adapter:
            run.inputs["base_model"] = source.base_model
        if args.eval_results_path:
            run.inputs["eval_results"] = args.eval_results_path
        summary["seconds"] = round(run.seconds, 1)
        run.write({"script": args}, summary)
        # the card reads the manifests, this stage's included, so it is written last
        write_model_card(staging, args.hub_model_id or str(output), card, evaluated_model=args.model_name_or_path)
    print(format_summary(f"export finished: {output}", summary))
    if args.push_to_hub:
        result = push_stage_output(
            output,
            args.hub_model_id,
            private=args.hub_private_repo,
            revision=args.hub_revision,
            commit_message=args.commit_message or f"Export with llm-recipes ({summary['exported']})",
            card=card,
            evaluated_model=args.model_name_or_path,
            what="export",
        )
        visibility = "private" if result.private else "public"
        print(
            f"pushed to {result.repo_id} ({visibility}{', ' + result.revision if result.revision else ''}): "
            f"{result.commit_url}"
        )
        summary["pushed to"] = result.repo_id
    return summary


def export_folder(args: ExportArguments, source, staging: Path) -> dict:
    """Write the model files into `staging`; returns the summary rows."""
    from llm_recipes.export.folder import (
        copy_saved_model,
        load_full_model,
        load_tokenizer,
        merge_adapter,
        nf4_cpu_problems,
        parse_shard_size,
        save_model_folder,
        save_quantized,
        weight_files,
        write_gguf,
    )
    from llm_recipes.models.loading import count_parameters

    shard_size = parse_shard_size(args.max_shard_size)
    tokenizer = load_tokenizer(args.model_name_or_path, args.trust_remote_code)
    summary: dict = {"source": f"{source.kind} {args.model_name_or_path}"}
    if source.kind == "adapter" and not args.merge_adapter:
        files = copy_saved_model(source, tokenizer, staging)
        summary["exported"] = f"{source.adapter_method} adapter for {source.base_model} (not merged)"
        summary["weight files"] = len(files)
        return summary
    if source.kind == "quantized":
        files = copy_saved_model(source, tokenizer, staging)
        summary["exported"] = f"{source.quantization} model (weights copied as saved)"
        summary["weight files"] = len(files)
        return summary

    if source.kind == "adapter":
        model = merge_adapter(source, tokenizer, args.dtype, args.trust_remote_code)
        summary["exported"] = f"{source.adapter_method} adapter merged into {source.base_model}"
    else:
        model = load_full_model(source, args.dtype, args.trust_remote_code)
        summary["exported"] = "full model"
    _, parameters = count_parameters(model)
    summary["parameters"] = parameters
    summary["dtype"] = str(model.dtype).replace("torch.", "")

    if args.quantization == "none":
        files = save_model_folder(model, tokenizer, staging, shard_size)
    else:
        full_precision = staging / ".full-precision"
        save_model_folder(model, tokenizer, full_precision, shard_size)
        quantized = save_quantized(full_precision, staging, args.quantization, shard_size)
        shutil.rmtree(full_precision)
        tokenizer.save_pretrained(staging)
        files = weight_files(staging)
        summary["quantization"] = f"{args.quantization} (bitsandbytes)"
        if args.quantization == "nf4" and (problems := nf4_cpu_problems(quantized)):
            print(
                f"note: bitsandbytes' CPU 4-bit kernel needs output widths divisible by 32; {len(problems)} layers "
                f"(e.g. {problems[0]}) are not, so this nf4 export runs on GPU (or CPUs without AVX512-BF16) only"
            )
    summary["weight files"] = len(files)
    summary["max shard size"] = args.max_shard_size
    if args.gguf_type != "none":
        report = write_gguf(model, tokenizer, staging / f"model-{args.gguf_type}.gguf", args.gguf_type)
        summary["gguf file"] = f"{report.path.name} ({report.bytes:,} bytes, {report.tensors} tensors)"
    eos = model.generation_config.eos_token_id
    summary["generation stops at"] = ", ".join(
        tokenizer.convert_ids_to_tokens(i) for i in (eos if isinstance(eos, list) else [eos])
    )
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
