"""Reward models and reward functions: loading what the reward stage wrote, scoring (prompt, response) pairs, and
turning either a reward model or a Python function into the reward callable TRL's RL trainers take.

A reward model is what TRL's RewardTrainer writes: a sequence classifier with one output, read at the last token
that is not padding. It is only right when it reads text exactly as it was trained on, so scoring rebuilds that
text here the way RewardTrainer builds it:

* conversational data (message lists): the chat template over prompt + the assistant's answer;
* plain text: ``prompt + response + EOS``, tokenized with the tokenizer's special tokens.

Which of the two a model was trained on is recorded by the reward stage in its config (``reward_input``); a model
without the record is read the way each prompt comes (a message list through the template, a string as text).
TRL's GRPO/RLOO can score with a reward model themselves, but they tokenize prompt + completion without the EOS
and the special tokens RewardTrainer trained with, so the RL stages wrap the model with :func:`score_responses`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoModelForSequenceClassification, set_seed
from trl import get_peft_config, get_quantization_config
from trl.trainer.reward_trainer import suppress_seqcls_warning

from llm_recipes.configs import check_dataset_path, check_eval_data, check_model_path, check_quantized_training
from llm_recipes.configs.code import check_code_exists, imports_code, split_code_spec
from llm_recipes.data.preferences import load_prompt_data
from llm_recipes.errors import UserError
from llm_recipes.evaluation.loading import (
    align_pad_token,
    check_model_folder,
    is_adapter,
    load_model,
    load_tokenizer_for,
    pick_device,
    resolve_dtype,
)
from llm_recipes.models.chat import ensure_chat_template
from llm_recipes.models.loading import _kbit_device_map, load_causal_lm, load_tokenizer, torch_dtype
from llm_recipes.training.resume import last_logged

__all__ = [
    "REWARD_INPUT_FIELD",
    "completion_text",
    "load_reward_model",
    "load_reward_model_for_training",
    "pairwise_metrics",
    "record_reward_input",
    "reward_function_from_path",
    "reward_model_function",
    "check_reward_function",
    "check_rl_arguments",
    "load_rl_inputs",
    "reward_functions_for",
    "reward_text",
    "rl_summary",
    "save_reward_input",
    "score_responses",
]

Prompt = str | list[dict[str, str]]
RewardFunction = Callable[..., list[float]]

# The config field where the reward stage records what its model reads: "conversational" or "text" (for a LoRA
# adapter, which has no config of its own, in a small JSON file beside it).
REWARD_INPUT_FIELD = "reward_input"
REWARD_INPUT_FILE = "reward_input.json"


def record_reward_input(model: Any, conversational: bool) -> None:
    """Note in the model's config whether it was trained on conversations (saved with it in config.json)."""
    setattr(model.config, REWARD_INPUT_FIELD, "conversational" if conversational else "text")


def _flatten(prompt: Sequence[dict[str, str]]) -> str:
    return "\n".join(turn["content"] for turn in prompt)


def reward_text(tokenizer: Any, prompt: Prompt, response: str, reward_input: str | None = None) -> tuple[str, bool]:
    """(prompt + response as the reward model reads it, whether a chat template produced it -- the text then holds
    its special tokens). `reward_input` is the model's recorded training shape, when known."""
    conversational = reward_input == "conversational" if reward_input else not isinstance(prompt, str)
    if conversational and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        messages = [*messages, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False), True
    # RewardTrainer appends EOS to plain-text pairs, so the score is read where it was learned
    text = (prompt if isinstance(prompt, str) else _flatten(prompt) + "\n") + response
    eos = tokenizer.eos_token
    return (text if not eos or text.endswith(eos) else text + eos), False


