"""Tokenizer training with the `tokenizers` library, saved so `AutoTokenizer.from_pretrained(dir)` loads it."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llm_recipes.chat import CHATML_TEMPLATE, IM_END, IM_START

BOS, EOS, PAD, UNK = "<|begin_of_text|>", "<|endoftext|>", "<|pad|>", "<|unk|>"


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    *,
    chat: bool = False,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (every byte is in the alphabet, so no text is ever unknown).

    With `chat=True` the ChatML tokens are added as special tokens and the ChatML template is set, with
    `<|im_end|>` as EOS so chat generation stops after a turn; otherwise EOS is the document separator.
    """
    special_tokens = [EOS, PAD, BOS, UNK] + ([IM_START, IM_END] if chat else [])
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=IM_END if chat else EOS,
        pad_token=PAD,
        unk_token=UNK,
    )
    if chat:
        wrapped.chat_template = CHATML_TEMPLATE
    return wrapped
