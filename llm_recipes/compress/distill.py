"""Knowledge distillation, teacher -> smaller student: the loss, the student, and the training rows.

- Loss: the classic logit distillation (Hinton et al.): a divergence between the temperature-softened teacher and
  student next-token distributions, times T^2 (so its gradients keep their scale as T changes), blended with the
  student's cross-entropy on the labels: `alpha * T^2 * D(teacher, student) + (1 - alpha) * CE`. D is forward KL
  (KL(teacher || student), the classic), reverse KL (KL(student || teacher), mode-seeking) or the generalized
  Jensen-Shannon divergence with weight beta (GKD's definition, so both methods mean the same thing by it). Only
  positions with a label count: padding, prompts and user turns (-100) are out of both terms.
- Student: a preset size, an existing model, or the teacher itself with only some of its blocks (every other one
  by default) -- embeddings, final norm and LM head copied, so the student starts from a working model rather
  than from noise. Distilling logits needs one vocabulary, so a student with its own tokenizer must match the
  teacher's token for token (checked, with a clear error).
- Rows: text is tokenized and packed into full blocks like pretraining (`llm_recipes.data.packing`); chats are
  rendered with the tokenizer's chat template and labelled on the assistant turns only; prompt/completion pairs on
  the completion only (the same labels TRL's SFT trainer builds).

Why our own loss and trainer rather than TRL's: TRL ships distillation only in `trl.experimental` (GKD,
DistillationTrainer), whose API changes between releases; the stable logit-distillation path is small enough to
own. TRL's GKD (on-policy, student-generated sequences) stays available as an option behind a feature check.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from llm_recipes.data.loading import standard_shape
from llm_recipes.data.packing import pack_documents, tokenize_documents
from llm_recipes.errors import UserError
from llm_recipes.models.loading import DECODER_PRESETS, build_config, init_model, transformer_blocks

IGNORE_INDEX = -100
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
# config fields holding one entry per decoder layer, which must follow the layers a student keeps
PER_LAYER_CONFIG_FIELDS = ("layer_types", "no_rope_layers")


# --------------------------------------------------------------------------------------------------------------
# Loss


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
) -> torch.Tensor:
    """Divergence between teacher and student next-token distributions at temperature T, one value per position
    (the last dimension is the vocabulary). Without the T^2 factor."""
    if divergence not in DIVERGENCES:
        raise UserError(f"divergence: unknown '{divergence}'; choose from {', '.join(DIVERGENCES)}")
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if divergence == "forward_kl":
        return _kl(teacher, student)
    if divergence == "reverse_kl":
        return _kl(student, teacher)
    # generalized JSD: M = beta * teacher + (1 - beta) * student; beta * KL(teacher||M) + (1 - beta) * KL(student||M)
    if jsd_beta in (0.0, 1.0):  # GKD's convention: the ends mean the two KLs (the mixture formula vanishes there)
        return _kl(teacher, student) if jsd_beta == 0.0 else _kl(student, teacher)
    beta = torch.tensor(jsd_beta, dtype=student.dtype, device=student.device)
    mixture = torch.logsumexp(torch.stack([teacher + torch.log(beta), student + torch.log1p(-beta)]), dim=0)
    return jsd_beta * _kl(teacher, mixture) + (1 - jsd_beta) * _kl(student, mixture)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


@dataclass
class DistillationSums:
    """Per-batch sums over the labelled positions, so the caller decides the normalisation (tokens of this batch,
    or of the whole accumulated batch) and logs token-weighted means."""

    kd: torch.Tensor  # sum of T^2 * divergence
    ce: torch.Tensor  # sum of cross-entropy with the labels
    tokens: torch.Tensor  # labelled positions


def distillation_sums(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
) -> DistillationSums:
    """KD and CE sums for causal-LM logits (batch, seq, vocab): logits at position i predict label i + 1.

    `teacher_logits=None` skips the KD term (labels-only training). Positions labelled -100 count in neither term.
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    student = student_logits[:, :-1][mask]  # (tokens, vocab): only labelled positions pay for the softmaxes
    targets = labels[:, 1:][mask]
    ce = F.cross_entropy(student.float(), targets, reduction="sum")
    if teacher_logits is None:
        kd = ce.new_zeros(())
    else:
        if teacher_logits.shape[-1] != student_logits.shape[-1]:
            raise UserError(
                f"teacher and student logits differ in vocabulary size ({teacher_logits.shape[-1]} vs "
                f"{student_logits.shape[-1]}); distillation needs one vocabulary"
            )
        teacher = teacher_logits[:, :-1][mask].to(student.device)
        divergences = token_divergence(
            student, teacher, temperature=temperature, divergence=divergence, jsd_beta=jsd_beta
        )
        kd = divergences.sum() * temperature**2
    return DistillationSums(kd=kd, ce=ce, tokens=mask.sum())