def _pad_id(model: Any, tokenizer: Any) -> int:
    """The id the classifier skips to find the last real token: the model's, which training set from the tokenizer."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    pad_id = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    if pad_id is None:
        raise UserError("the reward model and its tokenizer have no pad token; set tokenizer.pad_token")
    config.pad_token_id = pad_id
    return pad_id


@torch.no_grad()
def score_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[float]:
    """The reward of each (prompt, response) pair, in batches. Prompts are strings or message lists (rendered with
    the chat template). Texts longer than `max_length` (default: the model's maximum positions) keep their end --
    the response, which is what the score is about."""
    if len(prompts) != len(responses):
        raise UserError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = next(model.parameters()).device
    max_length = max_length or getattr(model.config, "max_position_embeddings", None) or 2048
    pad_id = _pad_id(model, tokenizer)
    reward_input = getattr(model.config, REWARD_INPUT_FIELD, None)
    scores: list[float] = []
    for begin in range(0, len(prompts), batch_size):
        encoded = []
        batch = zip(prompts[begin : begin + batch_size], responses[begin : begin + batch_size], strict=True)
        for prompt, response in batch:
            text, templated = reward_text(tokenizer, prompt, response, reward_input)
            encoded.append(tokenizer(text, add_special_tokens=not templated)["input_ids"][-max_length:])
        width = max(len(ids) for ids in encoded)
        # right padding: the classifier reads the last token that is not padding
        input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in encoded], device=device)
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded], device=device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        scores += logits[:, 0].float().tolist()
    return scores


def load_reward_model(
    path: str, *, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) of a reward model folder, in eval mode: full weights, or a LoRA adapter (with its saved
    score head) merged into its base. The model knows the tokenizer's pad token, so batches work."""

    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    if is_adapter(path):
        model = _load_adapter_classifier(path, dtype, device)
    else:
        model = load_model(path, "sequence_classification", dtype=dtype, device=device)
    if model.config.num_labels != 1:
        raise UserError(f"reward_model: {path} has {model.config.num_labels} outputs; a reward model has 1")
    tokenizer = load_tokenizer_for(path)
    align_pad_token(model, tokenizer)
    return model, tokenizer


def save_reward_input(folder: str | Path, conversational: bool) -> None:
    """An adapter folder has no model config to carry `reward_input`, so it gets this small file instead."""
    value = "conversational" if conversational else "text"
    Path(folder, REWARD_INPUT_FILE).write_text(json.dumps({REWARD_INPUT_FIELD: value}) + "\n", encoding="utf-8")


def _load_adapter_classifier(path: str, dtype: str | None, device: str | torch.device | None) -> Any:
    """A LoRA reward model: its base loads as a one-output classifier (a plain from_pretrained would give the base
    two labels and the saved one-row score head would not fit), then the adapter is merged: frozen from here on,
    one plain classifier is faster and simpler."""

    check_model_folder(path, "reward_model")
    device = device if isinstance(device, torch.device) else pick_device(device)

    with suppress_seqcls_warning():  # the base's own fresh score head is replaced by the saved one
        model = AutoPeftModelForSequenceClassification.from_pretrained(
            str(Path(path).expanduser()), num_labels=1, dtype=resolve_dtype(dtype, device)
        )
    if not getattr(model, "is_loaded_in_4bit", False):
        model = model.merge_and_unload()
    info = Path(path).expanduser() / REWARD_INPUT_FILE
    if info.is_file():
        setattr(model.config, REWARD_INPUT_FIELD, json.loads(info.read_text(encoding="utf-8"))[REWARD_INPUT_FIELD])
    return model.to(device).eval()


def load_reward_model_for_training(model_args: Any, trust_remote_code: bool = False) -> Any:
    """The model named by TRL's `ModelConfig` as a one-output sequence classifier (a fresh score head on a causal
    LM checkpoint), quantized when it asks for 4-bit or 8-bit."""

    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None and model_args.load_in_4bit:
        quantization_config.bnb_4bit_compute_dtype = (
            torch_dtype(model_args.dtype) if model_args.dtype not in (None, "auto") else torch.float32
        )
    with suppress_seqcls_warning():  # "score.weight newly initialized" is the point, not a problem
        return AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            num_labels=1,
            revision=model_args.model_revision,
            dtype=torch_dtype(model_args.dtype),
            attn_implementation=model_args.attn_implementation,
            quantization_config=quantization_config,
            device_map=_kbit_device_map(PartialState()) if quantization_config is not None else None,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )


