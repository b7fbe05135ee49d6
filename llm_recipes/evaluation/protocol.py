"""The one evaluation protocol: every model -- pretrained, SFT, RL, distilled, quantized, pruned -- measured the same
way on the same held-out data, so a figure means one thing in every row of every table.

Why a module of its own: the evaluate stage, each compression report and the pipeline table used to measure on
their own ("perplexity" was the corpus test split in one row, SFT training rows in another, labelled tokens only in
a third), so a pruned model seemed to beat its source. Now a `ProtocolSpec` (a YAML file, e.g.
configs/demo/protocol.yaml, named by the `protocol:` field of evaluate, distill, quantize and prune) says once what
every model is measured on, and `measure` computes each measure by its one definition in `MEASURES`, which reports
print once under their tables. Measure names are fixed: two models measured on one spec have the same names.

    corpus_perplexity, corpus_bits_per_byte   the held-out corpus, each text whole, sliding window (perplexity.py)
    <task>/exact_match                        greedy answers equal to the references (generation.py)
    <task>/true_reward                        the task's own reward function on greedy answers (no model involved)
    <task>/share                              share of greedy answers a check function flags (e.g. wrong animal)
    <task>/chat_loss                          NLL per assistant-turn token of held-out chats (what SFT trains)
    reward_model_score                        the reward model's mean score of a task's greedy answers
    ms_per_token, size_bytes, parameters      latency per generated token, size on disk, parameters (footprint.py)

Greedy and sampled answers to a fixed list of prompts are kept beside the measures (`ProtocolResult.samples`), so a
figure can be checked against what the model actually says. The pieces are the evaluation modules' own
(perplexity, generation, `rewards.score_responses`, footprint); the colour task's true reward is the task's own
reward function (`llm_recipes.data.synthetic:synthetic_reward`), called as the RL trainers call it.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from llm_recipes.compress.distill import IGNORE_INDEX, PaddedRowsCollator, encode_chat
from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.loading import load_standard
from llm_recipes.data.preferences import to_prompt_column
from llm_recipes.errors import UserError
from llm_recipes.evaluation.data import load_eval_data
from llm_recipes.evaluation.footprint import generation_ms_per_token, model_device, size_on_disk
from llm_recipes.evaluation.generation import build_generation_config, generate_responses, generation_metrics
from llm_recipes.evaluation.loading import load_model, load_tokenizer_for
from llm_recipes.evaluation.protocol_spec import (
    FUNCTION_KINDS,
    GENERATIVE_KINDS,
    MEASURES,
    TASK_KINDS,
    CorpusSpec,
    LatencySpec,
    Measure,
    ProtocolSpec,
    RewardModelSpec,
    SamplesSpec,
    TaskSpec,
    check_protocol_paths,
    check_spec,
    format_measure,
    measure_kind,
    measure_title,
    read_protocol,
    spec_from_dict,
)
from llm_recipes.evaluation.sliding_window import perplexity
from llm_recipes.models.loading import count_parameters
from llm_recipes.rl.rewards import load_reward_model, reward_function_from_path, score_responses

__all__ = [
    "FUNCTION_KINDS",
    "GENERATIVE_KINDS",
    "MEASURES",
    "TASK_KINDS",
    "CorpusSpec",
    "LatencySpec",
    "Measure",
    "Protocol",
    "ProtocolResult",
    "ProtocolSpec",
    "RewardModelSpec",
    "SamplesSpec",
    "TaskSpec",
    "chat_loss",
    "check_protocol_paths",
    "check_spec",
    "format_measure",
    "measure",
    "measure_kind",
    "measure_title",
    "protocol_header",
    "read_protocol",
    "spec_from_dict",
]

# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class ProtocolResult:
    model: str
    protocol: str  # the spec's fingerprint
    measures: dict[str, float | None]  # every name of the spec's measure_names(), None where it could not run
    samples: list[dict[str, str]] = field(default_factory=list)  # prompt, greedy, sampled
    answers: dict[str, list[str]] = field(default_factory=dict)  # task -> greedy answers, in the data's order
    details: dict[str, Any] = field(default_factory=dict)  # counts behind the measures, latency device, notes

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ProtocolResult:
        return cls(**{f.name: document[f.name] for f in dataclasses.fields(cls) if f.name in document})


def protocol_header(spec: ProtocolSpec) -> dict[str, Any]:
    """What a results file records about the protocol: where it came from, its fingerprint, its definitions."""
    return {
        "source": spec.source,
        "fingerprint": spec.fingerprint(),
        "measures": spec.measure_names(),
        "definitions": spec.definitions(),
        "spec": spec.as_dict(),
    }


# --------------------------------------------------------------------------------------------------------------
# Measuring


@torch.no_grad()
def chat_loss(model: Any, tokenizer: Any, chats: Sequence[list[dict[str, str]]], *, batch_size: int = 16):
    """(mean negative log-likelihood per assistant-turn token in nats, tokens scored) of `chats` under the chat
    template; (None, 0) when the template marks no assistant tokens ({% generation %})."""
    limit = getattr(model.config, "max_position_embeddings", None) or 1_000_000
    rows = [encode_chat(tokenizer, list(chat), assistant_only=True) for chat in chats]
    rows = [{"input_ids": row["input_ids"][:limit], "labels": row["labels"][:limit]} for row in rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    collate = PaddedRowsCollator(pad_token_id=pad_id, pad_to_multiple_of=None)
    device = model_device(model)
    total, tokens = 0.0, 0
    for begin in range(0, len(rows), batch_size):
        batch = {key: value.to(device) for key, value in collate(rows[begin : begin + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        total += float(F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="sum"))
        tokens += int((labels != IGNORE_INDEX).sum())
    return (total / tokens if tokens else None), tokens


@dataclass
class TaskData:
    spec: TaskSpec
    prompts: list[Any] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    chats: list[list[dict[str, str]]] = field(default_factory=list)


def _load_task(task: TaskSpec) -> TaskData:
    if task.kind == "exact_match":
        data = load_eval_data(task.path, data_format=task.data_format, split=task.split, max_samples=task.max_rows)
        if not data.has_references:
            raise UserError(f"task {task.name}: exact_match needs prompts with reference answers in {task.path}")
        return TaskData(task, data.prompts, data.references)
    if task.kind in FUNCTION_KINDS:
        prompts, _ = to_prompt_column(load_dataset_source(task.path, split=task.split), task.data_format)
        rows = prompts["prompt"][: task.max_rows] if task.max_rows else prompts["prompt"]
        return TaskData(task, list(rows))

    dataset, _ = load_standard(DatasetSpec(path=task.path, format=task.data_format, split=task.split))
    rows = list(dataset.select(range(min(task.max_rows or len(dataset), len(dataset)))))
    if "messages" in dataset.column_names:
        return TaskData(task, chats=[row["messages"] for row in rows])
    if "prompt" not in dataset.column_names:
        raise UserError(f"task {task.name}: chat_loss needs chats or prompt/completion rows in {task.path}")
    return TaskData(task, chats=[_as_chat(row["prompt"], row["completion"]) for row in rows])


def _as_chat(prompt: Any, completion: Any) -> list[dict[str, str]]:
    user = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    answer = [{"role": "assistant", "content": completion.strip()}] if isinstance(completion, str) else completion
    return [*user, *answer]


def _completions(prompts: Sequence[Any], answers: Sequence[str]) -> list[Any]:
    """Answers as TRL hands them to reward functions: a message list for conversational prompts."""
    return [
        answer if isinstance(prompt, str) else [{"role": "assistant", "content": answer}]
        for prompt, answer in zip(prompts, answers, strict=True)
    ]


class Protocol:
    """A spec with its data read once (before any model) and its reward model loaded once, measuring model after
    model: `Protocol(spec).measure(model, tokenizer, model_dir=...)`."""

    def __init__(self, spec: ProtocolSpec):
        self.spec = spec
        self.corpus_texts: list[str] | None = None
        self.tasks: dict[str, TaskData] = {}
        self._loaded = False
        self._reward: tuple[Any, Any] | None = None

    def load(self) -> Protocol:
        """Read the corpus and the tasks; a missing column or an empty file fails here, in one line."""
        if self._loaded:
            return self
        corpus = self.spec.corpus
        if corpus is not None and corpus.texts is not None:
            self.corpus_texts = [text for text in corpus.texts[: corpus.max_texts or None] if text]
        elif corpus is not None:
            data = load_eval_data(
                corpus.path,
                data_format=corpus.data_format,
                split=corpus.split,
                text_field=corpus.text_field,
                max_samples=corpus.max_texts,
            )
            self.corpus_texts = [text for text in data.texts if text]
        self.tasks = {task.name: _load_task(task) for task in self.spec.tasks}
        self._loaded = True
        return self

    def reward_model(self) -> tuple[Any, Any]:
        if self._reward is None:
            self._reward = load_reward_model(self.spec.reward_model.path, device=self.device())
        return self._reward

    def device(self) -> str:
        return self.spec.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def close(self) -> None:
        self._reward = None
        gc.collect()

    def measure(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        cannot_run: str | None = None,
    ) -> ProtocolResult:
        """Every measure of the spec for one model. `model_dir` is the folder it loads from (its size on disk);
        `cannot_run` (a reason) measures only what needs no forward pass."""
        self.load()
        result = ProtocolResult(
            model=name or (os.fspath(model_dir) if model_dir is not None else type(model).__name__),
            protocol=self.spec.fingerprint(),
            measures=dict.fromkeys(self.spec.measure_names()),
            details={"notes": []},
        )
        result.measures["parameters"] = count_parameters(model)[1]
        if model_dir is not None:
            result.measures["size_bytes"] = size_on_disk(model_dir)
        else:
            result.details["notes"].append("no model folder given: size on disk not measured")
        if cannot_run:
            result.details["notes"].append(cannot_run)
            return result
        was_training = model.training
        model.eval()
        try:
            self._corpus(model, tokenizer, result)
            self._tasks(model, tokenizer, result)
            self._reward_model_score(result)
            self._samples(model, tokenizer, result)
            latency = self.spec.latency
            result.measures["ms_per_token"] = generation_ms_per_token(
                model, tokenizer, prompt=latency.prompt, max_new_tokens=latency.max_new_tokens, repeats=latency.repeats
            )
            result.details["latency_device"] = str(model_device(model))
        finally:
            model.train(was_training)
        return result

    def _corpus(self, model: Any, tokenizer: Any, result: ProtocolResult) -> None:
        if not self.corpus_texts:
            return
        corpus = self.spec.corpus
        measured = perplexity(
            model,
            tokenizer,
            self.corpus_texts,
            context_length=corpus.context_length,
            stride=corpus.stride,
            batch_size=self.spec.batch_size,
        )
        result.measures["corpus_perplexity"] = measured.perplexity
        result.measures["corpus_bits_per_byte"] = measured.bits_per_byte
        result.details["corpus"] = measured.as_dict()

    def _tasks(self, model: Any, tokenizer: Any, result: ProtocolResult) -> None:
        greedy = build_generation_config(model, tokenizer, max_new_tokens=self.spec.max_new_tokens)
        answered: dict[tuple, list[str]] = {}
        for task in self.tasks.values():
            key = f"{task.spec.name}/{task.spec.kind}"
            if task.spec.kind == "chat_loss":
                try:
                    loss, tokens = chat_loss(model, tokenizer, task.chats, batch_size=self.spec.batch_size)
                except ValueError as err:  # transformers: no chat template to render the chats with
                    loss, tokens = None, 0
                    result.details["notes"].append(f"{key}: not measured ({str(err).splitlines()[0]})")
                result.measures[key] = loss
                result.details[key] = {"chats": len(task.chats), "assistant tokens": tokens}
                continue
            if task.spec.data_key() not in answered:
                answered[task.spec.data_key()] = generate_responses(
                    model, tokenizer, task.prompts, generation_config=greedy, batch_size=self.spec.batch_size
                )
            answers = result.answers[task.spec.name] = answered[task.spec.data_key()]
            if task.spec.kind == "exact_match":
                result.measures[key] = generation_metrics(answers, task.references, ["exact_match"])["exact_match"]
            else:
                reward = reward_function_from_path(task.spec.function)
                scores = reward(prompts=task.prompts, completions=_completions(task.prompts, answers))
                result.measures[key] = sum(scores) / len(scores)
            result.details[key] = {"prompts": len(task.prompts)}

    def _reward_model_score(self, result: ProtocolResult) -> None:
        task = self.spec.reward_task()
        if task is None:
            return
        scores = score_responses(
            *self.reward_model(),
            self.tasks[task.name].prompts,
            result.answers[task.name],
            batch_size=self.spec.batch_size,
        )
        result.measures["reward_model_score"] = sum(scores) / len(scores)

    def _samples(self, model: Any, tokenizer: Any, result: ProtocolResult) -> None:
        samples = self.spec.samples
        if not samples.prompts:
            return
        prompts = [[{"role": "user", "content": prompt}] for prompt in samples.prompts]
        greedy = build_generation_config(model, tokenizer, max_new_tokens=samples.max_new_tokens)
        sampling = build_generation_config(
            model,
            tokenizer,
            max_new_tokens=samples.max_new_tokens,
            overrides={"do_sample": True, "temperature": samples.temperature, "top_p": samples.top_p, "top_k": 0},
        )
        greedy_answers = generate_responses(model, tokenizer, prompts, generation_config=greedy)
        device = model_device(model)
        # a fixed seed, without moving the caller's random state (a stage may still be training)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(samples.seed)
            sampled_answers = generate_responses(model, tokenizer, prompts, generation_config=sampling)
        result.samples = [
            {"prompt": prompt, "greedy": greedy_answer, "sampled": sampled_answer}
            for prompt, greedy_answer, sampled_answer in zip(
                samples.prompts, greedy_answers, sampled_answers, strict=True
            )
        ]


def measure(
    model_or_dir: Any,
    tokenizer: Any | None,
    spec: ProtocolSpec | Protocol,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> ProtocolResult:
    """One model on the protocol. A folder (or Hub id) is loaded on the spec's device with its own tokenizer (when
    `tokenizer` is None); a model object is measured where it is (give `model_dir` for its size on disk)."""
    protocol = spec if isinstance(spec, Protocol) else Protocol(spec)
    if isinstance(model_or_dir, str | os.PathLike):
        path = os.fspath(model_or_dir)
        model = load_model(path, device=protocol.device())
        tokenizer = tokenizer or load_tokenizer_for(path)
        folder = path if os.path.isdir(os.path.expanduser(path)) else None
        try:
            return protocol.measure(model, tokenizer, model_dir=model_dir or folder, name=name or path)
        finally:
            del model
            gc.collect()
    return protocol.measure(model_or_dir, tokenizer, model_dir=model_dir, name=name)
