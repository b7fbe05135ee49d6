"""Judging answers without references: an LLM judge (the MT-bench / AlpacaEval protocol) and the win rate both
judges report.

* Single grading: the judge reads the question (for a later turn: the whole conversation) and one answer, explains,
  and rates it 1-10 as ``[[7]]``. A model's judge score is the mean rating of its answers.
* Pairwise: the judge reads a model's answer and the baseline's (the first model's) to the same turn and says
  ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie). Each pair is judged twice, once in each order, to cancel the judges'
  known preference for the first position: the same winner both times is a win (or loss), a tie both times a tie,
  and verdicts that disagree a tie.
* The verdict is the *last* ``[[...]]`` in the judge's output (the prompts ask for the verdict after the
  explanation); a rating outside 1-10 is no verdict.
* Win rate (one definition, for the reward model and the LLM judge): (wins + ties / 2) / judged, with a 95% Wilson
  score interval over the judged turns, a tie counted as half a success. Wilson stays inside [0, 1] and is sound
  for the few dozen prompts of an MT-bench-sized set; ties make it conservative (a tie varies less than a coin).

A judge output without a verdict is an error naming the prompt and quoting the output, unless
`judge_max_unparsed` allows that many: those answers are then left out of the score and the win rate and counted
as unparsed in the report. The prompts are text files (`judge_prompts/`); a folder of the user's own replaces any
of them by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llm_recipes.errors import UserError
from llm_recipes.evaluation.conversations import Message, Unit

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "judge_prompts"
# prompt file (name.txt) -> the placeholders it must hold
TEMPLATES: dict[str, tuple[str, ...]] = {
    "single": ("question", "answer"),
    "single_multi_turn": ("conversation",),
    "pairwise": ("question", "answer_a", "answer_b"),
    "pairwise_multi_turn": ("conversation_a", "conversation_b"),
}
SCORE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
Z_95 = 1.959964  # the normal quantile of a two-sided 95% interval
QUOTE_CHARS = 160  # how much of an unparsable judge output an error quotes


class ChatClient(Protocol):
    """What judges talk to: a local chat model or an OpenAI-compatible server (`judge_clients`)."""

    name: str

    def complete(self, conversations: Sequence[list[Message]]) -> list[str]: ...


# ------------------------------------------------------------------------------------------------------------
# Prompts


@dataclass
class JudgePrompts:
    templates: dict[str, str]
    sources: dict[str, str]  # prompt name -> the file it came from

    @classmethod
    def load(cls, folder: str | None = None) -> JudgePrompts:
        """The shipped prompts, each replaced by `folder`'s file of the same name (single.txt, pairwise.txt, ...)."""
        files = {name: DEFAULT_PROMPTS / f"{name}.txt" for name in TEMPLATES}
        if folder:
            own = Path(folder).expanduser()
            if not own.is_dir():
                raise UserError(f"judge_prompts: folder not found: {folder}")
            texts = sorted(own.glob("*.txt"))
            unknown = [path.name for path in texts if path.stem not in TEMPLATES]
            if unknown or not texts:
                names = ", ".join(f"{name}.txt" for name in TEMPLATES)
                found = f"{', '.join(unknown)} is not one of them" if unknown else "it has none"
                raise UserError(f"judge_prompts: {folder} may hold {names}; {found}")
            files.update({path.stem: path for path in texts})
        templates = {}
        for name, path in files.items():
            text = path.read_text(encoding="utf-8")
            missing = [key for key in TEMPLATES[name] if f"{{{key}}}" not in text]
            if missing:
                raise UserError(f"judge_prompts: {path} lacks {', '.join(f'{{{key}}}' for key in missing)}")
            templates[name] = text
        return cls(templates, {name: str(path) for name, path in files.items()})

    def render(self, name: str, **values: str) -> list[Message]:
        """The template with its placeholders filled in one pass (an answer that contains "{answer_b}" stays as
        it is), as the judge's one user message."""
        keys = "|".join(TEMPLATES[name])
        text = re.sub(r"\{(" + keys + r")\}", lambda match: values[match.group(1)], self.templates[name])
        return [{"role": "user", "content": text}]

    def single(self, unit: Unit) -> list[Message]:
        if unit.multi_turn:
            return self.render("single_multi_turn", conversation=transcript(unit))
        return self.render("single", question=unit.question, answer=unit.answer)

    def pairwise(self, a: Unit, b: Unit) -> list[Message]:
        if a.multi_turn:
            return self.render("pairwise_multi_turn", conversation_a=transcript(a), conversation_b=transcript(b))
        return self.render("pairwise", question=a.question, answer_a=a.answer, answer_b=b.answer)


def transcript(unit: Unit) -> str:
    """A unit's conversation up to and including its answer, one block per turn."""
    messages = [
        *unit.history,
        {"role": "user", "content": unit.question},
        {"role": "assistant", "content": unit.answer},
    ]
    return "\n\n".join(f"### {message['role'].capitalize()}:\n{message['content']}" for message in messages)


# ------------------------------------------------------------------------------------------------------------
# Verdicts


def parse_score(text: str) -> float | None:
    """The last [[n]] rating in a judge's output, when it is within 1-10."""
    found = SCORE.findall(text or "")
    if not found:
        return None
    score = float(found[-1])
    return score if 1 <= score <= 10 else None


def parse_verdict(text: str) -> str | None:
    """The last [[A]] / [[B]] / [[C]] in a judge's output."""
    found = VERDICT.findall(text or "")
    return found[-1] if found else None


