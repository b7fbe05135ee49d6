"""llm-recipes: from a raw text corpus to a deployable model on the Hugging Face Hub."""

import logging
import warnings

__version__ = "0.1.0"

# bitsandbytes warns on every CPU import that an optional Hub-downloaded kernel is missing; we run offline and
# its built-in CPU path is what we want, so the warning is noise in every recipe's output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# Offline, the `kernels` package (which bitsandbytes asks for that kernel) says on every import that it skipped the
# publisher check of a kernel it will not download anyway.
logging.getLogger("kernels").setLevel(logging.ERROR)
# transformers imports torchao (when installed) with its quantizers; on a CPU build of torch torchao warns that its
# CUDA kernels do not load and that it registers enums the old way -- nothing a user can act on.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# TRL's SFTConfig still sets `gradient_checkpointing`, which transformers 5.2x renamed; users cannot act on it.
warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
# PEFT (0.21) reads the old `is_gradient_checkpointing` name when it wraps a model; same story.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
