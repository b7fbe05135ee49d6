"""Report on a serve stage's feedback store: thumbs-up rate and latency per version over time, A/B result, drift.

    llm-recipes monitor --db sqlite:///outputs/demo/feedback.db --output_dir outputs/demo/monitor
    llm-recipes monitor --db postgresql://user@host/db --output_dir report --training_data data/sft.jsonl \
        [--since 2026-12-01] [--until 2026-12-08] [--bucket hour] [--baseline v1]
    python recipes/monitor.py --db sqlite:///feedback.db --output_dir report

Reads the store (SQLite or PostgreSQL, never written) and writes monitor_report.md, monitor_report.json and PNG
figures: each version's thumbs-up rate (with its Wilson interval) and latency p50/p90/p99, overall and per time
bucket; the A/B result, each version's thumbs-up rate minus the baseline's with Newcombe's 95% interval; and, given
the training data, how the incoming prompts drift from it: length, language mix, and the share of prompts none of
whose word n-grams the training data has. Prompts are stored only when the server logs conversations or feedback
named the answer: the report says how many it could read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.errors import UserError
from llm_recipes.monitoring.config import MonitorArguments, check_monitor_arguments
from llm_recipes.monitoring.drift import prompt_drift, prompt_of, training_prompts
from llm_recipes.monitoring.plots import plot_language_mix, plot_latency, plot_prompt_lengths, plot_thumbs_up
from llm_recipes.monitoring.report import read_answers, report_markdown, version_report
from llm_recipes.runs.manifest import StageRun, write_json_atomically
from llm_recipes.runs.outputs import stage_main, written_in_place
from llm_recipes.runs.summary import format_summary
from llm_recipes.serving.store import database_url, open_store, parse_time


def parse_args(argv: Sequence[str] | None = None) -> tuple[MonitorArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before the store is read."""
    (args,) = parse_config((MonitorArguments,), argv)
    check_monitor_arguments(args)
    return (args,)


@stage_main
def main(args: MonitorArguments) -> dict:
    output = Path(args.output_dir).expanduser()
    store = database_url(args.db).render_as_string(hide_password=True)
    since, until = parse_time(args.since, "since"), parse_time(args.until, "until")
    engine = open_store(args.db)
    try:
        answers = read_answers(engine, since, until)
    finally:
        engine.dispose()
    window = " to ".join(x or "..." for x in (args.since, args.until)) if since or until else ""
    if not answers:
        raise UserError(f"db: the feedback store {store} holds no answers" + (f" from {window}" if window else ""))

    # Per version and time bucket, and the A/B comparison with the baseline
    report = {"db": store, "answers": len(answers), "window": window}
    report.update(first=answers[0].created_at.isoformat(), last=answers[-1].created_at.isoformat())
    report.update(version_report(answers, args.bucket, args.baseline))

    # Drift of the prompts we could read (logged, or named by feedback) from the training data's
    lengths = None
    if args.training_data:
        served = [p for a in answers if a.messages and (p := prompt_of(a.messages))]
        training = training_prompts(args.training_data, args.training_split, args.max_training_prompts)
        drift = prompt_drift(served, training, args.ngram, args.languages)
        lengths = drift["length"].pop("served_lengths"), drift["length"].pop("training_lengths")
        drift.update(prompts=len(served), answers=len(answers), training_prompts=len(training))
        report["drift"] = {**drift, "training_data": args.training_data}

    run = StageRun.begin("monitor", output, {"script": args})
    with written_in_place(output) as staging:
        run.output_dir = staging
        figures = [plot_thumbs_up(report, staging), plot_latency(report, staging)]
        if lengths is not None and lengths[0]:
            figures += [
                plot_prompt_lengths(*lengths, staging),
                plot_language_mix(report["drift"]["languages"], staging),
            ]
        write_json_atomically(staging / "monitor_report.json", report)
        markdown = report_markdown(report, [figure.name for figure in figures])
        (staging / "monitor_report.md").write_text(markdown, encoding="utf-8")
        run.inputs = {"db": store, **({"training_data": args.training_data} if args.training_data else {})}
        summary = {"answers": len(answers), "versions": len(report["versions"])}
        for version, stats in report["versions"].items():
            rate = stats["thumbs_up_rate"]
            summary[f"{version} thumbs up"] = "-" if rate is None else f"{rate:.1%} of {stats['rated']}"
        for row in report["ab"]["comparisons"]:
            if row["interval"] is not None:
                low, high = row["interval"]
                summary[f"{row['version']} - {row['baseline']}"] = f"{row['difference']:+.1%} [{low:+.1%}, {high:+.1%}]"
        if "drift" in report:
            summary["prompts read"] = report["drift"]["prompts"]
            summary["uncovered prompts"] = report["drift"]["coverage"]["uncovered"]
        run.write({"script": args}, summary)
    print(format_summary(f"monitor finished: {output / 'monitor_report.md'}", summary))
    return report


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
