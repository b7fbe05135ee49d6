"""Model cards and Hub pushes: one implementation for the export stage and for every training stage's
`push_to_hub`.

The card is huggingface_hub's `ModelCard`/`ModelCardData` (metadata, `model-index` eval results) and is checked
with huggingface_hub's own parser before anything is written. What we add is its content: every stage that
produced the model, found by following the stage manifests from the model folder back through the folders each
stage read (e.g. clean-corpus -> train-tokenizer -> pretrain -> sft -> export), with its configuration and
metrics; the evaluation stage's results; and a usage snippet for what the folder actually holds.

Pushing is `HfApi.create_repo` (private by default) + `create_branch` + `upload_folder`, once per stage, at its end
(the Trainer's own pushing is turned off). The token comes from `HF_TOKEN` (where a stage moves a config's
`hub_token` before anything is saved, llm_recipes.secrets) or the `hf auth login` store, and is never printed or
written: Hub errors are turned into one-line `UserError`s with any token text removed. Without a network the push
stops with a message saying the folder is complete and the exact command that uploads it later.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from llm_recipes.errors import UserError
from llm_recipes.manifest import SECRET_FIELDS, read_manifest
from llm_recipes.secrets import take_token

CARD_NAME = "README.md"
EVAL_RESULTS_NAME = "eval_results.json"
EVAL_REPORT_EXTRAS = ("eval_report.md", "plots")  # what the evaluation stage writes beside it for people to read
# Never uploaded: training checkpoints and logs, pickled training arguments (safetensors only), temporary files
PUSH_IGNORE = ["checkpoint-*", "runs/*", "*.tmp", ".*", "training_args.bin"]
EVAL_ENTRY_KEYS = ("task_type", "dataset_name", "dataset_type", "metric_type", "metric_value")
INPUT_MODEL_KEYS = ("model", "base_model")
INPUT_DATASET_KEYS = ("datasets", "dataset", "inputs")

DEFAULT_INTENDED_USE = (
    "{use}: research, experiments and as a starting point for further fine-tuning. Check the training data and the "
    "evaluation results below before relying on it for anything else."
)
DEFAULT_LIMITATIONS = (
    "The model knows only what its base model and the data listed below taught it; {errs}, and it has not been "
    "evaluated for safety. Small models and short training runs (see the training procedure) give results of "
    "limited quality."
)
# What a folder's model does, by the end of its architecture's name in config.json (or an adapter's PEFT task type):
# the Hub's pipeline tag, what the card calls the model, and its use
ARCHITECTURE_TASKS = {
    "ForCausalLM": "text-generation",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "fill-mask",
}
PEFT_TASKS = {
    "CAUSAL_LM": "text-generation",
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
    "QUESTION_ANS": "question-answering",
}
TASK_NAMES = {  # task -> (the model, its use)
    "text-generation": ("A causal language model", "Text generation"),
    "text-classification": ("A text classification model", "Text classification"),
    "token-classification": ("A token classification model", "Token classification (tagging)"),
    "question-answering": ("An extractive question answering model", "Extractive question answering"),
    "fill-mask": ("A masked language model", "Filling in masked words and fine-tuning for other tasks"),
    "reward": ("A reward model (one score for a prompt and its response)", "Scoring responses (RL, ranking)"),
}


# --------------------------------------------------------------------------------------------------------------
# Stage history from manifests


@dataclass
class StageRecord:
    """One stage that contributed to a model, as its manifest recorded it."""

    stage: str
    path: str
    inputs: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    versions: dict[str, str]
    local_inputs: set[str] = field(default_factory=set)  # inputs found on disk ("org/name" could be either)


def stage_history(model_path: str | Path) -> list[StageRecord]:
    """Every stage that produced the model in `model_path`, oldest first.

    Starts at the folder's manifest and follows each input (model, tokenizer, dataset ...) that is a local folder
    with a manifest of its own; a folder reached twice (a model and its tokenizer from the same place) counts once.
    """
    records: list[StageRecord] = []
    seen: set[Path] = set()

    def visit(path: str) -> None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            return
        key = folder.resolve()
        if key in seen:
            return
        seen.add(key)
        manifest = read_manifest(folder)
        if manifest is None:
            return
        local = set()
        for value in _input_values(manifest.get("inputs") or {}):
            located = locate_recorded_path(value, key)
            if located.exists():
                local.add(value)
                visit(str(located))
        records.append(
            StageRecord(
                stage=manifest.get("stage", "unknown"),
                path=str(path),
                inputs=manifest.get("inputs") or {},
                config=manifest.get("config") or {},
                metrics=manifest.get("metrics") or {},
                versions=manifest.get("versions") or {},
                local_inputs=local,
            )
        )

    visit(str(model_path))
    return records


def locate_recorded_path(path: str, recorded_in: Path) -> Path:
    """A relative path a stage recorded (in its manifest, or PEFT in adapter_config.json) is relative to where the
    stage ran, usually the project root: when it is not found from here, try it from each folder above the folder
    that recorded it. Returned unchanged when not found (it may be a Hub id)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for ancestor in Path(recorded_in).resolve().parents:
        if (ancestor / candidate).exists():
            return ancestor / candidate
    return candidate