def blend(sums: DistillationSums, alpha: float, num_items: torch.Tensor | int | None = None) -> torch.Tensor:
    """`(alpha * kd + (1 - alpha) * ce) / tokens`, tokens being `num_items` (the whole accumulated batch's labelled
    tokens, as the Trainer counts them) when given, else this batch's."""
    denominator = num_items if num_items is not None else sums.tokens
    if torch.is_tensor(denominator):
        denominator = denominator.to(sums.ce.device).clamp(min=1)
    else:
        denominator = max(int(denominator), 1)
    return (alpha * sums.kd + (1 - alpha) * sums.ce) / denominator


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    alpha: float = 1.0,
    temperature: float = 1.0,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
) -> torch.Tensor:
    """The blended loss averaged over the labelled tokens: `alpha * T^2 * D + (1 - alpha) * CE`."""
    sums = distillation_sums(
        student_logits, teacher_logits, labels, temperature=temperature, divergence=divergence, jsd_beta=jsd_beta
    )
    return blend(sums, alpha)


# --------------------------------------------------------------------------------------------------------------
# Tokenizers: one vocabulary for teacher and student


def check_same_tokenizer(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase) -> None:
    """The student's tokenizer must be the teacher's: same tokens with the same ids, same special tokens.
    Raises UserError naming the first difference."""
    teacher_vocab, student_vocab = teacher.get_vocab(), student.get_vocab()
    if teacher_vocab != student_vocab:
        if len(teacher_vocab) != len(student_vocab):
            difference = f"{len(student_vocab)} tokens vs the teacher's {len(teacher_vocab)}"
        else:
            token = next(t for t, i in student_vocab.items() if teacher_vocab.get(t) != i)
            difference = f"token {token!r} has id {student_vocab[token]} vs the teacher's {teacher_vocab.get(token)}"
        raise UserError(
            f"the student's tokenizer differs from the teacher's ({difference}); logit distillation needs the same "
            "tokenizer -- use a student built from the teacher (student_layers or student_preset)"
        )
    for name in ("bos_token_id", "eos_token_id", "unk_token_id"):
        if getattr(teacher, name) != getattr(student, name):
            raise UserError(
                f"the student's tokenizer has {name} {getattr(student, name)} but the teacher's has "
                f"{getattr(teacher, name)}; save the student with the teacher's tokenizer"
            )


def check_same_vocab_size(teacher: PretrainedConfig, student: PretrainedConfig) -> None:
    """The two models' output layers must have the same width (the logits are compared entry by entry)."""
    teacher_size = teacher.get_text_config().vocab_size
    student_size = student.get_text_config().vocab_size
    if teacher_size != student_size:
        raise UserError(
            f"the student's vocab_size is {student_size} but the teacher's is {teacher_size}; the logits must "
            "line up -- resize the student's embeddings to the teacher's vocab_size"
        )


# --------------------------------------------------------------------------------------------------------------
# Students


def every_other_layer(num_layers: int) -> list[int]:
    """Layers 0, 2, 4, ...: half the depth, spread over the whole stack."""
    return list(range(0, num_layers, 2))


def check_student_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Distinct, increasing teacher layer indices within the teacher's depth; raises UserError otherwise."""
    layers = list(layers)
    if not layers:
        raise UserError("student_layers: give at least one teacher layer index")
    out_of_range = [index for index in layers if not 0 <= index < num_layers]
    if out_of_range:
        raise UserError(f"student_layers: {out_of_range} out of range; the teacher has layers 0..{num_layers - 1}")
    if layers != sorted(set(layers)):
        raise UserError(f"student_layers: {layers} must be distinct and increasing (the order the layers run in)")
    return layers


def _blocks_prefix(model: PreTrainedModel) -> str:
    """The state-dict prefix of the decoder blocks, e.g. `model.layers.` for Llama-family models."""

    try:
        blocks = transformer_blocks(model)
    except UserError:
        blocks = None
    for name, module in model.named_modules():
        if module is blocks:
            return name + "."
    raise UserError(
        f"cannot take layers from a {model.config.model_type} teacher: its decoder blocks were not found "
        "(use student_preset or student_name_or_path instead)"
    )


def student_config_from_teacher(config: PretrainedConfig, layers: Sequence[int]) -> PretrainedConfig:
    """The teacher's config with only `layers` (per-layer fields such as `layer_types` follow them)."""
    student = copy.deepcopy(config)
    num_layers = config.num_hidden_layers
    student.num_hidden_layers = len(layers)
    for name in PER_LAYER_CONFIG_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, list) and len(value) == num_layers:
            setattr(student, name, [value[index] for index in layers])
    return student