def pairwise_metrics(eval_prediction: Any) -> dict[str, float]:
    """`compute_metrics` for pairs: predictions are rows of (chosen reward, rejected reward). Pairwise accuracy
    (ties count half) and the mean margin, over every evaluated pair."""
    pairs = torch.as_tensor(eval_prediction.predictions).float().reshape(-1, 2)
    margins = pairs[:, 0] - pairs[:, 1]
    accuracy = ((margins > 0).float() + 0.5 * (margins == 0).float()).mean()
    return {"pairwise_accuracy": float(accuracy), "mean_margin": float(margins.mean())}


def completion_text(completion: Any) -> str:
    """A TRL completion as text: a string, or the assistant messages of a conversational completion."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content") or "" for message in completion)


def reward_model_function(
    model: Any, tokenizer: Any, *, batch_size: int = 16, max_length: int | None = None, name: str = "reward_model"
) -> RewardFunction:
    """A reward model as a TRL reward function ``fn(prompts, completions, **kwargs) -> list[float]``."""

    def reward(prompts: Sequence[Prompt], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        responses = [completion_text(completion) for completion in completions]
        return score_responses(model, tokenizer, prompts, responses, batch_size=batch_size, max_length=max_length)

    reward.__name__ = name  # TRL logs each reward function's mean under its name
    return reward


def _import_module(module_name: str, spec: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise UserError(f"reward_function: file not found: {module_name}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"reward_function: cannot import '{module_name}' ({err}); is it on PYTHONPATH?") from None


def reward_function_from_path(spec: str) -> RewardFunction:
    """``"package.module:function"`` (or ``"path/to/file.py:function"``) -> the TRL-style reward function it names,
    ``fn(prompts, completions, **kwargs) -> list[float]``. Imports it: the module's code runs."""
    module_name, function_name = split_code_spec(spec, "reward_function")
    module = _import_module(module_name, spec)
    function = getattr(module, function_name, None)
    if function is None:
        raise UserError(f"reward_function: '{module_name}' has no '{function_name}'")
    if not callable(function):
        raise UserError(f"reward_function: '{spec}' is not a function")
    try:
        # TRL passes everything by keyword, with extras (completion_ids, trainer_state, dataset columns ...)
        inspect.signature(function).bind(prompts=[], completions=[], completion_ids=[], trainer_state=None)
    except TypeError:
        raise UserError(
            f"reward_function: '{spec}' must accept (prompts, completions, **kwargs) and return a list of floats"
        ) from None
    except ValueError:
        pass  # builtins without a signature: trust them
    return function


def check_reward_function(spec: str) -> None:
    """A config check of `reward_function`: imported and its signature checked, so a typo fails before any model
    loads -- except within `code_not_imported()` (a dry run), where the file or module need only exist."""
    if imports_code():
        reward_function_from_path(spec)
    else:
        check_code_exists(spec, "reward_function")