def _input_values(inputs: dict[str, Any]) -> Iterable[str]:
    for value in inputs.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str):
                yield item


def _is_hub_id(value: str) -> bool:
    from llm_recipes.configs import looks_local
    from llm_recipes.modeling import preset_names

    return bool(value) and not looks_local(value) and value not in preset_names()


def hub_models(records: Sequence[StageRecord]) -> list[str]:
    """Hub model ids the stages started from, the most recent stage's first."""
    found = []
    for record in reversed(records):
        for key in INPUT_MODEL_KEYS:
            value = record.inputs.get(key)
            if isinstance(value, str) and _is_hub_id(value) and value not in record.local_inputs | set(found):
                found.append(value)
    return found


def hub_datasets(records: Sequence[StageRecord]) -> list[str]:
    """Hub dataset ids any stage read (local files cannot be linked from a card)."""
    found = []
    for record in records:
        for key in INPUT_DATASET_KEYS:
            value = record.inputs.get(key)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, str) and _is_hub_id(item) and item not in record.local_inputs | set(found):
                    found.append(item)
    return found


# --------------------------------------------------------------------------------------------------------------
# Evaluation results (the evaluation stage's eval_results.json)


@dataclass
class EvalReport:
    file: Path
    key: str  # the model's key in the file
    results: list[EvalResult]  # its model-index entries
    summary: dict[str, Any]  # its {"metrics": ..., "dataset": ...} entry


def eval_results_file(path: str | Path) -> Path:
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / EVAL_RESULTS_NAME
    if not file.is_file():
        raise UserError(f"eval_results_path: {path} is not an {EVAL_RESULTS_NAME} file or a folder holding one")
    return file


