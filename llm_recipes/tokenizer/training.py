"""Tokenizer training with the `tokenizers` library, saved so `AutoTokenizer.from_pretrained(dir)` loads it.

Two algorithms, both lossless (decode(encode(text)) == text, and no text ever becomes UNK):

* byte-level BPE (GPT-2 / Llama 3 style): every byte is in the alphabet.
* Unigram (SentencePiece style, Metaspace pre-tokenizer) with byte fallback: a character the vocabulary lacks is
  spelled as `<0xNN>` byte tokens. `tokenizers`' UnigramTrainer has no byte-fallback option (it resets the flag on
  the model it trains), so the 256 byte pieces are appended after training, which is what we write ourselves.
  No Unicode normalizer and no dummy prefix (like Gemma), so leading spaces and decomposed accents survive; the one
  loss is a literal `▁` (U+2581) in the text, which decodes as a space.

`measure_fertility` is the held-out report: tokens per word and bytes per token say how well a vocabulary fits a
language or domain, and how many tokens a corpus will cost to train on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from llm_recipes.errors import UserError
from llm_recipes.models.chat import CHATML_TEMPLATE, IM_END, IM_START

BOS, EOS, PAD, UNK = "<|begin_of_text|>", "<|endoftext|>", "<|pad|>", "<|unk|>"
ALGORITHMS = ("bpe", "unigram")

BYTE_TOKENS = tuple(f"<0x{value:02X}>" for value in range(256))
# Byte pieces score far below any learned piece, and the characters they are spelled with are always in the
# vocabulary, so a literal "<0x41>" in the text is tokenized as characters, not as the byte token (which would
# decode to "A").
_BYTE_PIECE_PENALTY = 1e4
_BYTE_PIECE_ALPHABET = sorted(set("".join(BYTE_TOKENS)))


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    algorithm: str = "bpe",
    chat: bool = False,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (),
    add_bos: bool = False,
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE or a byte-fallback Unigram tokenizer on `texts`.

    Special tokens come first in the vocabulary: EOS, PAD, BOS, UNK, then the ChatML tokens (`chat=True`), then
    `special_tokens`. With `chat=True` the ChatML template is set and `<|im_end|>` is EOS, so chat generation stops
    after a turn; otherwise EOS is the document separator. `add_bos=True` makes encoding prepend BOS.
    `min_frequency` applies to BPE merges only (Unigram prunes by likelihood instead).
    """
    if algorithm not in ALGORITHMS:
        raise UserError(f"algorithm: unknown '{algorithm}'; choose from {', '.join(ALGORITHMS)}")
    specials = list(dict.fromkeys([EOS, PAD, BOS, UNK] + ([IM_START, IM_END] if chat else []) + list(special_tokens)))
    if algorithm == "bpe":
        backend = _train_byte_level_bpe(texts, vocab_size, specials, min_frequency)
    else:
        backend = _train_unigram(texts, vocab_size, specials)
    extra = {"extra_special_tokens": specials[4:]} if specials[4:] else {}
    if model_max_length is not None:
        extra["model_max_length"] = model_max_length
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=IM_END if chat else EOS,
        pad_token=PAD,
        unk_token=UNK,
        add_bos_token=add_bos,  # transformers builds the TemplateProcessing post-processor from this, and saves it
        **extra,
    )
    if chat:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    *,
    chat: bool = False,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (every byte is in the alphabet, so no text is ever unknown)."""
    return train_tokenizer(texts, vocab_size, algorithm="bpe", chat=chat, min_frequency=min_frequency)


def _train_byte_level_bpe(texts: Iterable[str], vocab_size: int, specials: list[str], min_frequency: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _train_unigram(texts: Iterable[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    # "never": no dummy space before the first word, so text starting with a space round-trips exactly
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS),  # the byte pieces added below complete the requested size
        special_tokens=specials,
        unk_token=UNK,
        initial_alphabet=_BYTE_PIECE_ALPHABET,
        show_progress=False,
    )
    try:
        tokenizer.train_from_iterator(texts, trainer)
    except Exception as err:  # the Rust trainer raises a bare Exception
        if "not large enough to contain all chars" in str(err):
            raise UserError(
                f"vocab_size: {vocab_size} is too small for a Unigram vocabulary of this text: it must hold every "
                f"distinct character plus {len(BYTE_TOKENS)} byte tokens; raise vocab_size or use algorithm: bpe"
            ) from None
        raise
    enable_byte_fallback(tokenizer)
    return tokenizer


def enable_byte_fallback(tokenizer: Tokenizer) -> None:
    """Give a Unigram backend the `<0xNN>` byte pieces and switch byte fallback on, in place.

    The pieces are appended, so no existing token id moves (special tokens and post-processor ids stay valid).
    """
    model = json.loads(tokenizer.to_str())["model"]
    if model["type"] != "Unigram":
        raise ValueError(f"byte fallback is added to Unigram models only, not {model['type']}")
    vocab = [(piece, score) for piece, score in model["vocab"]]
    present = {piece for piece, _ in vocab}
    lowest = min(score for _, score in vocab)
    vocab += [(piece, lowest - _BYTE_PIECE_PENALTY) for piece in BYTE_TOKENS if piece not in present]
    tokenizer.model = models.Unigram(vocab, model["unk_id"], byte_fallback=True)


def retrain_tokenizer(base: PreTrainedTokenizerBase, texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train `base`'s algorithm and pipeline on new text: same special tokens, chat template and BOS behaviour.

    Upstream's `train_new_from_iterator` does the work; it drops Unigram byte fallback, which is put back here.
    """
    if not base.is_fast:
        raise UserError("base_tokenizer: retraining needs a fast tokenizer (a folder with tokenizer.json)")
    model = json.loads(base.backend_tokenizer.to_str())["model"]
    byte_fallback = model["type"] == "Unigram" and bool(model.get("byte_fallback"))
    target_size = vocab_size - len(BYTE_TOKENS) if byte_fallback else vocab_size
    extra = {"initial_alphabet": _BYTE_PIECE_ALPHABET} if byte_fallback else {}
    try:
        tokenizer = base.train_new_from_iterator(texts, target_size, show_progress=False, **extra)
    except ValueError as err:
        raise UserError(f"base_tokenizer: cannot be retrained: {str(err).splitlines()[0]}") from None
    if byte_fallback:
        enable_byte_fallback(tokenizer.backend_tokenizer)
    if base.chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = base.chat_template
    return tokenizer


@dataclass
class Fertility:
    """How many tokens a text costs: the lower tokens_per_word and the higher bytes_per_token, the better the fit."""

    tokens_per_word: float
    bytes_per_token: float
    chars_per_token: float
    unknown_rate: float  # share of tokens that are UNK (0 for byte-level BPE and byte-fallback Unigram)
    documents: int


def measure_fertility(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 256) -> Fertility:
    """Encode `texts` without special tokens and relate the token count to words (whitespace-split) and bytes."""
    tokens = words = utf8_bytes = chars = unknown = 0
    unk_id = tokenizer.unk_token_id
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        encoded = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for text, ids in zip(batch, encoded["input_ids"], strict=True):
            tokens += len(ids)
            words += len(text.split())
            utf8_bytes += len(text.encode("utf-8"))
            chars += len(text)
            if unk_id is not None:
                unknown += sum(1 for token_id in ids if token_id == unk_id)
    return Fertility(
        tokens_per_word=tokens / words if words else 0.0,
        bytes_per_token=utf8_bytes / tokens if tokens else 0.0,
        chars_per_token=chars / tokens if tokens else 0.0,
        unknown_rate=unknown / tokens if tokens else 0.0,
        documents=len(texts),
    )
