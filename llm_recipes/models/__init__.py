"""Model architectures we ship ourselves, registered with the transformers Auto classes on import.

Only what the Hub's architectures lack: a recurrent (LSTM/GRU) language model, the classic baseline a
Transformer must beat, trained and saved through the same Trainer, `save_pretrained` and `from_pretrained`.
"""

from llm_recipes.models.recurrent import RECURRENT_PRESETS, RecurrentLMConfig, RecurrentLMForCausalLM

__all__ = ["RECURRENT_PRESETS", "RecurrentLMConfig", "RecurrentLMForCausalLM"]
