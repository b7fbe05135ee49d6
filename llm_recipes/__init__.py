"""llm-recipes: from a raw text corpus to a deployable model on the Hugging Face Hub."""

import logging
import warnings

__version__ = "0.1.0"

# bitsandbytes warns on every CPU import that an optional Hub-downloaded kernel is missing; we run offline and
# its built-in CPU path is what we want, so the warning is noise in every recipe's output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# TRL's SFTConfig still sets `gradient_checkpointing`, which transformers 5.2x renamed; users cannot act on it.
warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