def student_from_teacher(teacher: PreTrainedModel, layers: Sequence[int] | None = None) -> PreTrainedModel:
    """A shallower copy of `teacher`: its embeddings, final norm and LM head, and the decoder blocks `layers`
    (default: every other one), in order. A new model is built for the smaller config (so each block knows its
    new index, which the KV cache relies on) and the weights are copied in."""

    num_layers = teacher.config.num_hidden_layers
    layers = check_student_layers(layers if layers is not None else every_other_layer(num_layers), num_layers)
    prefix = _blocks_prefix(teacher)
    config = student_config_from_teacher(teacher.config, layers)
    student = AutoModelForCausalLM.from_config(config, dtype=teacher.dtype)
    teacher_state = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        source = key
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            source = f"{prefix}{layers[int(index)]}.{rest}"
        if source not in teacher_state:
            raise UserError(f"cannot take layers from the teacher: it has no weight {source} for the student's {key}")
        state[key] = teacher_state[source]
    student.load_state_dict(state)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student


def student_from_preset(
    preset: str,
    tokenizer: PreTrainedTokenizerBase,
    teacher_config: PretrainedConfig,
    overrides: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """A random model of a named size whose vocabulary matches the teacher's output layer (which may be padded
    beyond the tokenizer's length) and whose special tokens follow the teacher's."""

    if preset not in DECODER_PRESETS:
        raise UserError(f"student_preset: unknown '{preset}'; choose from {', '.join(DECODER_PRESETS)}")
    fields = {
        "vocab_size": teacher_config.get_text_config().vocab_size,
        "bos_token_id": teacher_config.bos_token_id,
        "eos_token_id": teacher_config.eos_token_id,
        "pad_token_id": teacher_config.pad_token_id,
    }
    fields = {key: value for key, value in fields.items() if value is not None}
    return init_model(build_config(tokenizer, preset=preset, overrides={**fields, **(overrides or {})}))


# --------------------------------------------------------------------------------------------------------------
# Training rows


@dataclass
class DistillationRows:
    train: Dataset  # input_ids (+ labels; packed text rows have none: every token is a target)
    eval: Dataset | None
    eval_texts: list[str]  # the eval rows as plain text, for perplexity in the comparison report
    shape: str  # text, messages or prompt_completion
    eval_prompts: list[Any] = field(default_factory=list)  # what to answer, for a reward comparison (chats)


def chat_text(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> str:
    """A row of any standard shape as the text the model reads (chats through the chat template)."""
    if "messages" in row:
        return tokenizer.apply_chat_template(row["messages"], tokenize=False)
    if "prompt" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):
            return tokenizer.apply_chat_template([*prompt, *completion], tokenize=False)
        return prompt + completion
    return row["text"]


def eval_prompt(row: dict[str, Any]) -> Any:
    """What a model is asked in a chat or prompt/completion row: the turns before the last assistant turn, or the
    prompt. None for text rows."""
    if "messages" in row:
        assistant_turns = [i for i, turn in enumerate(row["messages"]) if turn["role"] == "assistant"]
        return row["messages"][: assistant_turns[-1]] if assistant_turns else None
    return row.get("prompt")


def eval_samples(
    tokenizer: PreTrainedTokenizerBase, dataset: Dataset | None, limit: int | None
) -> tuple[list[str], list[Any]]:
    """(texts, prompts) of the first `limit` eval rows, for the comparison report."""
    if dataset is None:
        return [], []
    rows = list(dataset.select(range(min(len(dataset), limit or len(dataset)))))
    prompts = [eval_prompt(row) for row in rows]
    return [chat_text(tokenizer, row) for row in rows], [prompt for prompt in prompts if prompt]


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], assistant_only: bool
) -> dict[str, list[int]]:
    """A conversation -> input_ids and labels (the assistant turns only, when `assistant_only`)."""
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=assistant_only
    )
    ids = list(encoded["input_ids"])
    if not assistant_only:
        return {"input_ids": ids, "labels": ids}
    mask = encoded["assistant_masks"]
    return {"input_ids": ids, "labels": [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]}


def encode_prompt_completion(tokenizer: PreTrainedTokenizerBase, prompt: Any, completion: Any) -> dict[str, list[int]]:
    """A prompt/completion pair -> input_ids and labels on the completion only (the prompt is -100)."""
    if isinstance(prompt, list):  # conversational: the prompt ends with the assistant header
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        full_ids = tokenizer.apply_chat_template([*prompt, *completion], tokenize=True, return_dict=True)
        prompt_ids, ids = list(prompt_ids["input_ids"]), list(full_ids["input_ids"])
    else:
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + completion)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)  # so the student learns to stop where the completion does
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids) :]}


