"""The evaluate stage's judging: every model's answers graded by an LLM judge (1-10, MT-bench's single grading) and
compared with the first model's (pairwise, both orders), beside the reward model's win rate -- one `Comparison`
per judge and model, one row per answered turn in the report.

    judge = load_judge(args)                 # before any model is loaded: a server is reached, prompts are read
    ... every model answers (suite.evaluate_model) ...
    add_reward_comparisons(results)          # the reward model's win rate over the first model, with its interval
    add_judgments(results, inputs.data, judge, output_dir)   # judge_score, judge_win_rate, judgments.jsonl
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llm_recipes.configs import is_planned, looks_local
from llm_recipes.errors import UserError
from llm_recipes.evaluation.config import EvaluateArguments
from llm_recipes.evaluation.conversations import Conversation, Unit, conversations_from_prompts, units_of
from llm_recipes.evaluation.data import EvalData
from llm_recipes.evaluation.judge_clients import is_url, judge_client
from llm_recipes.evaluation.judges import (
    ChatClient,
    JudgePrompts,
    UnparsedBudget,
    compare_scores,
    grade_answers,
    judge_pairs,
    mean_score,
)
from llm_recipes.evaluation.loading import check_model_folder, model_kind
from llm_recipes.evaluation.report import ModelResult

JUDGMENTS = "judgments.jsonl"  # every judge call, its raw output and verdict, in the output folder


@dataclass
class Judge:
    client: ChatClient
    prompts: JudgePrompts
    modes: list[str]
    budget: UnparsedBudget = field(default_factory=UnparsedBudget)

    def settings(self) -> dict[str, Any]:
        """What the report and eval_results.json say about the judge (never a key)."""
        return {
            "model": self.client.name,
            "modes": self.modes,
            "prompts": self.prompts.sources,
            "max_unparsed": self.budget.limit,
        }


def check_judge_arguments(args: EvaluateArguments, models: int) -> None:
    """The judge fields, without loading or reaching anything; UserError, one line."""
    wanted = set(args.metrics or [])
    if not args.judge_model:
        if "judge" in wanted:
            raise UserError("metrics: judge needs judge_model (a chat model folder or a server URL)")
        if args.judge_prompts:
            raise UserError("judge_prompts needs judge_model (a chat model folder or a server URL)")
        return
    if not args.dataset_path:
        raise UserError("judge_model needs dataset_path: the prompts the models answer and the judge grades")
    if args.metrics and "judge" not in wanted:
        raise UserError("judge_model is set but metrics leaves judge out: add judge to metrics, or drop judge_model")
    if is_url(args.judge_model):
        if not urlparse(args.judge_model).netloc:
            raise UserError(f"judge_model: {args.judge_model} has no host (e.g. http://127.0.0.1:8000)")
        if args.judge_api_key_env and not os.environ.get(args.judge_api_key_env):
            raise UserError(f"judge_api_key_env: the environment variable {args.judge_api_key_env} is not set")
    else:
        if args.judge_api_model or args.judge_api_key_env:
            raise UserError("judge_api_model and judge_api_key_env are for a judge server URL, not a model folder")
        check_model_folder(args.judge_model, "judge_model")
        if looks_local(args.judge_model) and not is_planned(args.judge_model):
            if model_kind(args.judge_model) != "causal_lm":
                raise UserError(f"judge_model: {args.judge_model} is a classifier; a judge is a chat model")
    if not args.judge_modes:
        raise UserError("judge_modes: name single, pairwise or both")
    if args.judge_modes == ["pairwise"] and models < 2:
        raise UserError("judge_modes: pairwise compares each model with the first; list two models or more")
    JudgePrompts.load(args.judge_prompts)


def load_judge(args: EvaluateArguments) -> Judge | None:
    """The judge the config names: its prompts read, a server reached (a local model loads when first asked)."""
    if not args.judge_model:
        return None
    client = judge_client(
        args.judge_model,
        api_model=args.judge_api_model,
        api_key_env=args.judge_api_key_env,
        max_new_tokens=args.judge_max_new_tokens,
        timeout=args.judge_timeout,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    return Judge(
        client, JudgePrompts.load(args.judge_prompts), list(args.judge_modes), UnparsedBudget(args.judge_max_unparsed)
    )


# ------------------------------------------------------------------------------------------------------------
# Answers as judged units


def conversations_of(data: EvalData) -> list[Conversation]:
    return data.conversations if data.prompt_only else conversations_from_prompts(data.prompts)


def model_units(result: ModelResult, data: EvalData) -> list[Unit] | None:
    """A model's answered turns: every turn of prompt-only data, the one answer per prompt of data with
    references; None when the model answered nothing (a classifier, no generation asked)."""
    if "answers" in result.details:
        answers = result.details["answers"]
    elif "generations" in result.details:
        answers = [[generation] for generation in result.details["generations"]]
    else:
        return None
    return units_of(conversations_of(data), answers)


def answer_rows(data: EvalData, units: Sequence[Unit], rewards: Sequence[float] | None) -> list[dict[str, Any]]:
    """One row per answered turn for the report: which prompt, the question, the answer (and its reward)."""
    conversations = conversations_of(data)
    rows = []
    for index, unit in enumerate(units):
        conversation = conversations[unit.conversation]
        row = {
            "prompt": unit.conversation + 1,
            "id": conversation.id,
            "category": conversation.category,
            "turn": unit.turn + 1,
            "question": unit.question,
            "answer": unit.answer,
        }
        if rewards is not None:
            row["reward"] = rewards[index]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------------
# Comparisons


def add_reward_comparisons(results: Sequence[ModelResult]) -> None:
    """Each model's win rate over the first by reward (ties: equal scores, counted half), with its interval."""
    baseline = results[0]
    if baseline.reward_scores is None:
        return
    for result in results[1:]:
        if result.reward_scores is None:
            continue
        comparison = compare_scores(
            result.reward_scores,
            baseline.reward_scores,
            judge="reward model",
            model=result.path,
            baseline=baseline.path,
        )
        result.metrics["win_rate"] = comparison.rate
        result.comparisons.append(comparison.as_dict())
        for row, mine, theirs in zip(result.answers, result.reward_scores, baseline.reward_scores, strict=False):
            row["reward_vs_first"] = "win" if mine > theirs else "loss" if mine < theirs else "tie"


