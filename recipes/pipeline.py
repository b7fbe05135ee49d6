"""Run the whole pipeline from one config -- raw corpus to deployable model -- resuming where it stopped.

    llm-recipes pipeline --config configs/demo/pipeline.yaml [--dry_run] [--rl_algorithm grpo] [--skip prune]
    python recipes/pipeline.py --config configs/demo/pipeline.yaml

The config has a `pipeline:` section (rl_algorithm, skip, use_existing, launch, output_root) and one section per
stage, each exactly that stage's own config. Stages run in order: clean-corpus, train-tokenizer, pretrain, sft,
reward, the RL algorithm (ppo, grpo, rloo, dpo or kto), evaluate, distill, quantize, prune, export. Each stage's missing
input fields are filled from the outputs before it. Rerunning the same command skips finished stages whose config
and inputs are unchanged and resumes an interrupted one from its checkpoint. The run ends with a table of what every
stage did and how long it took.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llm_recipes.configs import ConfigError, run_recipe
from llm_recipes.configs.code import code_not_imported
from llm_recipes.pipeline.dry_run import describe_plan
from llm_recipes.pipeline.plan import RL_ALGORITHMS, SECTION_NAMES, build_plan, read_pipeline_config
from llm_recipes.pipeline.report import format_results, write_report
from llm_recipes.pipeline.runner import (
    check_plan,
    checks_as_on_a_gpu_machine,
    refuse_multi_process_launch,
    run_plan,
    stage_statuses,
    temporary_config_dir,
    write_stage_configs,
)
from llm_recipes.pipeline.state import PipelineState


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(message)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace]:
    """Read the pipeline config and check its shape; each stage's own fields are checked in main, all up front."""
    parser = _Parser(prog="llm-recipes pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="The pipeline YAML (see configs/demo/pipeline.yaml).")
    parser.add_argument("--dry_run", action="store_true", help="Check every stage and print the plan; run nothing.")
    parser.add_argument("--rl_algorithm", choices=RL_ALGORITHMS, help="Override pipeline.rl_algorithm.")
    parser.add_argument("--skip", nargs="+", default=[], help="Stages not to run this time (added to pipeline.skip).")
    parser.add_argument("--rerun", help="Run this stage again even if it is done (and, through it, those after it).")
    parser.add_argument("--restart", action="store_true", help="Ignore earlier runs: every stage runs afresh.")
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.settings, args.sections = read_pipeline_config(args.config)
    if args.rl_algorithm:
        args.settings.rl_algorithm = args.rl_algorithm
    for name in args.skip + ([args.rerun] if args.rerun else []):
        if name not in SECTION_NAMES and name != "rl":
            raise ConfigError(f"unknown stage '{name}' (stages: {', '.join(sorted(SECTION_NAMES))})")
    args.settings.skip = [*args.settings.skip, *args.skip]
    args.plan = build_plan(args.settings, args.sections)
    return (args,)


def main(args: argparse.Namespace) -> list:
    refuse_multi_process_launch()
    settings, plan = args.settings, args.plan
    config_dir = temporary_config_dir() if args.dry_run else settings.run_dir / "configs"

    # Every stage's config, resolved and checked before the first one starts
    config_paths = write_stage_configs(plan, config_dir)
    if args.dry_run:
        with checks_as_on_a_gpu_machine() as relaxed, code_not_imported():  # runs nothing: code is only found
            check_plan(plan, config_paths)
        statuses = stage_statuses(plan, PipelineState(settings.run_dir), restart=args.restart, rerun=args.rerun)
        print(describe_plan(plan, settings, statuses))
        if relaxed:
            print("no GPU here: bf16 settings were checked as a GPU machine would accept them")
        return []
    check_plan(plan, config_paths)

    # The stages, in order; finished ones are skipped, an interrupted one continues
    results = run_plan(plan, settings, config_paths, restart=args.restart, rerun=args.rerun)
    table = format_results(results)
    write_report(settings.run_dir, results, table)
    print(f"\npipeline finished ({settings.run_dir}/report.txt):\n\n{table}")
    return results


if __name__ == "__main__":
    run_recipe(main, parse_args)
