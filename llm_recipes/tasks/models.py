"""Task models: an encoder (BERT-style) or a decoder with a classification, tagging or span head, from a saved
model or a preset; fully trained, with LoRA, or with the lower layers frozen; saved so that the matching
`AutoModelFor...` class and `transformers.pipeline` load it (a LoRA adapter is merged in first).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import transformers
from peft import PeftModel, get_peft_model
from transformers import AutoConfig, AutoTokenizer
from trl import get_peft_config

from llm_recipes.errors import UserError
from llm_recipes.models.loading import ENCODER_PRESETS, build_config, torch_dtype, transformer_blocks
from llm_recipes.pretrain.build import parse_overrides
from llm_recipes.tasks import qa
from llm_recipes.tasks.data import CLASSIFICATION, QUESTION_ANSWERING, TOKEN_CLASSIFICATION

AUTO_CLASS_NAMES = {
    CLASSIFICATION: "AutoModelForSequenceClassification",
    TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
    QUESTION_ANSWERING: "AutoModelForQuestionAnswering",
}
PIPELINE_TASKS = {
    CLASSIFICATION: "text-classification",
    TOKEN_CLASSIFICATION: "token-classification",
    QUESTION_ANSWERING: "question-answering",
}
PEFT_TASK_TYPES = {CLASSIFICATION: "SEQ_CLS", TOKEN_CLASSIFICATION: "TOKEN_CLS", QUESTION_ANSWERING: "QUESTION_ANS"}
QA_PIPELINE_FILE = "extractive_qa.py"  # the copy of llm_recipes/tasks/qa.py saved beside a QA model
EMBEDDING_MODULE_NAMES = ("embeddings", "embed_tokens", "embed_positions", "wte", "wpe")
DEFAULT_MAX_LENGTH = {CLASSIFICATION: 128, TOKEN_CLASSIFICATION: 128, QUESTION_ANSWERING: 384}


def auto_class(task: str) -> Any:
    return getattr(transformers, AUTO_CLASS_NAMES[task])


def load_task_tokenizer(args: Any, model_args: Any) -> Any:
    """The tokenizer (tokenizer_name_or_path, else the model's), with a pad token for batching."""

    path = args.tokenizer_name_or_path or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"tokenizer_name_or_path: cannot load a tokenizer from '{path}': {first_line}") from None
    if tokenizer.pad_token is None:
        # padding is masked out of attention and loss, so any existing token can stand in for it
        substitute = tokenizer.eos_token or tokenizer.sep_token or tokenizer.unk_token
        if substitute is None:
            raise UserError(f"the tokenizer at '{path}' has no pad, eos, sep or unk token to pad batches with")
        tokenizer.pad_token = substitute
    return tokenizer


def task_config(args: Any, model_args: Any, tokenizer: Any, labels: Sequence[str] | None) -> Any:
    """The architecture with the task's label maps -- no weights. Raises when the architecture has no head for
    the task or `freeze_layers` exceeds its depth."""

    overrides = parse_overrides(args.config_overrides)
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path, trust_remote_code=args.trust_remote_code, **overrides
        )
    else:
        objective = "mlm" if args.preset in ENCODER_PRESETS else "clm"
        config = build_config(tokenizer, preset=args.preset, objective=objective, overrides=overrides)
    if labels is not None:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: index for index, label in enumerate(labels)}
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id  # decoders' classifiers find the last real token by it
    source = model_args.model_name_or_path or f"preset {args.preset}"
    try:
        auto_class(args.task)._model_mapping[type(config)]
    except KeyError:
        raise UserError(
            f"{source} is a {config.model_type} model, which has no {args.task} head in transformers"
        ) from None
    layers = getattr(config, "num_hidden_layers", None)
    if args.freeze_layers is not None and isinstance(layers, int) and args.freeze_layers > layers:
        raise UserError(f"freeze_layers: {args.freeze_layers} but {source} has only {layers} layers")
    return config


def capped_max_length(max_length: int | None, task: str, config: Any) -> tuple[int, str | None]:
    """The task's sequence length (its default when unset), capped at the model's positions; with a note."""
    wanted = max_length or DEFAULT_MAX_LENGTH[task]
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and 0 < limit < wanted:
        return limit, f"max_length {wanted} capped at the model's {limit} positions"
    return wanted, None


