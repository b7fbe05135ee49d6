"""Raw text to a clean, deduplicated, split dataset, with a report of what every step removed.

    llm-recipes clean-corpus --config configs/demo/clean_corpus.yaml
    python recipes/clean_corpus.py --config configs/demo/clean_corpus.yaml --num_proc 4

Reads txt/jsonl/json/parquet/csv/html files (compressed or not), `save_to_disk` folders or a Hub dataset, runs the
configured steps in order (normalize, quality filters, language id, PII redaction, exact and MinHash dedup,
decontamination, augmentation), splits train/validation/test, removes cross-split duplicates and writes the dataset
(`save_to_disk` or Parquet shards) with `corpus_report.{json,txt,png}`. Each finished step is checkpointed, so an
interrupted run resumes where it stopped; the output folder appears only when everything is written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from llm_recipes.configs import (
    check_dataset_path,
    parse_config,
    run_recipe,
)
from llm_recipes.corpus.checkpoints import StepCheckpoints, chain_key, files_fingerprint
from llm_recipes.corpus.config import CleanCorpusArguments
from llm_recipes.corpus.engines import check_engine
from llm_recipes.corpus.engines.ray_engine import clean_on_ray
from llm_recipes.corpus.readers import read_corpus
from llm_recipes.corpus.report import build_report, write_report
from llm_recipes.corpus.splits import save_splits, split_corpus
from llm_recipes.corpus.steps import CORPUS_PRESETS, StepStats, build_steps, language_calibration_warning, run_step
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main


def parse_args(argv: Sequence[str] | None = None) -> tuple[CleanCorpusArguments]:
    (args,) = parse_config((CleanCorpusArguments,), argv)
    if not args.input_paths:
        raise UserError("input_paths is required: the files, folders or Hub dataset to clean")
    for path in args.input_paths:
        check_dataset_path(path, "input")
    if not args.steps and not args.preset:
        raise UserError("set steps (the pipeline, in order) or a preset (minimal, web)")
    if args.steps and args.preset:
        raise UserError("set either steps or preset, not both")
    if args.push_to_hub and not args.hub_dataset_id:
        raise UserError("push_to_hub needs hub_dataset_id (e.g. your-name/my-corpus)")
    check_engine(args)
    pipeline_steps(args)  # builds every step now, so a bad step name or option fails before any reading
    return (args,)


def pipeline_steps(args: CleanCorpusArguments) -> list:
    return build_steps(args.steps if args.steps else CORPUS_PRESETS[args.preset])


@stage_main
def main(args: CleanCorpusArguments) -> dict:
    run = StageRun.begin("clean-corpus", args.output_dir, {"script": args})
    steps = pipeline_steps(args)
    if warning := language_calibration_warning(steps):
        print(warning, file=sys.stderr, flush=True)
    run.inputs = {"inputs": args.input_paths}
    checkpoints = StepCheckpoints(args.output_dir)
    if args.engine == "ray":
        # the same steps on a Ray cluster (llm_recipes/corpus/engines): read, checkpointed and written from there
        staging, report, table = clean_on_ray(args, steps, checkpoints)
        publish(run, args, checkpoints, staging, report, table)
        return report

    # Read, or pick up the documents an earlier run already read from unchanged inputs
    read_options = {
        key: getattr(args, key)
        for key in ("text_field", "txt_unit", "on_malformed", "html", "input_split", "hub_config", "max_documents")
    }
    key = chain_key("read", [args.input_paths, read_options, files_fingerprint(args.input_paths)])
    resumed = checkpoints.load(0, "read", key)
    if resumed:
        ds, read_report = resumed
        print(f"read: {len(ds):,} documents (checkpoint)")
    else:
        ds, report = read_corpus(
            args.input_paths,
            text_field=args.text_field,
            txt_unit=args.txt_unit,
            on_malformed=args.on_malformed,
            split=args.input_split,
            hub_config=args.hub_config,
            streaming=args.streaming,
            max_documents=args.max_documents,
            html=args.html,
        )
        read_report = report.as_dict()
        if len(ds) == 0:
            raise UserError(f"no documents in {', '.join(args.input_paths)}; see the read report: {read_report}")
        ds = checkpoints.save(0, "read", key, ds, read_report)

    # Clean: each step runs once; a rerun loads the steps that already finished
    all_stats: list[StepStats] = []
    for index, step in enumerate(steps, start=1):
        key = chain_key(key, [step.spec(), args.batch_size, args.seed])
        resumed = checkpoints.load(index, step.name, key)
        if resumed:
            ds, saved = resumed
            stats = StepStats.from_dict(saved, cached=True)
        else:
            ds, stats = run_step(ds, step, num_proc=args.num_proc, batch_size=args.batch_size)
            if len(ds) == 0:
                raise UserError(
                    f"every document was removed by step '{step.name}' ({stats.drop_reasons}); loosen its thresholds"
                )
            ds = checkpoints.save(index, step.name, key, ds, stats.as_dict())
        all_stats.append(stats)
        resumed_note = " (checkpoint)" if stats.cached else ""
        print(f"{stats.name}: {stats.docs_in:,} -> {stats.docs_out:,} documents{resumed_note}")

    # Split, keep evaluation documents out of train, and write everything under a temporary name
    splits, split_stats = split_corpus(
        ds, args.validation_size, args.test_size, seed=args.seed, cross_split_dedup=args.cross_split_dedup
    )
    staging = checkpoints.staging_output()
    save_splits(splits, staging, args.output_format, rows_per_shard=args.rows_per_shard)
    report = build_report(read_report, all_stats, {name: len(split) for name, split in splits.items()})
    report["cross_split_dedup"] = split_stats
    publish(run, args, checkpoints, staging, report, write_report(staging, report))

    if args.push_to_hub:
        splits.push_to_hub(args.hub_dataset_id, private=args.hub_private)
        print(f"pushed to https://huggingface.co/datasets/{args.hub_dataset_id}")
    return report


def publish(run: StageRun, args: CleanCorpusArguments, checkpoints: StepCheckpoints, staging, report, table) -> None:
    """The manifest beside the data, then the rename onto output_dir: it appears complete or not at all."""
    run.output_dir = staging
    summary = {**report["totals"], "splits": report["splits"], "seconds": round(run.seconds, 1)}
    run.write({"script": args}, summary)
    checkpoints.publish(args.keep_intermediate)
    print(f"corpus written: {args.output_dir} ({args.output_format})\n{table}")


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