def swapped_outcome(model_first: str, baseline_first: str) -> str:
    """win / loss / tie of the model, from its pair judged with the model as A (`model_first`) and as B: the same
    result in both orders stands, anything else is a tie."""
    as_a = {"A": "win", "B": "loss", "C": "tie"}[model_first]
    as_b = {"A": "loss", "B": "win", "C": "tie"}[baseline_first]
    return as_a if as_a == as_b else "tie"


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n."""
    if n <= 0:
        raise UserError("win rate of no judged prompts")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


_COUNT = {"win": "wins", "tie": "ties", "loss": "losses"}


@dataclass
class Comparison:
    """A model against the baseline under one judge: wins, ties and losses over the judged turns."""

    judge: str  # "reward model" or "LLM judge"
    model: str
    baseline: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    unparsed: int = 0  # pairs without a verdict, left out

    @property
    def judged(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.wins + self.ties / 2, self.judged) if self.judged else None

    def add(self, outcome: str | None) -> None:
        """Count one outcome: win, tie, loss, or None (no verdict)."""
        name = "unparsed" if outcome is None else _COUNT[outcome]
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval or (None, None)
        return {
            "judge": self.judge,
            "model": self.model,
            "baseline": self.baseline,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "unparsed": self.unparsed,
            "win_rate": self.rate,
            "ci95": [low, high],
        }


def compare_scores(
    scores: Sequence[float], baseline_scores: Sequence[float], *, judge: str, model: str, baseline: str
) -> Comparison:
    """A Comparison from paired scores (the reward model's): higher wins, equal ties."""
    if len(scores) != len(baseline_scores):
        raise UserError(f"win rate needs paired scores: {len(scores)} vs {len(baseline_scores)}")
    comparison = Comparison(judge, model, baseline)
    for mine, theirs in zip(scores, baseline_scores, strict=True):
        comparison.add("win" if mine > theirs else "loss" if mine < theirs else "tie")
    return comparison


# ------------------------------------------------------------------------------------------------------------
# Running a judge


@dataclass
class UnparsedBudget:
    """Judge outputs without a verdict: none allowed by default (the first is an error), or up to `limit`."""

    limit: int = 0
    seen: list[str] = field(default_factory=list)

    def note(self, what: str, where: str, output: str) -> None:
        self.seen.append(where)
        if len(self.seen) > self.limit:
            quote = " ".join((output or "").split())
            quote = quote if len(quote) <= QUOTE_CHARS else quote[: QUOTE_CHARS - 1] + "…"
            quote = f'"{quote}"' if quote else "nothing (an empty output)"
            hint = "use a judge model that follows the prompt, or set judge_max_unparsed to leave such answers unjudged"
            if self.limit:
                hint = f"{len(self.seen)} outputs without a verdict, more than judge_max_unparsed ({self.limit}) allows"
            raise UserError(f"judge: no {what} in the judge's output for {where}: {quote} -- {hint}")


@dataclass
class Judgment:
    """One single grading: a model's answer to one turn, its rating (None: unparsed) and what the judge said."""

    model: str
    conversation: int
    turn: int
    score: float | None
    output: str


@dataclass
class PairJudgment:
    """One position-swapped pair: the verdicts with the model as A and as B, and the combined outcome."""

    model: str
    baseline: str
    conversation: int
    turn: int
    model_first: str | None
    baseline_first: str | None
    outcome: str | None
    outputs: tuple[str, str]


def grade_answers(
    client: ChatClient,
    prompts: JudgePrompts,
    units: Sequence[Unit],
    *,
    model: str,
    where: Callable[[Unit], str],
    budget: UnparsedBudget,
) -> list[Judgment]:
    """The judge's 1-10 rating of every answer of a model."""
    outputs = client.complete([prompts.single(unit) for unit in units])
    judgments = []
    for unit, output in zip(units, outputs, strict=True):
        score = parse_score(output)
        if score is None:
            budget.note("rating [[1]]..[[10]]", f"{where(unit)}, model {model}", output)
        judgments.append(Judgment(model, unit.conversation, unit.turn, score, output))
    return judgments


def judge_pairs(
    client: ChatClient,
    prompts: JudgePrompts,
    units: Sequence[Unit],
    baseline_units: Sequence[Unit],
    *,
    model: str,
    baseline: str,
    where: Callable[[Unit], str],
    budget: UnparsedBudget,
) -> tuple[Comparison, list[PairJudgment]]:
    """Every turn of a model against the baseline's same turn, judged in both orders."""
    if [(u.conversation, u.turn) for u in units] != [(u.conversation, u.turn) for u in baseline_units]:
        raise UserError(f"judge: {model} and {baseline} answered different turns")
    requests = []
    for mine, theirs in zip(units, baseline_units, strict=True):
        requests += [prompts.pairwise(mine, theirs), prompts.pairwise(theirs, mine)]
    outputs = client.complete(requests)
    comparison, judgments = Comparison("LLM judge", model, baseline), []
    for index, unit in enumerate(units):
        first, second = outputs[2 * index], outputs[2 * index + 1]
        verdicts = [parse_verdict(first), parse_verdict(second)]
        for verdict, output, order in zip(verdicts, (first, second), ("model as A", "model as B"), strict=True):
            if verdict is None:
                budget.note("verdict [[A]]/[[B]]/[[C]]", f"{where(unit)}, {model} vs {baseline} ({order})", output)
        outcome = swapped_outcome(*verdicts) if None not in verdicts else None
        comparison.add(outcome)
        judgments.append(
            PairJudgment(model, baseline, unit.conversation, unit.turn, *verdicts, outcome, (first, second))
        )
    return comparison, judgments


def mean_score(judgments: Sequence[Judgment]) -> float | None:
    scores = [j.score for j in judgments if j.score is not None]
    return sum(scores) / len(scores) if scores else None