def freeze_lower_layers(model: Any, count: int) -> None:
    """Freeze the embeddings and the lowest `count` transformer blocks; the blocks above and the head train."""

    blocks = transformer_blocks(model)
    if count > len(blocks):
        raise UserError(f"freeze_layers: {count} but the model has only {len(blocks)} layers")
    frozen = [model.get_input_embeddings(), *blocks[:count]]
    frozen += [module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in EMBEDDING_MODULE_NAMES]
    for module in frozen:
        module.requires_grad_(False)


def peft_config_for(model_args: Any, task: str, model: Any, **lora_overrides: Any) -> Any:
    """TRL's LoRA config from the model fields, for the task's head; a BERT pooler (new, random) trains in full
    with the head, which PEFT already keeps trainable and saves."""

    model_args.lora_task_type = PEFT_TASK_TYPES[task]
    peft_config = get_peft_config(model_args)
    for key, value in lora_overrides.items():
        setattr(peft_config, {"lora_r": "r"}.get(key, key), value)  # lora_alpha, lora_dropout: same names
    if task == CLASSIFICATION and any(name.rsplit(".", 1)[-1] == "pooler" for name, _ in model.named_modules()):
        peft_config.modules_to_save = list(dict.fromkeys([*(peft_config.modules_to_save or []), "pooler"]))
    return peft_config


def model_builder(
    args: Any,
    model_args: Any,
    config: Any,
    lora_overrides: Callable[[Any], dict[str, Any]] | None = None,
) -> Callable[..., Any]:
    """A `model_init(trial=None)` for the Trainer: loads (or initialises) the task model and applies freezing or
    LoRA. A hyperparameter search calls it once per trial; `lora_overrides(trial)` gives that trial's LoRA rank."""

    model_class = auto_class(args.task)

    def model_init(trial: Any = None) -> Any:
        if model_args.model_name_or_path:
            model = model_class.from_pretrained(
                model_args.model_name_or_path,
                config=config,
                dtype=torch_dtype(model_args.dtype),
                ignore_mismatched_sizes=True,  # a classifier saved with other labels gets a new head
                use_safetensors=True,
                trust_remote_code=args.trust_remote_code,
            )
        else:
            model = model_class.from_config(config)
        if args.freeze_layers is not None:
            freeze_lower_layers(model, args.freeze_layers)
        if model_args.use_peft:
            overrides = lora_overrides(trial) if lora_overrides is not None and trial is not None else {}
            model = get_peft_model(model, peft_config_for(model_args, args.task, model, **overrides))
        return model

    return model_init


# --------------------------------------------------------------------------------------------------------------
# Saving


def pipeline_settings(args: Any, max_length: int) -> dict[str, Any]:
    """What the QA pipeline needs to read the model as it was trained (stored in config.task_specific_params)."""
    return {
        "max_length": max_length,
        "doc_stride": args.doc_stride,
        "max_answer_length": args.max_answer_length,
        "n_best_size": args.n_best_size,
    }


def prepare_for_pipeline(model: Any, task: str, settings: dict[str, Any] | None = None) -> None:
    """A QA model records our extractive pipeline (transformers 5 has none) and its settings in its config."""
    if task != QUESTION_ANSWERING:
        return

    model.config.custom_pipelines = {
        qa.PIPELINE_TASK: {
            "impl": f"{Path(QA_PIPELINE_FILE).stem}.{qa.PIPELINE_CLASS}",
            "pt": [AUTO_CLASS_NAMES[QUESTION_ANSWERING]],
            "type": "text",
        }
    }
    model.config.task_specific_params = {qa.PIPELINE_TASK: settings or {}}


def save_pipeline_code(folder: str | Path, task: str) -> None:
    if task == QUESTION_ANSWERING:
        shutil.copyfile(qa.__file__, Path(folder) / QA_PIPELINE_FILE)


def merged(model: Any) -> Any:
    """A PEFT model with its adapter merged into the base weights (what a pipeline loads); others unchanged."""

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def save_task_output(trainer: Any, args: Any, output_dir: str, max_length: int) -> None:
    """The model a pipeline loads (a LoRA adapter merged into its base), its tokenizer, and for QA our pipeline."""

    model = trainer.accelerator.unwrap_model(trainer.model)
    prepare_for_pipeline(model, args.task, pipeline_settings(args, max_length))
    if isinstance(model, PeftModel):
        if trainer.accelerator.is_main_process:
            merged(model).save_pretrained(output_dir)
    else:
        trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(output_dir)
        save_pipeline_code(output_dir, args.task)
