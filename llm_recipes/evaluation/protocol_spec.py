"""The evaluation protocol's spec and its measures' definitions: what every model is measured on (a YAML file, e.g.
configs/demo/protocol.yaml) and what each measure means. Measuring is `llm_recipes.evaluation.protocol`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs import check_dataset_path, load_yaml_config
from llm_recipes.errors import UserError, did_you_mean
from llm_recipes.evaluation.footprint import LATENCY_PROMPT
from llm_recipes.evaluation.loading import check_model_folder
from llm_recipes.rl.rewards import check_reward_function

TASK_KINDS = ("exact_match", "true_reward", "share", "chat_loss")
GENERATIVE_KINDS = ("exact_match", "true_reward", "share")  # answered by greedy generation (a reward model can score)
FUNCTION_KINDS = ("true_reward", "share")  # scored by the task's `function`


@dataclass(frozen=True)
class Measure:
    title: str  # column header (a task's measures are headed "<task> <title>")
    unit: str
    higher_is_better: bool | None  # None: neither (parameters)
    definition: str


# One definition per measure; a task kind's entry defines every `<task>/<kind>` measure
MEASURES: dict[str, Measure] = {
    "corpus_perplexity": Measure(
        "corpus ppl",
        "per token",
        False,
        "exp(total negative log-likelihood / tokens scored) over the held-out corpus: every text scored whole from "
        "its start token, in sliding windows so each token is scored once with context",
    ),
    "corpus_bits_per_byte": Measure(
        "bits/byte",
        "bits",
        False,
        "the same total negative log-likelihood in bits / UTF-8 bytes of the texts (comparable across tokenizers)",
    ),
    "exact_match": Measure(
        "exact match",
        "share",
        True,
        "share of the task's prompts whose greedy answer equals the reference answer (whitespace runs collapsed)",
    ),
    "true_reward": Measure(
        "true reward",
        "mean",
        True,
        "mean of the task's own reward function (code, no model) over the greedy answers to its prompts",
    ),
    "share": Measure(
        "share",
        "share",
        None,
        "share of the greedy answers to the task's prompts that the task's check function (code) flags",
    ),
    "chat_loss": Measure(
        "loss",
        "nats/token",
        False,
        "mean negative log-likelihood per assistant-turn token of the task's held-out chats, rendered with the "
        "model's chat template (the tokens SFT trains on)",
    ),
    "reward_model_score": Measure(
        "RM score",
        "mean",
        True,
        "mean score the reward model gives the greedy answers to a task's prompts (read as the reward stage trained "
        "it)",
    ),
    "ms_per_token": Measure(
        "ms/token",
        "ms",
        False,
        "median wall-clock milliseconds per generated token: greedy, batch 1, a fixed prompt, a fixed number of new "
        "tokens, after one warm-up run",
    ),
    "size_bytes": Measure(
        "size (bytes)", "bytes", False, "bytes of the *.safetensors files the model loads (an adapter's and its base's)"
    ),
    "parameters": Measure("parameters", "count", None, "parameters (tied weights once, 4-bit packed weights as two)"),
}


def measure_kind(name: str) -> str:
    """The MEASURES key defining a measure name (`arithmetic/exact_match` -> `exact_match`)."""
    return name.rsplit("/", 1)[-1]


def measure_title(name: str) -> str:
    title = MEASURES[measure_kind(name)].title
    return f"{name.rsplit('/', 1)[0]} {title}" if "/" in name else title


def format_measure(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if measure_kind(name) in ("size_bytes", "parameters"):
        return f"{int(value):,}"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


# --------------------------------------------------------------------------------------------------------------
# The spec


@dataclass
class CorpusSpec:
    """Held-out text for perplexity and bits per byte (any format the stages read; a chat's turns are joined)."""

    path: str | None = None
    split: str = "test"
    data_format: str = "auto"
    text_field: str = "text"
    max_texts: int | None = 64
    context_length: int | None = None  # window in tokens (default: the model's maximum positions, at most 2048)
    stride: int | None = None  # default: half the window
    texts: list[str] | None = field(default=None, repr=False, metadata={"python_only": True})  # instead of path
    label: str | None = field(default=None, metadata={"python_only": True})  # how reports name in-memory texts

    def describe(self) -> str:
        source = f"{self.path} ({self.split})" if self.path else (self.label or "in-memory texts")
        limit = f", first {self.max_texts} texts" if self.max_texts else ""
        window = f"{self.context_length} tokens" if self.context_length else "the model's positions (<= 2048 tokens)"
        return f"{source}{limit}; windows of {window} moving by {self.stride or 'half a window'}"


@dataclass
class TaskSpec:
    """A held-out task: prompts with references (exact_match), prompts for a reward or check function (true_reward,
    share) or chats (chat_loss), in any format the stages read."""

    name: str = ""
    kind: str = ""
    path: str = ""
    split: str = "train"
    data_format: str = "auto"
    max_rows: int | None = 32
    function: str | None = None  # true_reward, share: module:function called as a TRL reward function
    higher_is_better: bool | None = None  # share: which way is good (shown in the definition)

    def describe(self) -> str:
        limit = f", first {self.max_rows} rows" if self.max_rows else ""
        function = f", function {self.function}" if self.function else ""
        return f"{self.path} ({self.split}{limit}{function})"

    def data_key(self) -> tuple[str, str, str, int | None]:
        """Tasks on the same prompts share one set of greedy answers."""
        return (self.path, self.split, self.data_format, self.max_rows)


@dataclass
class RewardModelSpec:
    path: str = ""
    task: str | None = None  # whose greedy answers it scores (default: the first true_reward task, else the first)


@dataclass
class SamplesSpec:
    """Fixed prompts (user turns) whose greedy and sampled answers are kept beside the measures."""

    prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 32
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


@dataclass
class LatencySpec:
    prompt: str = LATENCY_PROMPT
    max_new_tokens: int = 16
    repeats: int = 3


@dataclass
class ProtocolSpec:
    corpus: CorpusSpec | None = None
    tasks: list[TaskSpec] = field(default_factory=list)
    reward_model: RewardModelSpec | None = None
    samples: SamplesSpec = field(default_factory=SamplesSpec)
    latency: LatencySpec = field(default_factory=LatencySpec)
    max_new_tokens: int = 32  # longest greedy answer to a task prompt
    batch_size: int = 16
    device: str | None = None  # where models given as folders (and the reward model) load; default cuda if any
    source: str | None = field(default=None, compare=False)  # the YAML file it came from

    def measure_names(self) -> list[str]:
        """Every measure this spec gives, in table order; the same list for every model."""
        names = ["corpus_perplexity", "corpus_bits_per_byte"] if self.corpus else []
        names += [f"{task.name}/{task.kind}" for task in self.tasks]
        names += ["reward_model_score"] if self.reward_model else []
        return [*names, "ms_per_token", "size_bytes", "parameters"]

    def reward_task(self) -> TaskSpec | None:
        if self.reward_model is None:
            return None
        generative = [task for task in self.tasks if task.kind in GENERATIVE_KINDS]
        if self.reward_model.task:
            return next((task for task in generative if task.name == self.reward_model.task), None)
        return next((task for task in generative if task.kind == "true_reward"), generative[0] if generative else None)

    def as_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document.pop("source")
        if self.corpus is not None and self.corpus.texts is not None:
            texts = json.dumps(self.corpus.texts).encode("utf-8")
            document["corpus"]["texts"] = f"{len(self.corpus.texts)} texts, sha256 {hashlib.sha256(texts).hexdigest()}"
        return document

    def fingerprint(self) -> str:
        """Equal for equal specs: results with the same fingerprint were measured the same way."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:12]

    def definitions(self) -> dict[str, str]:
        """Each measure's definition, with the data and settings this spec gives it."""
        result = {}
        tasks = {f"{task.name}/{task.kind}": task for task in self.tasks}
        for name in self.measure_names():
            text = MEASURES[measure_kind(name)].definition
            if name.startswith("corpus_") and self.corpus:
                text += f"; on {self.corpus.describe()}"
            elif name in tasks:
                text += f"; on {tasks[name].describe()}"
                if tasks[name].kind in GENERATIVE_KINDS:
                    text += f", answers of at most {self.max_new_tokens} tokens"
            elif name == "reward_model_score":
                task = self.reward_task()
                text += f"; {self.reward_model.path} on the '{task.name if task else '?'}' task's answers"
            elif name == "ms_per_token":
                text += f"; {self.latency.max_new_tokens} new tokens, median of {self.latency.repeats} runs"
            better = MEASURES[measure_kind(name)].higher_is_better
            if measure_kind(name) == "share":
                better = tasks[name].higher_is_better
            result[name] = text + {True: "; higher is better", False: "; lower is better", None: ""}[better]
        return result


def _build(cls: type, raw: Any, where: str) -> Any:
    """A spec dataclass from a YAML mapping; an unknown key is one line naming the closest field."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of {cls.__name__} fields, got {raw!r}")
    known = [f.name for f in dataclasses.fields(cls) if f.init and not f.metadata.get("python_only")]
    for key in raw:
        if key not in known:
            raise UserError(f"{where}.{key}: unknown field{did_you_mean(str(key), known)}")
    return cls(**raw)


def spec_from_dict(raw: dict[str, Any], source: str | None = None) -> ProtocolSpec:
    where = source or "protocol"
    raw = dict(raw)
    corpus, tasks, reward = raw.pop("corpus", None), raw.pop("tasks", None) or [], raw.pop("reward_model", None)
    samples, latency = raw.pop("samples", None), raw.pop("latency", None)
    spec = _build(ProtocolSpec, raw, where)
    spec.source = source
    if corpus is not None:
        spec.corpus = _build(CorpusSpec, {"path": corpus} if isinstance(corpus, str) else corpus, f"{where}: corpus")
    if not isinstance(tasks, list):
        raise UserError(f"{where}: tasks must be a list of {{name, kind, path}} mappings")
    spec.tasks = [_build(TaskSpec, task, f"{where}: tasks[{index}]") for index, task in enumerate(tasks)]
    if reward is not None:
        raw_reward = {"path": reward} if isinstance(reward, str) else reward
        spec.reward_model = _build(RewardModelSpec, raw_reward, f"{where}: reward_model")
    if samples is not None:
        spec.samples = _build(SamplesSpec, {"prompts": samples} if isinstance(samples, list) else samples, "samples")
    if latency is not None:
        spec.latency = _build(LatencySpec, latency, f"{where}: latency")
    check_spec(spec)
    return spec


def read_protocol(path: str) -> ProtocolSpec:
    """The protocol a YAML file describes (configs/demo/protocol.yaml shows every field), checked for shape."""
    if not os.path.isfile(os.path.expanduser(path)):
        raise UserError(f"protocol: file not found: {path}")
    return spec_from_dict(load_yaml_config(os.path.expanduser(path)), path)


def check_spec(spec: ProtocolSpec) -> None:
    """Everything wrong in a spec that shows without reading data or weights; one line naming the field."""
    where = spec.source or "protocol"
    names = [task.name for task in spec.tasks]
    for index, task in enumerate(spec.tasks):
        at = f"{where}: tasks[{index}]"
        if not task.name or "/" in task.name:
            raise UserError(f"{at}.name: give each task a name without '/' (it heads the task's measures)")
        if task.kind not in TASK_KINDS:
            raise UserError(f"{at}.kind: '{task.kind}' is not one of {', '.join(TASK_KINDS)}")
        if not task.path:
            raise UserError(f"{at}.path: the task's held-out data file is required")
        if (task.kind in FUNCTION_KINDS) != bool(task.function):
            raise UserError(f"{at}.function: true_reward and share tasks need one (module:function), other kinds none")
        if task.max_rows is not None and task.max_rows < 1:
            raise UserError(f"{at}.max_rows: must be >= 1 (or null for all)")
    if len(set(names)) != len(names):
        raise UserError(f"{where}: task names must differ (they head the task's measures)")
    if spec.corpus is not None and not (spec.corpus.path or spec.corpus.texts):
        raise UserError(f"{where}: corpus.path is required (held-out text)")
    if spec.reward_model is not None:
        if not spec.reward_model.path:
            raise UserError(f"{where}: reward_model.path is required")
        if spec.reward_task() is None:
            wanted = f"'{spec.reward_model.task}'" if spec.reward_model.task else "an exact_match or true_reward task"
            raise UserError(f"{where}: reward_model scores answers to {wanted}: add it to tasks")
    for what, value in (("max_new_tokens", spec.max_new_tokens), ("batch_size", spec.batch_size)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: {what} must be an integer >= 1")
    if spec.latency.max_new_tokens < 1 or spec.latency.repeats < 1:
        raise UserError(f"{where}: latency.max_new_tokens and latency.repeats must be >= 1")
    if not all(isinstance(prompt, str) and prompt for prompt in spec.samples.prompts):
        raise UserError(f"{where}: samples.prompts must be a list of non-empty strings (user turns)")


def check_protocol_paths(spec: ProtocolSpec) -> None:
    """The config check of a stage with a protocol: data files and the reward model exist (or a pipeline stage
    before makes them), reward functions import."""
    where = spec.source or "protocol"
    if spec.corpus is not None and spec.corpus.path:
        check_dataset_path(spec.corpus.path, f"{where}: corpus")
    for task in spec.tasks:
        check_dataset_path(task.path, f"{where}: task {task.name}")
        if task.function:
            check_reward_function(task.function)
    if spec.reward_model is not None:
        check_model_folder(spec.reward_model.path, f"{where}: reward_model")