def reward_functions_for(
    reward_model_path: str | None,
    reward_function: str | None,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> list[RewardFunction]:
    """The one reward an RL stage optimizes, as TRL reward functions: a reward model folder (scored on `device`,
    the process's own) or a ``module:function``. Exactly one must be given."""
    if (reward_model_path is None) == (reward_function is None):
        raise UserError("set exactly one of reward_model_path (a reward model folder) or reward_function (module:fn)")
    if reward_function is not None:
        return [reward_function_from_path(reward_function)]
    model, tokenizer = load_reward_model(reward_model_path, device=device)
    model.requires_grad_(False)
    return [reward_model_function(model, tokenizer, batch_size=batch_size)]


def rl_summary(
    trainer: Any,
    data: Any,
    train_result: Any,
    eval_before: dict[str, float],
    eval_after: dict[str, float],
    parameters: tuple[int, int],
    seconds: float,
) -> dict[str, Any]:
    """What an RL stage (GRPO, RLOO) reports: how much it trained and how the reward moved. The reward is the
    stage's own (reward model or function), without the missing-EOS penalty TRL adds to it, as PPO's score is."""

    history = trainer.state.log_history
    names = getattr(trainer, "reward_func_names", None)
    key = f"rewards/{names[0]}/mean" if names else "reward"
    rewards = [entry[key] for entry in history if key in entry]
    trainable, total = parameters
    return {
        "conversational prompts": data.conversational,
        "training prompts": len(data.train),
        "eval prompts": len(data.eval) if data.eval is not None else 0,
        "completions per prompt": trainer.args.num_generations,
        "optimizer steps": trainer.state.global_step,
        "trainable parameters": trainable,
        "total parameters": total,
        "first train reward": rewards[0] if rewards else None,
        "final train reward": rewards[-1] if rewards else None,
        "final KL": last_logged(history, "kl"),
        "final share cut without EOS": last_logged(history, "completions/clipped_ratio"),
        "mean train loss": train_result.training_loss,
        "eval reward before": eval_before.get(f"eval_{key}"),
        "eval reward after": eval_after.get(f"eval_{key}"),
        "seconds": round(seconds, 1),
    }


# --- the RL stages' shared steps ------------------------------------------------------------------------------------


def check_rl_arguments(script_args: Any, training_args: Any, model_args: Any) -> None:
    """The checks GRPO and RLOO share: data, policy, and exactly one reward that can be found."""

    if not script_args.dataset_path:
        raise UserError("dataset_path is required: the prompts to train on")
    check_dataset_path(script_args.dataset_path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(model_args.model_name_or_path)
    # an empty value on the command line (--reward_function "") unsets a reward the YAML named
    script_args.reward_model_path = script_args.reward_model_path or None
    script_args.reward_function = script_args.reward_function or None
    if (script_args.reward_model_path is None) == (script_args.reward_function is None):
        raise UserError("set exactly one of reward_model_path (a reward model folder) or reward_function (module:fn)")
    if script_args.reward_model_path is not None:
        check_model_path(script_args.reward_model_path, "reward_model_path")
    else:
        check_reward_function(script_args.reward_function)
    check_quantized_training(model_args)
    check_eval_data(script_args, training_args)


def load_rl_inputs(script_args: Any, training_args: Any, model_args: Any) -> tuple[Any, Any, Any, list, Any]:
    """(prompts, policy, tokenizer, reward functions, peft config) -- what an RL stage starts from, given its
    `RLScriptArguments`, TRL training config and `ModelConfig`."""

    with training_args.main_process_first(desc="loading prompts"):
        data = load_prompt_data(
            script_args.dataset_path,
            script_args.data_format,
            split=script_args.dataset_split,
            eval_path=script_args.eval_dataset_path,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=training_args.seed,
            num_proc=getattr(training_args, "dataset_num_proc", None),
        )
    # Seeded first: a chat template's new tokens get random embedding rows, and TRL seeds only in its trainer
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    model = load_causal_lm(model_args, training_args.trust_remote_code)
    peft_config = get_peft_config(model_args)
    if data.conversational and ensure_chat_template(tokenizer, model) and peft_config is not None:
        peft_config.modules_to_save = list({*(peft_config.modules_to_save or []), "embed_tokens", "lm_head"})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rewards = reward_functions_for(
        script_args.reward_model_path,
        script_args.reward_function,
        batch_size=script_args.reward_batch_size,
        device=training_args.device,
    )
    return data, model, tokenizer, rewards, peft_config