def read_eval_results(path: str | Path, model_path: str | Path) -> EvalReport:
    """The results `eval_results.json` holds for `model_path`, as huggingface_hub `EvalResult`s.

    Schema: {"models": {<path>: {"metrics": {...}, "dataset": {...}}}, "model_index": {<path>: [{"task_type",
    "dataset_name", "dataset_type", "dataset_split", "metric_type", "metric_name", "metric_value"}, ...]}}.
    A key matches when it names the same folder as `model_path`.
    """
    file = eval_results_file(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from None
    model_index = data.get("model_index") or {}
    models = data.get("models") or {}
    key = _matching_key([*model_index, *models], model_path)
    if key is None:
        known = ", ".join(sorted({*model_index, *models})) or "none"
        raise UserError(f"{file} has no results for {model_path} (it has results for: {known})")
    results = []
    for index, entry in enumerate(model_index.get(key) or []):
        missing = [name for name in EVAL_ENTRY_KEYS if entry.get(name) is None]
        if missing:
            raise UserError(f"{file}: model_index[{key!r}][{index}] lacks {', '.join(missing)}")
        results.append(
            EvalResult(
                task_type=entry["task_type"],
                dataset_type=entry["dataset_type"],
                dataset_name=entry["dataset_name"],
                metric_type=entry["metric_type"],
                metric_value=entry["metric_value"],
                task_name=entry.get("task_name"),
                dataset_split=entry.get("dataset_split"),
                dataset_config=entry.get("dataset_config"),
                dataset_revision=entry.get("dataset_revision"),
                metric_name=entry.get("metric_name"),
            )
        )
    return EvalReport(file=file, key=key, results=results, summary=models.get(key) or {})


def _matching_key(keys: Iterable[str], model_path: str | Path) -> str | None:
    """The key naming the same folder; else the only key with the same folder name (the evaluation ran from
    another directory, so its relative path differs)."""
    keys = list(dict.fromkeys(keys))
    wanted = Path(model_path).expanduser().resolve()
    for key in keys:
        if key == str(model_path) or Path(key).expanduser().resolve() == wanted:
            return key
    same_name = [key for key in keys if Path(key.rstrip("/")).name == wanted.name]
    return same_name[0] if len(same_name) == 1 else None


def copy_eval_results(path: str | Path, folder: Path) -> list[str]:
    """The evaluation report goes with the model: eval_results.json, and the evaluation stage's Markdown report
    with its plots when they sit beside it, copied into the folder that is pushed. Returns the names copied."""
    source = eval_results_file(path)
    shutil.copy2(source, folder / EVAL_RESULTS_NAME)
    copied = [EVAL_RESULTS_NAME]
    for name in EVAL_REPORT_EXTRAS:
        extra = source.parent / name
        if extra.is_file():
            shutil.copy2(extra, folder / name)
        elif extra.is_dir():
            shutil.copytree(extra, folder / name, dirs_exist_ok=True)
        else:
            continue
        copied.append(name)
    return copied


# --------------------------------------------------------------------------------------------------------------
# The model card


@dataclass
class CardOptions:
    """What the user says about the model; everything else on the card is read from the folder and manifests."""

    model_name: str | None = None
    license: str | None = None
    language: list[str] | None = None
    tags: list[str] | None = None
    datasets: list[str] | None = None
    base_model: str | None = None
    eval_results_path: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    extra_tags: list[str] = field(default_factory=list)  # added by the stage (e.g. quantization)


@dataclass
class FolderFacts:
    """What a model folder holds, read from its files."""

    kind: str  # "model" or "adapter"
    base_model: str | None
    adapter_method: str | None
    quantization: str | None
    chat: bool
    gguf_files: list[str]
    task: str = "text-generation"  # the Hub's pipeline tag
    reward_input: str | None = None  # a reward model's: how it reads a response ("conversational" or "text")
    custom_pipeline: bool = False  # config.json names a pipeline whose code is in the folder


def folder_facts(folder: Path) -> FolderFacts:
    from llm_recipes.export import ADAPTER_CONFIG, quantization_of, read_json

    adapter = read_json(folder / ADAPTER_CONFIG) if (folder / ADAPTER_CONFIG).is_file() else None
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    tokenizer_config = (
        read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    )
    chat = bool(tokenizer_config.get("chat_template")) or any(folder.glob("chat_template.*"))
    method = None
    if adapter is not None:
        method = "DoRA" if adapter.get("use_dora") else str(adapter.get("peft_type", "adapter")).replace("LORA", "LoRA")
    architectures = config.get("architectures") or [""]
    task = PEFT_TASKS.get(str((adapter or {}).get("task_type")))
    task = task or next((t for end, t in ARCHITECTURE_TASKS.items() if architectures[0].endswith(end)), None)
    return FolderFacts(
        kind="adapter" if adapter is not None else "model",
        base_model=adapter.get("base_model_name_or_path") if adapter else None,
        adapter_method=method,
        quantization=quantization_of(config),
        chat=chat,
        gguf_files=sorted(p.name for p in folder.glob("*.gguf")),
        task=task or "text-generation",
        reward_input=_reward_input(folder, config, task, chat),
        custom_pipeline=bool((config.get("custom_pipelines") or {}).get(task)),
    )


def build_model_card(
    folder: str | Path,
    model_id: str,
    options: CardOptions | None = None,
    *,
    evaluated_model: str | Path | None = None,
    stages: Sequence[StageRecord] | None = None,
) -> ModelCard:
    """The model card of the model (or adapter) in `folder`, to be loaded as `model_id` (a Hub id or a path).

    `evaluated_model` is the path the evaluation results were recorded under (default: `folder`); `stages`
    default to the manifest chain starting at `folder`.
    """
    folder = Path(folder)
    options = options or CardOptions()
    facts = folder_facts(folder)
    stages = list(stage_history(folder) if stages is None else stages)
    evaluation = (
        read_eval_results(options.eval_results_path, evaluated_model or folder) if options.eval_results_path else None
    )
    base_models = [options.base_model] if options.base_model else hub_models(stages)
    if facts.kind == "adapter" and facts.base_model and _is_hub_id(facts.base_model):
        base_models = [facts.base_model]
    base_model = base_models[0] if base_models else None
    datasets = list(dict.fromkeys([*(options.datasets or []), *hub_datasets(stages)]))
    model_name = options.model_name or model_id.rstrip("/").split("/")[-1]

    data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=datasets or None,
        license=options.license,
        language=options.language,
        library_name="peft" if facts.kind == "adapter" else "transformers",
        pipeline_tag=facts.task,
        tags=card_tags(stages, facts, [*(options.tags or []), *options.extra_tags]),
        eval_results=(evaluation.results or None) if evaluation else None,
    )
    card = ModelCard.from_template(
        data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        summary=_summary(facts, stages, base_model),
        usage=usage_snippet(model_id, facts),
        evaluation=_evaluation_section(evaluation),
        training=_training_section(stages),
        intended_use=options.intended_use or DEFAULT_INTENDED_USE.format(use=_task_name(facts)[1]),
        limitations=options.limitations or DEFAULT_LIMITATIONS.format(errs=_task_errors(facts)),
        versions=_versions(stages),
    )
    check_card(card)
    return card


