"""Turn the serve stage's feedback into training data: ratings -> KTO, choices and edits -> DPO, edits -> SFT.

    llm-recipes feedback-to-data --db sqlite:///outputs/demo/feedback.db --output_dir outputs/demo/feedback_data
    llm-recipes feedback-to-data --config configs/demo/feedback_to_data.yaml [--versions v2] [--since 2026-12-01]
    python recipes/feedback_to_data.py --config configs/demo/feedback_to_data.yaml

Reads the feedback store (SQLite or PostgreSQL, never written) and writes kto.jsonl (prompt/completion/label),
dpo.jsonl (prompt/chosen/rejected) and sft.jsonl (messages) -- the files the kto, dpo and sft stages read as their
dataset_path -- with PII redacted by the corpus stage's step and exact duplicates removed, plus report.json and
report.md: feedback by kind and version, rows by source and version, what was dropped and why, redactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import StageRun, write_json_atomically
from llm_recipes.runs.outputs import stage_main, written_in_place
from llm_recipes.runs.summary import format_summary
from llm_recipes.serving.feedback_data import (
    FeedbackToDataArguments,
    build_rows,
    check_feedback_to_data_arguments,
    read_store,
    report_markdown,
    write_jsonl,
)
from llm_recipes.serving.store import database_url, open_store, parse_time


def parse_args(argv: Sequence[str] | None = None) -> tuple[FeedbackToDataArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before the store is read."""
    (args,) = parse_config((FeedbackToDataArguments,), argv)
    check_feedback_to_data_arguments(args)
    return (args,)


@stage_main
def main(args: FeedbackToDataArguments) -> dict:
    output = Path(args.output_dir).expanduser()
    store = database_url(args.db).render_as_string(hide_password=True)
    engine = open_store(args.db)
    try:
        feedback, responses = read_store(engine)
    finally:
        engine.dispose()
    if not feedback:
        raise UserError(f"db: the feedback store {store} holds no feedback yet")
    filters = {"versions": args.versions, "since": args.since, "until": args.until}
    since, until = parse_time(args.since, "since"), parse_time(args.until, "until")
    data = build_rows(feedback, responses, versions=args.versions, since=since, until=until)
    report = data.report(args.formats, filters)
    if not any(report["rows"].values()):
        dropped = "; ".join(f"{reason}: {n}" for reason, n in report["dropped"].items()) or "none dropped"
        raise UserError(
            f"no training rows from {report['feedback']['selected']} of {len(feedback)} feedback items in {store} "
            f"({report['feedback']['comments']} comments; {dropped})"
        )

    # written beside the output and renamed into place at the end: a crash never leaves half the files
    run = StageRun.begin("feedback-to-data", output, {"script": args})
    with written_in_place(output) as staging:
        run.output_dir = staging
        for name, count in report["rows"].items():
            if count:
                write_jsonl(staging / f"{name}.jsonl", data.rows[name])
        write_json_atomically(staging / "report.json", report)
        (staging / "report.md").write_text(report_markdown(report), encoding="utf-8")
        run.inputs = {"db": store}
        summary = {
            "feedback read": len(feedback),
            "feedback selected": report["feedback"]["selected"],
            **{f"{name} rows": count for name, count in report["rows"].items()},
            "dropped": sum(report["dropped"].values()),
            "duplicates removed": sum(report["duplicates"].values()),
            "pii redactions": sum(report["pii_redactions"].values()),
            "seconds": round(run.seconds, 2),
        }
        run.write({"script": args}, summary)
    print(format_summary(f"feedback-to-data finished: {output}", summary))
    labels = report["kto_labels"]
    if report["rows"].get("kto") and not (labels["true"] and labels["false"]):
        kind = "up" if labels["true"] else "down"
        print(f"note: kto.jsonl holds only thumbs {kind}; the kto stage needs both labels (mix in other data)")
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