def _encode_batch(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int, assistant_only: bool
) -> dict[str, list]:
    rows: list[dict[str, list[int]]]
    if "messages" in batch:
        rows = [encode_chat(tokenizer, messages, assistant_only) for messages in batch["messages"]]
    else:
        rows = [
            encode_prompt_completion(tokenizer, prompt, completion)
            for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True)
        ]
    return {
        "input_ids": [row["input_ids"][:max_length] for row in rows],
        "labels": [row["labels"][:max_length] for row in rows],
    }


def _has_target(batch: dict[str, list]) -> list[bool]:
    # a row needs a target after the first position (labels are shifted by one)
    return [any(label != IGNORE_INDEX for label in labels[1:]) for labels in batch["labels"]]


def encode_rows(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    assistant_only: bool = True,
    num_proc: int | None = None,
) -> Dataset:
    """Chats or prompt/completion pairs -> input_ids + labels, truncated to `max_length`; rows left without a
    target (a prompt filling the whole window) are dropped. Raises UserError when nothing is labelled at all
    (a chat template without `{% generation %}` markers cannot say which tokens the assistant wrote)."""
    encoded = dataset.map(
        _encode_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "assistant_only": assistant_only},
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="Tokenizing chats",
    )
    kept = encoded.filter(_has_target, batched=True, num_proc=num_proc, desc="Dropping rows without targets")
    if len(kept) == 0:
        if assistant_only and "messages" in dataset.column_names:
            raise UserError(
                "no assistant tokens found: the chat template has no {% generation %} markers to show which tokens "
                "the assistant wrote; set assistant_only_loss: false (train on whole conversations)"
            )
        raise UserError(f"no row has a target token within max_length {max_length}; raise max_length")
    return kept


def prepare_rows(
    train: Dataset,
    eval_dataset: Dataset | None,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    assistant_only: bool = True,
    num_proc: int | None = None,
    max_eval_texts: int | None = None,
) -> DistillationRows:
    """Standard-column data -> training rows: text packed into `max_length` blocks (EOS between documents),
    chats and prompt/completion pairs one per row with their labels."""

    shape = standard_shape(train.column_names)

    def rows(dataset: Dataset) -> Dataset:
        if shape == "text":
            documents = tokenize_documents(dataset, tokenizer, num_proc=num_proc)
            return pack_documents(documents, max_length, num_proc=num_proc)
        return encode_rows(dataset, tokenizer, max_length, assistant_only=assistant_only, num_proc=num_proc)

    eval_texts, eval_prompts = eval_samples(tokenizer, eval_dataset, max_eval_texts)
    return DistillationRows(
        train=rows(train),
        eval=rows(eval_dataset) if eval_dataset is not None else None,
        eval_texts=eval_texts,
        shape=shape,
        eval_prompts=eval_prompts,
    )


@dataclass
class PaddedRowsCollator:
    """Rows of input_ids (+ labels) -> a right-padded batch with an attention mask; padding is never a target.
    Rows without labels (packed text) are their own labels."""

    pad_token_id: int
    pad_to_multiple_of: int | None = 8

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(example["input_ids"]) for example in examples)
        width = longest
        if self.pad_to_multiple_of:
            width = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            targets = example.get("labels")  # missing (or None in a mixed dataset): every token is a target
            labels[row, : len(ids)] = torch.as_tensor(targets if targets is not None else ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


# --------------------------------------------------------------------------------------------------------------
# GKD (TRL experimental), behind a feature check

GKD_MISSING = "this TRL version has no GKDTrainer at trl.experimental.gkd; use method: logits"


def load_gkd() -> tuple[type, type]:
    """(GKDConfig, GKDTrainer) from TRL's experimental GKD, checked for the arguments we pass; UserError if this
    TRL moved or changed them."""

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we chose the experimental module knowingly
    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer  # noqa: PLC0415  (after the env var it reads)
    except ImportError:
        raise UserError(GKD_MISSING) from None
    config_fields = set(getattr(GKDConfig, "__dataclass_fields__", {}))
    needed_fields = {"lmbda", "beta", "temperature", "max_new_tokens", "seq_kd", "max_length"}
    parameters = set(inspect.signature(GKDTrainer.__init__).parameters)
    needed_parameters = {"model", "teacher_model", "args", "train_dataset", "eval_dataset", "processing_class"}
    missing = sorted((needed_fields - config_fields) | (needed_parameters - parameters))
    if missing:
        raise UserError(f"{GKD_MISSING} (its GKDTrainer/GKDConfig lack {', '.join(missing)})")
    return GKDConfig, GKDTrainer


def gkd_beta(divergence: str, jsd_beta: float) -> float:
    """GKD's beta for our divergence names: 0 is forward KL, 1 reverse KL, in between the generalized JSD."""
    return {"forward_kl": 0.0, "reverse_kl": 1.0}.get(divergence, jsd_beta)