def write_model_card(
    folder: str | Path,
    model_id: str,
    options: CardOptions | None = None,
    *,
    evaluated_model: str | Path | None = None,
) -> ModelCard:
    """Build the card, check it, and save it as the folder's README.md (the evaluation report copied beside it)."""
    folder = Path(folder)
    options = options or CardOptions()
    card = build_model_card(folder, model_id, options, evaluated_model=evaluated_model)
    if options.eval_results_path:
        copy_eval_results(options.eval_results_path, folder)
    card.save(folder / CARD_NAME)
    return card


def check_card(card: ModelCard) -> None:
    """huggingface_hub's own checks, offline: the card's text parses back into ModelCardData (YAML metadata,
    model-index -> eval results) and says what we put in it. The Hub re-validates the metadata on upload."""
    try:
        parsed = ModelCard(str(card))
    except ValueError as err:
        raise UserError(f"the model card does not validate: {str(err).splitlines()[0]}") from None
    expected = card.data.to_dict()
    if parsed.data.to_dict() != expected:
        raise UserError("the model card's metadata does not survive a round trip through huggingface_hub's parser")


def card_tags(stages: Sequence[StageRecord], facts: FolderFacts, extra: Sequence[str]) -> list[str]:
    tags = ["llm-recipes", *(record.stage for record in stages)]
    for record in stages:
        model_config = record.config.get("model") or {}
        if model_config.get("use_peft"):
            tags.append("dora" if model_config.get("use_dora") else "lora")
    if facts.adapter_method:
        tags.append(facts.adapter_method.lower())
    if facts.quantization:
        tags += ["bitsandbytes", "4-bit" if facts.quantization in ("nf4", "fp4", "4bit") else "8-bit"]
    if facts.gguf_files:
        tags.append("gguf")
    tags += list(extra)
    return list(dict.fromkeys(tags))


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## Usage

