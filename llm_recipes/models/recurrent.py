"""A recurrent (LSTM or GRU) language model, shaped like any transformers causal LM.

The classic baseline a Transformer has to beat. It is a `PreTrainedModel` registered with `AutoConfig` and
`AutoModelForCausalLM` (model_type "recurrent_lm"), so the pretrain recipe, `Trainer`, `save_pretrained`,
`from_pretrained` and `generate` treat it like a Llama: `import llm_recipes.models` (done by every recipe) and
`AutoModelForCausalLM.from_pretrained(folder)` loads it. The Hub has no such architecture in transformers, hence ours.

Packed training works (EOS separates documents) but the recurrent state flows across document boundaries in a
block; position ids and 4D attention masks mean nothing to an RNN and are ignored.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

RECURRENT_PRESETS: dict[str, dict[str, Any]] = {
    "lstm-tiny": dict(cell="lstm", hidden_size=64, num_hidden_layers=2),
    "gru-tiny": dict(cell="gru", hidden_size=64, num_hidden_layers=2),
    "lstm-small": dict(cell="lstm", hidden_size=256, num_hidden_layers=2),
    "lstm-medium": dict(cell="lstm", hidden_size=650, num_hidden_layers=2, dropout=0.5),  # Zaremba et al.'s medium
}


class RecurrentLMConfig(PretrainedConfig):
    model_type = "recurrent_lm"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 256,
        num_hidden_layers: int = 2,
        cell: str = "lstm",
        dropout: float = 0.1,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 1_000_000,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ):
        if cell not in CELLS:
            raise ValueError(f"cell: unknown '{cell}'; choose from {', '.join(CELLS)}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.cell = cell
        self.dropout = dropout
        self.initializer_range = initializer_range
        # no positional limit; the pretrain recipe caps block_size by this field, as it does for Transformers
        self.max_position_embeddings = max_position_embeddings
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class RecurrentLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = RecurrentLMConfig
    base_model_prefix = "recurrent"
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}

    def __init__(self, config: RecurrentLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = CELLS[config.cell](
            config.hidden_size,
            config.hidden_size,
            num_layers=config.num_hidden_layers,
            dropout=config.dropout if config.num_hidden_layers > 1 else 0.0,
            batch_first=True,
        )
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if "weight" in name:
                    nn.init.xavier_uniform_(param)
                else:
                    nn.init.zeros_(param)
        else:
            super()._init_weights(module)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,  # position_ids, cache flags and the like: meaningless for an RNN
    ) -> CausalLMOutput:
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        hidden, _ = self.rnn(self.dropout(hidden))
        logits = self.lm_head(self.dropout(hidden))
        loss = None
        if labels is not None:
            # the same shift-by-one as every transformers causal LM: position t predicts token t+1
            # with gradient accumulation the Trainer passes the token count of the whole accumulated batch, so the
            # sum over this micro-batch divided by it gives the same gradient as one big batch
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
                reduction="mean" if num_items_in_batch is None else "sum",
            )
            if num_items_in_batch is not None:
                loss = loss / num_items_in_batch
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # no cache: each step re-reads the whole prefix, which is fine for a baseline
        return {"input_ids": input_ids, "attention_mask": attention_mask}


AutoConfig.register(RecurrentLMConfig.model_type, RecurrentLMConfig, exist_ok=True)
AutoModelForCausalLM.register(RecurrentLMConfig, RecurrentLMForCausalLM, exist_ok=True)
