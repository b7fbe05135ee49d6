"""The evaluation stage's steps, shared by `recipes/evaluate_models.py` and Python users: check the arguments, load the
data once, evaluate each model on it, and compare them. With `protocol`, every model is measured on the evaluation
protocol (`llm_recipes.evaluation.protocol`), the measures the compression stages and the pipeline table use too;
the other fields add metrics beside them.

    from llm_recipes.configs import EvaluateArguments
    from llm_recipes.evaluation import run_evaluation
    results = run_evaluation(EvaluateArguments(models=["outputs/base", "outputs/sft"], dataset_path="eval.jsonl"))
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_recipes.configs import check_dataset_path, is_planned, looks_local, mapping_field
from llm_recipes.errors import UserError
from llm_recipes.evaluation.classification import (
    classification_metrics,
    label_ids,
    predict_sequence_labels,
    predict_token_labels,
)
from llm_recipes.evaluation.config import EvaluateArguments
from llm_recipes.evaluation.conversations import answer_conversations, units_of
from llm_recipes.evaluation.data import (
    ClassificationData,
    EvalData,
    dataset_display_name,
    load_classification_data,
    load_eval_data,
)
from llm_recipes.evaluation.generation import (
    GENERATION_METRICS,
    build_generation_config,
    check_generation_overrides,
    generate_responses,
    generation_metrics,
    prompt_text,
)
from llm_recipes.evaluation.judging import (
    Judge,
    add_judgments,
    add_reward_comparisons,
    answer_rows,
    check_judge_arguments,
    load_judge,
)
from llm_recipes.evaluation.lm_eval_bridge import lm_eval_available, run_lm_eval
from llm_recipes.evaluation.loading import (
    align_pad_token,
    check_model_folder,
    load_model,
    load_tokenizer_for,
    model_kind,
)
from llm_recipes.evaluation.plots import plot_training_curves
from llm_recipes.evaluation.protocol import Protocol, ProtocolSpec, check_protocol_paths, protocol_header, read_protocol
from llm_recipes.evaluation.report import DatasetRef, ModelResult, write_eval_results, write_markdown_report
from llm_recipes.evaluation.reward import load_reward_model, reward_scores
from llm_recipes.evaluation.sliding_window import perplexity
from llm_recipes.runs.manifest import read_manifest

# per-model outputs inside the output folder
GENERATIONS_DIR = "generations"
PLOTS_DIR = "plots"


@dataclass
class EvalInputs:
    """The data every model is evaluated on, loaded once."""

    data: EvalData | None = None  # prompts/references (and texts) from dataset_path
    perplexity_data: EvalData | None = None
    classification: ClassificationData | None = None
    protocol: Protocol | None = None  # the evaluation protocol, its data read


def model_paths(args: EvaluateArguments) -> list[str]:
    if args.models and args.model_name_or_path:
        raise UserError("set models (a list to compare) or model_name_or_path (one model), not both")
    paths = list(args.models or ([args.model_name_or_path] if args.model_name_or_path else []))
    if not paths:
        raise UserError("no model to evaluate: set model_name_or_path, or models (a list to compare)")
    if len(set(paths)) != len(paths):
        raise UserError("models: a model is listed twice")
    return paths


def wanted_metrics(args: EvaluateArguments) -> set[str]:
    """The metric groups to compute: perplexity, bleu, chrf, rouge, exact_match, reward, judge, classification."""
    if args.metrics is None:
        wanted = {"perplexity", *GENERATION_METRICS, "classification"}
        if args.reward_model:
            wanted.add("reward")
        if args.judge_model:
            wanted.add("judge")
        return wanted
    wanted = set(args.metrics)
    if "generation" in wanted:
        wanted = (wanted - {"generation"}) | set(GENERATION_METRICS)
    return wanted


def check_not_empty(path: str) -> None:
    """A local data file with nothing in it is an error worth one clear line (the readers' own are obscure)."""
    file = Path(path).expanduser()
    if looks_local(path) and file.is_file() and file.stat().st_size <= 4096:
        if file.read_text(encoding="utf-8", errors="replace").strip() in ("", "[]", "{}"):
            raise UserError(f"dataset '{path}' is empty")


def check_arguments(args: EvaluateArguments) -> None:
    """Everything a user can get wrong that shows without loading data or weights; UserError, one line."""
    paths = model_paths(args)
    for path in paths:
        check_model_folder(path, "models" if args.models else "model_name_or_path")
    if args.reward_model:
        check_model_folder(args.reward_model, "reward_model")
    for what, path in (("dataset", args.dataset_path), ("perplexity dataset", args.perplexity_dataset_path)):
        if path:
            check_dataset_path(path, what)
            check_not_empty(path)
    wanted = wanted_metrics(args)
    if "reward" in wanted and not args.reward_model:
        raise UserError("metrics: reward needs reward_model (a reward model folder)")
    if args.metrics and "classification" in wanted and not args.label_field:
        raise UserError("metrics: classification needs label_field (the label column) and a classifier model")
    if args.protocol:
        check_protocol_paths(read_protocol(args.protocol))
    if not (args.protocol or args.dataset_path or args.perplexity_dataset_path or args.lm_eval_tasks):
        raise UserError(
            "nothing to evaluate on: set protocol (or dataset_path, perplexity_dataset_path, lm_eval_tasks)"
        )
    if args.label_field and not args.dataset_path:
        raise UserError("label_field needs dataset_path (the labelled data)")
    if args.context_length is not None and args.stride is not None and args.stride >= args.context_length:
        raise UserError(f"stride: {args.stride} must be below context_length ({args.context_length})")
    check_generation_overrides(mapping_field(args.generation_config, "generation_config"))
    check_judge_arguments(args, len(paths))
    if args.lm_eval_tasks:
        if not lm_eval_available():
            raise UserError("lm_eval_tasks needs lm-evaluation-harness: pip install lm-eval")
        if args.lm_eval_include_path and not Path(args.lm_eval_include_path).expanduser().exists():
            raise UserError(f"lm_eval_include_path: folder not found: {args.lm_eval_include_path}")
    kinds = {path: model_kind(path) for path in paths if looks_local(path) and not is_planned(path)}
    classifiers = [path for path, kind in kinds.items() if kind != "causal_lm"]
    if classifiers and not args.label_field:
        raise UserError(f"{classifiers[0]} is a classifier: set label_field (and text_field) to its labelled data")


def load_inputs(args: EvaluateArguments) -> EvalInputs:
    """Read the evaluation data once, before any model is loaded (a bad column fails here, in one line)."""
    inputs = EvalInputs()
    if args.protocol:
        inputs.protocol = Protocol(read_protocol(args.protocol)).load()
    if args.dataset_path and args.label_field:
        inputs.classification = load_classification_data(
            args.dataset_path,
            input_field=args.text_field,
            label_field=args.label_field,
            split=args.dataset_split,
            max_samples=args.max_eval_samples,
        )
    elif args.dataset_path:
        inputs.data = load_eval_data(
            args.dataset_path,
            data_format=args.data_format,
            split=args.dataset_split,
            text_field=args.text_field,
            max_samples=args.max_eval_samples,
        )
    if args.perplexity_dataset_path:
        inputs.perplexity_data = load_eval_data(
            args.perplexity_dataset_path,
            split=args.perplexity_dataset_split,
            text_field=args.text_field,
            max_samples=args.max_eval_samples,
        )
    else:
        inputs.perplexity_data = inputs.data
    asked = [name for name in GENERATION_METRICS if args.metrics and name in wanted_metrics(args)]
    if asked and inputs.data is not None and not inputs.data.has_references:
        what = "prompts without answers" if inputs.data.prompt_only else "plain text"
        raise UserError(
            f"metrics: {asked[0]} needs prompts with reference answers, but '{args.dataset_path}' is {what}"
        )
    return inputs


def load_reward(args: EvaluateArguments) -> tuple[Any, Any] | None:
    """(reward model, its tokenizer), when the config names one and the reward of dataset_path's answers is wanted
    (a protocol's reward model is the protocol's)."""
    if not args.reward_model or "reward" not in wanted_metrics(args) or not args.dataset_path:
        return None

    model = load_reward_model(
        args.reward_model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
    tokenizer = load_tokenizer_for(args.reward_model, trust_remote_code=args.trust_remote_code)
    align_pad_token(model, tokenizer)
    return model, tokenizer


def model_stage(path: str) -> str | None:
    if not looks_local(path) or not Path(path).expanduser().is_dir():
        return None
    manifest = read_manifest(Path(path).expanduser())
    return manifest.get("stage") if manifest else None


def evaluate_model(
    path: str, args: EvaluateArguments, inputs: EvalInputs, reward: tuple[Any, Any] | None = None
) -> ModelResult:
    """Load one model, measure everything asked for on the shared data, and free it again."""
    kind = model_kind(path) if looks_local(path) else "causal_lm"
    result = ModelResult(path=path, kind=kind, stage=model_stage(path))
    if kind == "causal_lm" and inputs.data is None and inputs.perplexity_data is None and inputs.protocol is None:
        return result  # only lm-eval tasks to run, and the harness loads the model itself
    tokenizer = load_tokenizer_for(path, args.tokenizer_name_or_path, args.trust_remote_code)
    # on the protocol's device unless the config says otherwise: latency is compared with the compression stages'
    device = args.device or (inputs.protocol.spec.device if inputs.protocol is not None else None)
    model = load_model(path, kind, device=device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    if kind != "causal_lm":
        align_pad_token(model, tokenizer)
    try:
        if kind == "causal_lm":
            if inputs.protocol is not None:
                add_protocol(result, model, tokenizer, inputs.protocol)
            _evaluate_causal_lm(model, tokenizer, result, args, inputs, reward)
        else:
            _evaluate_classifier(model, tokenizer, result, args, inputs)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result


def add_protocol(result: ModelResult, model: Any, tokenizer: Any, protocol: Protocol) -> None:
    """The protocol's measures of one model, under their protocol names (a measure that could not run is left out
    of the metrics and kept as None in `result.protocol`)."""
    folder = result.path if looks_local(result.path) and Path(result.path).expanduser().is_dir() else None
    measured = protocol.measure(model, tokenizer, model_dir=folder, name=result.path)
    result.protocol = measured.as_dict()
    result.metrics.update({name: value for name, value in measured.measures.items() if value is not None})
    result.metric_datasets.update(protocol_datasets(protocol.spec))


def protocol_datasets(spec: ProtocolSpec) -> dict[str, DatasetRef]:
    """The data each protocol measure was taken on, for the model card (latency, size and parameters have none)."""
    refs: dict[str, DatasetRef] = {}
    corpus = spec.corpus
    if corpus is not None and corpus.path:
        ref = DatasetRef(corpus.path, dataset_display_name(corpus.path), corpus.split)
        refs.update(corpus_perplexity=ref, corpus_bits_per_byte=ref)
    for task in spec.tasks:
        refs[f"{task.name}/{task.kind}"] = DatasetRef(task.path, dataset_display_name(task.path), task.split)
    reward_task = spec.reward_task()
    if reward_task is not None:
        refs["reward_model_score"] = refs[f"{reward_task.name}/{reward_task.kind}"]
    return refs


def _evaluate_causal_lm(
    model: Any,
    tokenizer: Any,
    result: ModelResult,
    args: EvaluateArguments,
    inputs: EvalInputs,
    reward: tuple[Any, Any] | None,
) -> None:
    wanted = wanted_metrics(args)
    ppl_data, data = inputs.perplexity_data, inputs.data
    # the perplexity of bare questions says little: prompt-only data are scored only when metrics asks for it
    asked_perplexity = "perplexity" in (args.metrics or []) or (ppl_data is not None and not ppl_data.prompt_only)
    if "perplexity" in wanted and ppl_data is not None and asked_perplexity:
        measured = perplexity(
            model,
            tokenizer,
            ppl_data.texts,
            context_length=args.context_length,
            stride=args.stride,
            batch_size=args.batch_size,
        )
        result.perplexity_dataset = DatasetRef(ppl_data.path, ppl_data.name, ppl_data.split)
        result.metrics.update(perplexity=measured.perplexity, bits_per_byte=measured.bits_per_byte)
        result.details["perplexity"] = measured.as_dict()
    if data is None:
        return
    result.dataset = DatasetRef(data.path, data.name, data.split)
    generation_wanted = [name for name in GENERATION_METRICS if name in wanted]
    judged = "judge" in wanted and args.judge_model is not None
    if not (data.has_references or data.prompt_only) or not (generation_wanted or reward is not None or judged):
        return
    config = build_generation_config(
        model,
        tokenizer,
        max_new_tokens=args.max_new_tokens,
        overrides=mapping_field(args.generation_config, "generation_config"),
    )
    torch.manual_seed(args.seed)
    if data.prompt_only:
        _answer_prompts(model, tokenizer, result, args, data, reward, config)
        return
    responses = generate_responses(model, tokenizer, data.prompts, generation_config=config, batch_size=args.batch_size)
    result.details["generations"] = responses
    if generation_wanted:
        result.metrics.update(generation_metrics(responses, data.references, generation_wanted))
    if reward is not None:
        result.reward_scores = reward_scores(*reward, data.prompts, responses, batch_size=args.batch_size)
        result.metrics["mean_reward"] = sum(result.reward_scores) / len(result.reward_scores)
    for index in range(min(args.num_samples, len(responses))):
        sample = {
            "prompt": prompt_text(data.prompts[index]),
            "reference": data.references[index],
            "generation": responses[index],
        }
        if result.reward_scores is not None:
            sample["reward"] = result.reward_scores[index]
        result.samples.append(sample)


def _answer_prompts(
    model: Any,
    tokenizer: Any,
    result: ModelResult,
    args: EvaluateArguments,
    data: EvalData,
    reward: tuple[Any, Any] | None,
    config: Any,
) -> None:
    """Prompt-only data: every turn answered in order (later turns with the model's own earlier answers), each
    answer scored by the reward model; the judge grades them once every model has answered."""
    answers = answer_conversations(
        model, tokenizer, data.conversations, generation_config=config, batch_size=args.batch_size
    )
    result.details["answers"] = answers
    units = units_of(data.conversations, answers)
    if reward is not None:
        prompts, replies = [unit.prompt for unit in units], [unit.answer for unit in units]
        result.reward_scores = reward_scores(*reward, prompts, replies, batch_size=args.batch_size)
        result.metrics["mean_reward"] = sum(result.reward_scores) / len(result.reward_scores)
    result.answers = answer_rows(data, units, result.reward_scores)


def _evaluate_classifier(
    model: Any, tokenizer: Any, result: ModelResult, args: EvaluateArguments, inputs: EvalInputs
) -> None:
    data = inputs.classification
    if data is None:
        raise UserError(f"{result.path} is a classifier: set label_field (and text_field) to its labelled data")
    result.dataset = DatasetRef(data.path, data.name, data.split)
    if result.kind == "token_classification":
        if not data.is_token_level:
            raise UserError(f"{result.path} labels tokens: text_field '{args.text_field}' must hold lists of words")
        predictions = predict_token_labels(model, tokenizer, data.inputs, batch_size=args.batch_size)
    else:
        if data.is_token_level:
            raise UserError(f"{result.path} labels whole texts: text_field '{args.text_field}' holds lists of words")
        predictions = predict_sequence_labels(model, tokenizer, data.inputs, batch_size=args.batch_size)
    metrics = classification_metrics(predictions, label_ids(model, data.labels))
    result.details["classification"] = {"support": metrics.pop("support")}
    result.metrics.update(metrics)
    id2label = model.config.id2label or {}
    for index in range(min(args.num_samples, len(predictions))):
        text = data.inputs[index] if isinstance(data.inputs[index], str) else " ".join(data.inputs[index])
        prediction = predictions[index]
        shown = [id2label.get(p, p) for p in prediction] if isinstance(prediction, list) else id2label.get(prediction)
        result.samples.append({"prompt": text, "reference": data.labels[index], "generation": shown})


def add_win_rates(results: Sequence[ModelResult]) -> None:
    """Each model's win rate over the first (the baseline) on the same prompts, by reward, with its interval."""
    add_reward_comparisons(results)


def add_lm_eval(result: ModelResult, args: EvaluateArguments) -> None:
    result.lm_eval = run_lm_eval(
        result.path,
        args.lm_eval_tasks,
        include_path=args.lm_eval_include_path,
        limit=int(args.lm_eval_limit) if args.lm_eval_limit and args.lm_eval_limit >= 1 else args.lm_eval_limit,
        batch_size=args.batch_size,
        num_fewshot=args.lm_eval_num_fewshot,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )


def slug(path: str) -> str:
    """A folder-safe name for a model path (outputs/demo/sft -> outputs_demo_sft)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.strip("./")) or "model"


def add_plots(result: ModelResult, output_dir: str | Path) -> None:
    """Training curves of the model's stage, if it left a trainer state."""
    if not looks_local(result.path) or not Path(result.path).expanduser().is_dir():
        return
    folder = Path(output_dir) / PLOTS_DIR / slug(result.path)
    written = plot_training_curves(Path(result.path).expanduser(), folder, title=result.path)
    result.plots = [str(path.relative_to(output_dir)) for path in written]


def write_protocol_answers(result: ModelResult, inputs: EvalInputs, output_dir: str | Path) -> Path | None:
    """Every protocol task's prompt, reference and greedy answer of a model, one JSON line each, so a figure can be
    checked against what the model said."""
    if result.protocol is None or inputs.protocol is None:
        return None
    path = Path(output_dir) / GENERATIONS_DIR / f"{slug(result.path)}.protocol.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for task, answers in result.protocol["answers"].items():
            data = inputs.protocol.tasks[task]
            for index, answer in enumerate(answers):
                row = {"task": task, "prompt": data.prompts[index], "answer": answer}
                if data.references:
                    row["reference"] = data.references[index]
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_generations(result: ModelResult, inputs: EvalInputs, output_dir: str | Path) -> Path | None:
    """Every prompt, reference and generation (and reward) of a model, one JSON line each."""
    write_protocol_answers(result, inputs, output_dir)
    if inputs.data is not None and inputs.data.prompt_only and "answers" in result.details:
        return _write_answers(result, inputs.data, output_dir)
    responses = result.details.get("generations")
    if not responses or inputs.data is None:
        return None
    path = Path(output_dir) / GENERATIONS_DIR / f"{slug(result.path)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for index, response in enumerate(responses):
            row = {"prompt": inputs.data.prompts[index], "reference": inputs.data.references[index]}
            row["generation"] = response
            if result.reward_scores is not None:
                row["reward"] = result.reward_scores[index]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _write_answers(result: ModelResult, data: EvalData, output_dir: str | Path) -> Path:
    """Prompt-only data: one JSON line per prompt with its turns and the model's answers (and rewards)."""
    path = Path(output_dir) / GENERATIONS_DIR / f"{slug(result.path)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rewards = iter(result.reward_scores or [])
    with path.open("w", encoding="utf-8") as handle:
        for conversation, answers in zip(data.conversations, result.details["answers"], strict=True):
            row = {"id": conversation.id, "category": conversation.category, "turns": conversation.turns}
            row["answers"] = answers
            if result.reward_scores is not None:
                row["rewards"] = [next(rewards) for _ in answers]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def report_settings(
    args: EvaluateArguments, inputs: EvalInputs | None = None, judge: Judge | None = None
) -> dict[str, Any]:
    generation = {"max_new_tokens": args.max_new_tokens, **mapping_field(args.generation_config, "generation_config")}
    generation.setdefault("do_sample", False)
    settings: dict[str, Any] = {"generation": generation, "reward_model": args.reward_model}
    if inputs is not None and inputs.protocol is not None:
        settings["protocol"] = protocol_header(inputs.protocol.spec)
    if judge is not None:
        settings["judge"] = judge.settings()
    return settings


def run_evaluation(args: EvaluateArguments, *, write: bool = True) -> list[ModelResult]:
    """The whole stage in one call: every model on the same data, win rates, lm-eval tasks, curves, and (with
    `write`) eval_results.json, eval_report.md, generations/ and plots/ in `args.output_dir`."""
    check_arguments(args)
    inputs = load_inputs(args)
    reward = load_reward(args)
    judge = load_judge(args)
    results = [evaluate_model(path, args, inputs, reward) for path in model_paths(args)]
    add_win_rates(results)
    for result in results:
        if args.lm_eval_tasks:
            add_lm_eval(result, args)
        if write and args.plot_training_curves:
            add_plots(result, args.output_dir)
        if write:
            write_generations(result, inputs, args.output_dir)
    add_judgments(results, inputs.data, judge, args.output_dir if write else None)
    if write:
        settings = report_settings(args, inputs, judge)
        write_eval_results(results, args.output_dir, settings.get("protocol"), settings.get("judge"))
        write_markdown_report(results, args.output_dir, settings)
    return results