{{ usage }}

## Evaluation

{{ evaluation }}

## Intended use

{{ intended_use }}

## Limitations

{{ limitations }}

## Training procedure

{{ training }}

## Framework versions

{{ versions }}
"""


def usage_snippet(model_id: str, facts: FolderFacts) -> str:
    """Code that loads `model_id` the way its folder needs and generates, scores or labels (the tests run it)."""
    needs = "  # needs bitsandbytes installed" if facts.quantization else ""
    if facts.task != "text-generation":
        code = _task_usage(model_id, facts, needs)
    elif facts.kind == "adapter":
        if facts.chat:
            prompt = (
                'messages = [{"role": "user", "content": "What is 2 plus 3?"}]\n'
                "inputs = tokenizer.apply_chat_template(\n"
                '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n'
                ")\n"
            )
        else:
            prompt = 'inputs = tokenizer("Once upon a time", return_tensors="pt")\n'
        code = (
            "from peft import AutoPeftModelForCausalLM\n"
            "from transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{model_id}")  # the base model, with the adapter\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n'
            f"{prompt}"
            "output = model.generate(**inputs, max_new_tokens=64)\n"
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))\n'
        )
    elif facts.chat:
        code = (
            "from transformers import pipeline\n\n"
            f'generator = pipeline("text-generation", model="{model_id}"){needs}\n'
            'messages = [{"role": "user", "content": "What is 2 plus 3?"}]\n'
            "output = generator(messages, max_new_tokens=64)\n"
            'print(output[0]["generated_text"][-1]["content"])\n'
        )
    else:
        code = (
            "from transformers import pipeline\n\n"
            f'generator = pipeline("text-generation", model="{model_id}"){needs}\n'
            'print(generator("Once upon a time", max_new_tokens=64)[0]["generated_text"])\n'
        )
    text = f"```python\n{code}```"
    for name in facts.gguf_files:
        text += (
            f"\n\nWith llama.cpp, `{name}` holds the same weights:\n\n```bash\n"
            f'llama-cli -m {name} -p "Once upon a time" -n 64\n```'
        )
    return text


def _task_usage(model_id: str, facts: FolderFacts, needs: str) -> str:
    """Usage of a model that does not generate: a classifier, a tagger, an extractive QA model, a masked LM."""
    if facts.reward_input:
        return _reward_usage(model_id, facts, needs)
    if facts.kind == "adapter":
        auto = {"text-classification": "SequenceClassification", "token-classification": "TokenClassification"}
        auto_class = f"AutoPeftModelFor{auto.get(facts.task, 'QuestionAnswering')}"
        return (
            f"from peft import {auto_class}\nfrom transformers import AutoTokenizer\n\n"
            f'model = {auto_class}.from_pretrained("{model_id}")  # the base model, with the adapter\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n'
            'print(model(**tokenizer("The cat is blue.", return_tensors="pt")).logits)\n'
        )
    load = "from transformers import pipeline\n\n"
    if facts.task == "question-answering":
        remote = ", trust_remote_code=True" if facts.custom_pipeline else ""
        note = "# the pipeline's code is in this repository (config.json names it): read it before you run it\n"
        return (
            f"{load}{note if remote else ''}"
            f'answerer = pipeline("question-answering", model="{model_id}"{remote}){needs}\n'
            'print(answerer(question="What colour is the cat?", context="The cat is blue. The dog is red."))\n'
        )
    if facts.task == "fill-mask":
        return (
            f'{load}unmasker = pipeline("fill-mask", model="{model_id}"){needs}\n'
            'print(unmasker(f"The cat is {unmasker.tokenizer.mask_token}."))\n'
        )
    tagging = facts.task == "token-classification"
    name, options = ("tagger", ', aggregation_strategy="simple"') if tagging else ("classifier", "")
    call = f'print({name}("The cat is blue."))\n'
    return f'{load}{name} = pipeline("{facts.task}", model="{model_id}"{options}){needs}\n{call}'


def _reward_usage(model_id: str, facts: FolderFacts, needs: str) -> str:
    """A reward model scores a prompt and its response as the reward stage trained it (llm_recipes.rewards)."""
    if facts.reward_input == "conversational":
        text = (
            'messages = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5"}]\n'
            "text = tokenizer.apply_chat_template(messages, tokenize=False)  # it holds its special tokens\n"
        )
        special = ", add_special_tokens=False"
    else:
        text = 'text = "What is 2 plus 3?\\n5" + (tokenizer.eos_token or "")  # the score is read at the end\n'
        special = ""
    if facts.kind == "adapter":
        return (
            "from peft import AutoPeftModelForSequenceClassification\nfrom transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForSequenceClassification.from_pretrained("{model_id}", num_labels=1)'
            "  # the base model, with the adapter\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n{text}'
            f'score = model(**tokenizer(text, return_tensors="pt"{special})).logits[0, 0].item()\n'
            "print(score)  # higher: a better response\n"
        )
    return (
        "from transformers import pipeline\n\n"
        f'scorer = pipeline("text-classification", model="{model_id}", function_to_apply="none"){needs}\n'
        f"tokenizer = scorer.tokenizer\n{text}"
        f'print(scorer(text{special})[0]["score"])  # higher: a better response\n'
    )


def _reward_input(folder: Path, config: dict[str, Any], task: str | None, chat: bool) -> str | None:
    """How a reward model reads a response, as the reward stage recorded it; None for other models."""
    from llm_recipes.export import read_json
    from llm_recipes.rewards import REWARD_INPUT_FIELD, REWARD_INPUT_FILE

    if task != "text-classification":
        return None
    recorded = read_json(folder / REWARD_INPUT_FILE) if (folder / REWARD_INPUT_FILE).is_file() else config
    if recorded.get(REWARD_INPUT_FIELD):
        return str(recorded[REWARD_INPUT_FIELD])
    if len(config.get("id2label") or {}) == 1:  # one score, from elsewhere
        return "conversational" if chat else "text"
    return None


def _task_name(facts: FolderFacts) -> tuple[str, str]:
    return TASK_NAMES["reward" if facts.reward_input else facts.task]


def _task_errors(facts: FolderFacts) -> str:
    if facts.task == "text-generation":
        return "it can produce false, biased or offensive text"
    return "its predictions can be wrong or biased"


def _summary(facts: FolderFacts, stages: Sequence[StageRecord], base_model: str | None) -> str:
    what = f"A {facts.adapter_method} adapter" if facts.kind == "adapter" else _task_name(facts)[0]
    if facts.quantization:
        what += f" with {facts.quantization} weights (bitsandbytes)"
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else None
    if facts.kind == "adapter":
        start = f" for {base or facts.base_model}"
    else:
        start = f" fine-tuned from {base}" if base else ""
    chain = " -> ".join(record.stage for record in stages)
    made = f" through the stages {chain}" if chain else ""
    return f"{what}{start}, made with llm-recipes{made}."


def _evaluation_section(evaluation: EvalReport | None) -> str:
    if evaluation is None:
        return "No evaluation results were recorded for this model."
    lines = []
    dataset = evaluation.summary.get("dataset") or {}
    if dataset:
        lines.append("Dataset: " + ", ".join(f"{key} `{value}`" for key, value in dataset.items()) + "\n")
    metrics = evaluation.summary.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {_cell(name)} | {_cell(_format(value))} |" for name, value in metrics.items()]
    elif evaluation.results:
        lines += ["| metric | dataset | value |", "|---|---|---|"]
        lines += [
            f"| {_cell(r.metric_name or r.metric_type)} | {_cell(r.dataset_name)} | {_cell(_format(r.metric_value))} |"
            for r in evaluation.results
        ]
    extras = [name for name in EVAL_REPORT_EXTRAS if name.endswith(".md") and (evaluation.file.parent / name).is_file()]
    files = " and ".join(f"`{name}`" for name in [EVAL_RESULTS_NAME, *extras])
    lines.append(f"\nThe full evaluation report is {files} in this repository.")
    return "\n".join(lines)


def _training_section(stages: Sequence[StageRecord]) -> str:
    if not stages:
        return "No stage manifests were found for this model."
    parts = []
    for number, record in enumerate(stages, start=1):
        lines = [f"### {number}. {record.stage}"]
        inputs = {key: value for key, value in record.inputs.items() if value}
        if inputs:
            lines.append("")
            lines += [f"- {key}: {_inline(value)}" for key, value in inputs.items()]
        if record.metrics:
            lines += ["", "| result | value |", "|---|---|"]
            lines += [f"| {_cell(key)} | {_cell(_format(value))} |" for key, value in record.metrics.items()]
        config = _clean_config(record.config)
        if config:
            dumped = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000).rstrip()
            lines += ["", "<details><summary>configuration</summary>", "", "```yaml", dumped, "```", "", "</details>"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _clean_config(config: dict[str, Any]) -> dict[str, Any]:
    """A manifest's config without unset values and secrets (the manifest already redacted them)."""
    clean: dict[str, Any] = {}
    for name, section in config.items():
        if isinstance(section, dict):
            kept = {k: v for k, v in section.items() if k not in SECRET_FIELDS and v not in (None, [], {}, "")}
            if kept:
                clean[name] = kept
        elif section not in (None, [], {}, ""):
            clean[name] = section
    return clean


