"""What the feedback store says about each version: thumbs-up rate and latency percentiles, overall and per time
bucket, and the A/B result -- each version's thumbs-up rate minus the baseline's, with a 95% interval.

Definitions (printed in the report too):
    thumbs-up rate   up / (up + down) over rated answers; an answer rated more than once counts its last rating;
                     with its Wilson score interval (the evaluate stage's `wilson_interval`)
    percentiles      of the answers' latency (request in to answer recorded), linear interpolation (numpy's default)
    A/B interval     Newcombe's hybrid score interval of a difference of two proportions (Newcombe 1998, method
                     10), built from the two Wilson intervals
    buckets          of the answer's time (UTC): hour, day, or ISO week (from Monday)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from llm_recipes.errors import UserError
from llm_recipes.evaluation.judges import wilson_interval
from llm_recipes.serving.store import FeedbackRow, ResponseRow, as_utc

PERCENTILES = (50, 90, 99)
AB_INTERVAL = "Newcombe hybrid score interval (Wilson), 95%"


@dataclass
class Answer:
    id: str
    version: str
    created_at: datetime
    latency_ms: float | None
    completion_tokens: int | None
    messages: list[dict[str, Any]] | None  # only when logged, or once feedback named the answer
    rating: str | None = None  # its last up/down


def read_answers(engine: Engine, since: datetime | None, until: datetime | None) -> list[Answer]:
    """The answers in [since, until), oldest first, each with its last rating."""
    query = select(ResponseRow).order_by(ResponseRow.created_at, ResponseRow.id)
    if since is not None:
        query = query.where(ResponseRow.created_at >= since)
    if until is not None:
        query = query.where(ResponseRow.created_at < until)
    ratings = (
        select(FeedbackRow.response_id, FeedbackRow.value)
        .where(FeedbackRow.kind == "rating")
        .order_by(FeedbackRow.created_at, FeedbackRow.id)
    )
    with engine.connect() as connection:
        last = dict(connection.execute(ratings).all())  # later rows overwrite: the last rating stands
        rows = connection.execute(query).mappings().all()
    return [
        Answer(
            id=row["id"],
            version=row["version"],
            created_at=as_utc(row["created_at"]),
            latency_ms=row["latency_ms"],
            completion_tokens=row["completion_tokens"],
            messages=json.loads(row["messages"]) if row["messages"] else None,
            rating=last.get(row["id"]),
        )
        for row in rows
    ]


def bucket_of(moment: datetime, bucket: str) -> str:
    if bucket == "hour":
        return moment.strftime("%Y-%m-%dT%H:00")
    if bucket == "week":
        return (moment - timedelta(days=moment.weekday())).strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d")


def summarize(answers: list[Answer]) -> dict[str, Any]:
    """Answers, ratings, thumbs-up rate (with its Wilson interval) and latency percentiles of some answers."""
    up = sum(answer.rating == "up" for answer in answers)
    rated = sum(answer.rating in ("up", "down") for answer in answers)
    latencies = [answer.latency_ms for answer in answers if answer.latency_ms is not None]
    per_token = [
        a.latency_ms / a.completion_tokens for a in answers if a.latency_ms is not None and a.completion_tokens
    ]
    out: dict[str, Any] = {
        "answers": len(answers),
        "rated": rated,
        "up": up,
        "thumbs_up_rate": up / rated if rated else None,
        "thumbs_up_interval": list(wilson_interval(up, rated)) if rated else None,
    }
    for q in PERCENTILES:
        out[f"latency_ms_p{q}"] = float(np.percentile(latencies, q)) if latencies else None
    out["ms_per_token_p50"] = float(np.percentile(per_token, 50)) if per_token else None
    return out


def difference_interval(up_a: int, n_a: int, up_b: int, n_b: int) -> tuple[float, float, float]:
    """rate_a - rate_b and Newcombe's hybrid score interval of it (95%)."""
    p_a, p_b = up_a / n_a, up_b / n_b
    low_a, high_a = wilson_interval(up_a, n_a)
    low_b, high_b = wilson_interval(up_b, n_b)
    difference = p_a - p_b
    lower = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    upper = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return difference, lower, upper


def version_report(answers: list[Answer], bucket: str, baseline: str | None) -> dict[str, Any]:
    """Per version overall and per bucket, and the A/B comparison with the baseline."""
    versions = sorted({answer.version for answer in answers})
    if baseline is not None and baseline not in versions:
        raise UserError(f"baseline: no answers of version {baseline!r} (versions: {', '.join(versions)})")
    by_version = {v: [a for a in answers if a.version == v] for v in versions}
    chosen = baseline or min(versions, key=lambda v: (-len(by_version[v]), v))  # the most answered, then by name
    overall = {v: summarize(by_version[v]) for v in versions}
    buckets = sorted({bucket_of(a.created_at, bucket) for a in answers})
    over_time = {
        v: {
            b: summarize(in_bucket)
            for b in buckets
            if (in_bucket := [a for a in by_version[v] if bucket_of(a.created_at, bucket) == b])
        }
        for v in versions
    }
    comparisons = []
    base = overall[chosen]
    for version in versions:
        if version == chosen:
            continue
        this = overall[version]
        row: dict[str, Any] = {"version": version, "baseline": chosen, "rated": this["rated"]}
        row["baseline_rated"] = base["rated"]
        if this["rated"] and base["rated"]:
            difference, lower, upper = difference_interval(this["up"], this["rated"], base["up"], base["rated"])
            verdict = "better" if lower > 0 else "worse" if upper < 0 else "no significant difference"
            row.update(difference=difference, interval=[lower, upper], verdict=verdict)
        else:
            row.update(difference=None, interval=None, verdict="not enough ratings")
        comparisons.append(row)
    return {
        "versions": overall,
        "bucket": bucket,
        "over_time": over_time,
        "ab": {"baseline": chosen, "interval": AB_INTERVAL, "comparisons": comparisons},
    }


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rate(summary: dict[str, Any]) -> str:
    if summary["thumbs_up_rate"] is None:
        return "-"
    low, high = summary["thumbs_up_interval"]
    return f"{summary['thumbs_up_rate']:.1%} [{low:.1%}, {high:.1%}]"