def add_judgments(
    results: Sequence[ModelResult], data: EvalData | None, judge: Judge | None, output_dir: str | Path | None
) -> Path | None:
    """The LLM judge over every model's answers: `judge_score` (mean 1-10 rating), `judge_win_rate` over the first
    model (position-swapped pairs), per-turn scores and outcomes in the models' answer rows, and every judge call in
    judgments.jsonl. A judge output without a verdict stops the run (UserError naming the prompt), unless
    judge_max_unparsed allows it. `output_dir` None: no file."""
    if judge is None or data is None:
        return None
    units = {result.path: model_units(result, data) for result in results}
    answered = [result for result in results if units[result.path] is not None]
    if not answered:
        raise UserError("judge_model: no model answered the prompts (only causal language models answer)")
    conversations = conversations_of(data)

    def where(unit: Unit) -> str:
        return f"{conversations[unit.conversation].label(unit.conversation)}, turn {unit.turn + 1}"

    records: list[dict[str, Any]] = []
    try:
        for result in answered:
            if not result.answers:
                result.answers = answer_rows(data, units[result.path], result.reward_scores)
            if "single" in judge.modes:
                graded = grade_answers(
                    judge.client, judge.prompts, units[result.path], model=result.path, where=where, budget=judge.budget
                )
                for row, judgment in zip(result.answers, graded, strict=True):
                    row["judge_score"] = judgment.score
                score = mean_score(graded)
                if score is not None:
                    result.metrics["judge_score"] = score
                result.details["judge_unparsed"] = sum(j.score is None for j in graded)
                records += [{"mode": "single", **asdict(judgment)} for judgment in graded]
        baseline = answered[0]
        if "pairwise" in judge.modes and baseline is results[0]:
            for result in answered[1:]:
                comparison, pairs = judge_pairs(
                    judge.client,
                    judge.prompts,
                    units[result.path],
                    units[baseline.path],
                    model=result.path,
                    baseline=baseline.path,
                    where=where,
                    budget=judge.budget,
                )
                if comparison.rate is not None:
                    result.metrics["judge_win_rate"] = comparison.rate
                result.comparisons.append(comparison.as_dict())
                for row, pair in zip(result.answers, pairs, strict=True):
                    row["judge_vs_first"] = pair.outcome
                records += [{"mode": "pairwise", **asdict(pair)} for pair in pairs]
    finally:
        judge.client.close()
        # what the judge said so far, also when it stopped the run
        path = write_judgments(records, output_dir) if output_dir is not None else None
    return path


def write_judgments(records: Sequence[dict[str, Any]], output_dir: str | Path) -> Path:
    path = Path(output_dir) / JUDGMENTS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            record = {**record, "conversation": record["conversation"] + 1, "turn": record["turn"] + 1}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