def _versions(stages: Sequence[StageRecord]) -> str:
    versions = stages[-1].versions if stages else {}
    if not versions:
        from llm_recipes.manifest import library_versions

        versions = library_versions()
    return "\n".join(f"- {name}: {version}" for name, version in versions.items())


def _inline(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def _cell(text: Any) -> str:
    """Table cell text: a `|` would end the cell and `<...>` would be read as HTML, so both are escaped."""
    return str(text).replace("|", "\\|").replace("<", "&lt;")


def _format(value: Any) -> str:
    from llm_recipes.reporting import format_number

    return format_number(value)


# --------------------------------------------------------------------------------------------------------------
# Pushing


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now; huggingface_hub reads it once, at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the Hub could not be reached, from whichever HTTP clients are installed."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
    ):
        try:
            imported = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        errors += [getattr(imported, name) for name in names if hasattr(imported, name)]
    return tuple(dict.fromkeys(errors))


def upload_command(folder: Path, repo_id: str, private: bool, revision: str | None) -> str:
    """The `hf` command that uploads the folder later, with the same settings."""
    import fnmatch
    import shlex

    parts = ["hf", "upload", repo_id, shlex.quote(str(folder)), ".", "--private" if private else "--no-private"]
    if revision:
        parts += ["--revision", shlex.quote(revision)]
    files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    # only the exclusions this folder needs (huggingface_hub matches them with fnmatch, as we do here)
    parts += [f"--exclude {shlex.quote(p)}" for p in PUSH_IGNORE if any(fnmatch.fnmatch(f, p) for f in files)]
    return " ".join(parts)


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    commit_url: str
    private: bool


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    before_upload: Callable[[str], None] | None = None,
    what: str = "output",
) -> PushResult:
    """Create the repo (private unless told otherwise; an existing one is kept as it is), create the branch
    `revision` if given, and upload the folder in one commit.

    `before_upload(full_repo_id)` runs once the repo id is known with its namespace (the card's usage snippet
    needs it). `token`: None takes HF_TOKEN or the `hf auth login` token.
    """
    folder = Path(folder)
    later = upload_command(folder, repo_id, private, revision)
    if hub_offline():
        raise _offline_error(folder, what, later, "HF_HUB_OFFLINE is set")
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        if before_upload is not None:
            before_upload(repo_id)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} with llm-recipes",
            ignore_patterns=PUSH_IGNORE,
        )
    except connection_errors() as err:
        raise _offline_error(folder, what, later, _redact(type(err).__name__, token)) from None
    except Exception as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(
                f"the Hub refused the push to {repo_id} (HTTP {status}): log in with `hf auth login` or set HF_TOKEN "
                f"to a token with write access; the {what} in {folder} is complete and can be pushed later with: "
                f"{later}"
            ) from None
        if status is None and not _is_hub_error(err):
            raise
        message = _redact(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, token)
        raise UserError(f"the push to {repo_id} failed: {message}; the {what} in {folder} is complete") from None
    return PushResult(repo_id=repo_id, revision=revision, commit_url=str(commit.commit_url), private=private)


