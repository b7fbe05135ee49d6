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

from collections.abc import Sequence
from pathlib import Path

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.export.build import export_folder
from llm_recipes.export.checks import check_export_arguments
from llm_recipes.export.config import ExportArguments
from llm_recipes.export.source import inspect_source
from llm_recipes.hub import CardOptions, push_stage_output, write_model_card
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main, written_in_place
from llm_recipes.runs.summary import format_summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[ExportArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    (args,) = parse_config((ExportArguments,), argv)
    check_export_arguments(args)
    return (args,)


@stage_main
def main(args: ExportArguments) -> dict:
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
        summary.seconds = run.seconds
        run.write({"script": args}, summary.as_summary())
        # the card reads the manifests, this stage's included, so it is written last
        write_model_card(staging, args.hub_model_id or str(output), card, evaluated_model=args.model_name_or_path)
    print(format_summary(f"export finished: {output}", summary.as_summary()))
    if args.push_to_hub:
        result = push_stage_output(
            output,
            args.hub_model_id,
            private=args.hub_private_repo,
            revision=args.hub_revision,
            commit_message=args.commit_message or f"Export with llm-recipes ({summary.exported})",
            card=card,
            evaluated_model=args.model_name_or_path,
            what="export",
        )
        visibility = "private" if result.private else "public"
        print(
            f"pushed to {result.repo_id} ({visibility}{', ' + result.revision if result.revision else ''}): "
            f"{result.commit_url}"
        )
        summary.pushed_to = result.repo_id
    return summary.as_summary()


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
