"""Evaluate a model, or compare several stages' models on the same data, and write a report.

    llm-recipes evaluate --config configs/demo/evaluate.yaml
    python recipes/evaluate_models.py --config configs/demo/evaluate.yaml --models outputs/base outputs/sft

Any folder a stage wrote works: base, SFT, RL, distilled, quantized, pruned, a PEFT adapter, a classifier.
With `protocol` (configs/demo/protocol.yaml), every model is measured on the evaluation protocol: held-out corpus
perplexity and bits per byte, each task's held-out score, the reward model's score and the true reward, answers to
fixed prompts, latency and size -- the measures the compression stages and the pipeline table use. Beside them:
perplexity and bits per byte (sliding window), BLEU / chrF / ROUGE / exact match of greedy generations
against reference answers, mean reward and win rate over the first model under a reward model, an LLM judge's
1-10 ratings and position-swapped win rate (`judge_model`: a local chat model or an OpenAI-compatible server; data
without answers -- MT-bench `turns`, `prompt` alone, user-only `messages` -- is answered turn by turn and judged),
classification accuracy / precision / recall / F1, and lm-evaluation-harness tasks; plots each trainer stage's
curves. Writes eval_results.json (read by the export stage's model card), eval_report.md with the comparison and
win-rate tables and every judged answer, generations/, judgments.jsonl and plots/ to output_dir, and prints the
tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_recipes.configs import is_first_process, parse_config, run_recipe
from llm_recipes.evaluation import report
from llm_recipes.evaluation.config import EvaluateArguments
from llm_recipes.evaluation.suite import (
    add_judgments,
    add_lm_eval,
    add_plots,
    add_win_rates,
    check_arguments,
    evaluate_model,
    load_inputs,
    load_judge,
    load_reward,
    model_paths,
    report_settings,
    write_generations,
)
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[EvaluateArguments]:
    """Parse and check the config: paths, weights, metric choices -- all before any data or model is loaded."""
    (args,) = parse_config((EvaluateArguments,), argv)

    check_arguments(args)
    return (args,)


@stage_main
def main(args: EvaluateArguments) -> dict:
    if not is_first_process():
        return {}  # evaluation runs in one process; under a multi-process launch the others have nothing to do
    run = StageRun.begin("evaluate", args.output_dir, {"script": args})
    run.mark_started()  # it writes into output_dir as it goes: an earlier evaluation there is no longer whole
    paths = model_paths(args)

    # Data first: a missing column or an empty file stops here, before any model is loaded; a judge server is reached
    inputs = load_inputs(args)
    reward = load_reward(args)
    judge = load_judge(args)

    # Every model on the same data, one at a time (only one is in memory), then compared with the first
    results = []
    for path in paths:
        print(f"evaluating {path}")
        result = evaluate_model(path, args, inputs, reward)
        if args.lm_eval_tasks:
            add_lm_eval(result, args)
        if args.plot_training_curves:
            add_plots(result, args.output_dir)
        write_generations(result, inputs, args.output_dir)
        results.append(result)
    add_win_rates(results)
    # The LLM judge reads every model's answers (a local judge loads now, after the models are freed)
    add_judgments(results, inputs.data, judge, args.output_dir)

    # Outputs: results for the model card, the Markdown report, the table on the terminal, the manifest
    settings = report_settings(args, inputs, judge)
    results_path = report.write_eval_results(results, args.output_dir, settings.get("protocol"), settings.get("judge"))
    report_path = report.write_markdown_report(results, args.output_dir, settings)
    header, rows = report.comparison_rows(results)
    summary = {
        "models": len(results),
        "eval results": str(results_path),
        "report": str(report_path),
        "seconds": round(run.seconds, 1),
    }
    for data in {id(d): d for d in (inputs.data, inputs.perplexity_data) if d is not None and d.report}.values():
        summary[f"rows kept from {data.path}"] = data.report.describe()
    run.inputs = {"models": paths, "dataset": args.dataset_path, "reward_model": args.reward_model}
    if judge is not None:
        run.inputs["judge_model"] = summary["judge"] = judge.client.name
        summary["judge outputs without a verdict"] = len(judge.budget.seen)  # left out of the scores
    if inputs.protocol is not None:
        run.inputs["protocol"] = args.protocol
        summary["protocol"] = f"{args.protocol} (fingerprint {inputs.protocol.spec.fingerprint()})"
    run.write({"script": args}, {"models": {r.path: r.all_metrics() for r in results}, **summary})
    print(report.text_table(header, rows))
    if any(r.comparisons for r in results):
        print("\n" + report.text_table(*report.win_rate_rows(results)))
        print(report.WIN_RATE_DEFINITION)
    if "protocol" in settings:
        print(report.protocol_notes(settings["protocol"]))
    print()
    print(format_summary(f"evaluation finished: {args.output_dir}", summary))
    return {r.path: r.all_metrics() for r in results}


if __name__ == "__main__":
    run_recipe(main, parse_args)