def push_stage_output(
    output_dir: str | Path,
    repo_id: str | None = None,
    *,
    private: bool = True,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    card: CardOptions | None = None,
    evaluated_model: str | Path | None = None,
    what: str = "output",
) -> PushResult:
    """What a stage's `push_to_hub: true` does: write the model card for the final repo id, then push the folder.

    `repo_id` defaults to the output folder's name in your namespace (as transformers' Trainer does).
    """
    folder = Path(output_dir)
    repo_id = repo_id or folder.resolve().name
    options = card or CardOptions()
    if hub_offline():  # before the folder is touched: offline, it stays exactly as the stage left it
        raise _offline_error(folder, what, upload_command(folder, repo_id, private, revision), "HF_HUB_OFFLINE is set")
    build_model_card(folder, repo_id, options, evaluated_model=evaluated_model)  # checked before anything is sent

    def write(full_id: str) -> None:  # the card's usage snippet names the repo with its namespace
        write_model_card(folder, full_id, options, evaluated_model=evaluated_model)

    return push_folder(
        folder,
        repo_id,
        private=private,
        revision=revision,
        commit_message=commit_message,
        token=token,
        before_upload=write,
        what=what,
    )


def _offline_error(folder: Path, what: str, later: str, reason: str) -> UserError:
    return UserError(
        f"could not reach the Hub (offline? {reason}); the {what} in {folder} is complete and can be pushed later "
        f"with: {later}"
    )