def report_markdown(report: dict[str, Any], figures: list[str]) -> str:
    lines = [
        "# Monitoring report",
        "",
        f"Store: `{report['db']}`. Answers: {report['answers']} from {report['first']} to {report['last']} (UTC)"
        + (f"; window: {report['window']}" if report["window"] else "")
        + ".",
        "",
        "## Versions",
        "",
        "| version | answers | rated | thumbs up [Wilson 95%] | p50 ms | p90 ms | p99 ms | ms/token p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for version, s in report["versions"].items():
        lines.append(
            f"| {version} | {s['answers']} | {s['rated']} | {_rate(s)} | {_number(s['latency_ms_p50'])} "
            f"| {_number(s['latency_ms_p90'])} | {_number(s['latency_ms_p99'])} | {_number(s['ms_per_token_p50'])} |"
        )
    ab = report["ab"]
    lines += ["", "## A/B result", "", f"Thumbs-up rate minus the baseline's ({ab['baseline']}); {ab['interval']}.", ""]
    if not ab["comparisons"]:
        lines.append("One version only: nothing to compare.")
    for row in ab["comparisons"]:
        if row["difference"] is None:
            lines.append(f"- {row['version']} vs {row['baseline']}: {row['verdict']}")
            continue
        low, high = row["interval"]
        lines.append(
            f"- {row['version']} vs {row['baseline']}: {row['difference']:+.1%} [{low:+.1%}, {high:+.1%}] "
            f"({row['rated']} vs {row['baseline_rated']} rated answers): {row['verdict']}"
        )
    lines += ["", f"## Over time (per {report['bucket']})", ""]
    lines += [
        "| version | bucket | answers | rated | thumbs up | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for version, buckets in report["over_time"].items():
        for name, s in buckets.items():
            rate = "-" if s["thumbs_up_rate"] is None else f"{s['thumbs_up_rate']:.1%}"
            lines.append(
                f"| {version} | {name} | {s['answers']} | {s['rated']} | {rate} | {_number(s['latency_ms_p50'])} "
                f"| {_number(s['latency_ms_p90'])} | {_number(s['latency_ms_p99'])} |"
            )
    drift = report.get("drift")
    lines += ["", "## Prompt drift", ""]
    if drift is None:
        lines.append("No training data given (`--training_data`): no drift figures.")
    else:
        lines += drift_markdown(drift)
    lines += ["", "## Figures", "", *(f"![{Path(name).stem}]({name})" for name in figures), ""]
    return "\n".join(lines)


def drift_markdown(drift: dict[str, Any]) -> list[str]:
    served, training = drift["length"]["served"], drift["length"]["training"]
    lines = [
        f"Prompts read: {drift['prompts']} of {drift['answers']} answers (a prompt is stored only when conversations "
        f"are logged or feedback named the answer); training prompts: {drift['training_prompts']} from "
        f"`{drift['training_data']}`.",
        "",
    ]
    if not drift["prompts"]:
        return [*lines, "No prompt to compare."]
    lines += [
        "| prompt length (words) | mean | p50 | p90 |",
        "|---|---|---|---|",
        f"| served | {_number(served['mean'])} | {_number(served['p50'])} | {_number(served['p90'])} |",
        f"| training | {_number(training['mean'])} | {_number(training['p50'])} | {_number(training['p90'])} |",
        "",
        f"Length distributions differ by a Kolmogorov-Smirnov distance of {drift['length']['ks']:.3f}.",
        "",
        "| language | served | training |",
        "|---|---|---|",
    ]
    mix = drift["languages"]
    for language in sorted(set(mix["served"]) | set(mix["training"])):
        lines.append(f"| {language} | {mix['served'].get(language, 0):.1%} | {mix['training'].get(language, 0):.1%} |")
    novel = drift["coverage"]
    share = "-" if novel["uncovered_share"] is None else f"{novel['uncovered_share']:.1%}"
    lines += [
        "",
        f"Language mixes differ by a total variation distance of {mix['total_variation']:.3f}.",
        "",
        f"Prompts none of whose word {novel['n']}-grams occur in the training data: {novel['uncovered']} of "
        f"{novel['eligible']} ({share}); prompts shorter than {novel['n']} words, not counted: {novel['too_short']}.",
    ]
    return lines