def _is_hub_error(err: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    return isinstance(err, (HfHubHTTPError, HFValidationError))


def _redact(text: str, token: str | None) -> str:
    from huggingface_hub import get_token

    for secret in {token, os.environ.get("HF_TOKEN"), _quiet(get_token)}:
        if secret:
            text = text.replace(secret, "<token>")
    return text


def _quiet(function: Callable[[], Any]) -> Any:
    try:
        return function()
    except Exception:  # a broken token store must not turn an error message into another error
        return None


def take_over_trainer_push(training_args: Any) -> bool:
    """Take the Trainer's hub settings over, before the Trainer is built: turn off its own pushing (it creates the
    repo at start-up, public unless told otherwise, and pushes at every save with its own card), move a `hub_token`
    to HF_TOKEN (the Trainer pickles its arguments into training_args.bin, token included), and return whether the
    user asked for a push, which `push_trained_output` then does once, at the end."""
    take_token(training_args)
    wanted = bool(training_args.push_to_hub)
    training_args.push_to_hub = False
    return wanted


def push_trained_output(training_args: Any, stage: str) -> PushResult:
    """Push a training stage's output folder with our model card, using the Trainer's hub_* settings."""
    result = push_stage_output(
        training_args.output_dir,
        training_args.hub_model_id,
        private=training_args.hub_private_repo is not False,
        revision=getattr(training_args, "hub_revision", None),
        commit_message=f"llm-recipes {stage}",
    )
    print(f"pushed to {result.repo_id}: {result.commit_url}")
    return result
