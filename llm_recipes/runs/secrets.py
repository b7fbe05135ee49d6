"""Hub tokens live in the environment, never in a file we write.

A token given in a config (`hub_token`, or `token` inside a mapping such as `model_init_kwargs`) moves to HF_TOKEN
in this process's environment, where huggingface_hub and transformers look for one and which every stage launched
from here inherits, and its field is emptied before anything is saved: the Trainer pickles its arguments into
training_args.bin beside the model and in every checkpoint, and the pipeline writes each stage's config to a file.
Without a token in the config, huggingface_hub finds HF_TOKEN or the `hf auth login` store itself.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from llm_recipes.runs.manifest import SECRET_FIELDS

TOKEN_ENV = "HF_TOKEN"
# words of an environment variable's name that make its value a secret (HF_TOKEN, WANDB_API_KEY; an `env:` mapping
# in a config may set them), as whole words: TOKENIZERS_PARALLELISM is no secret
SECRET_ENV_WORDS = frozenset({"TOKEN", "SECRET", "PASSWORD", "KEY"})


def is_secret_env(name: str) -> bool:
    return not SECRET_ENV_WORDS.isdisjoint(str(name).upper().split("_"))


def take_token(config: Any) -> None:
    """Move the tokens a parsed config (a dataclass such as TrainingArguments) holds into HF_TOKEN, emptying the
    fields: the config can then be saved, pickled or printed."""
    names = [f.name for f in dataclasses.fields(config)] if dataclasses.is_dataclass(config) else []
    for name in names:
        value = getattr(config, name, None)
        if name in SECRET_FIELDS and isinstance(value, str) and value:
            os.environ[TOKEN_ENV] = value
            setattr(config, name, None)
        elif isinstance(value, dict):
            take_secrets(value)


def take_secrets(mapping: dict[str, Any]) -> bool:
    """Take every secret out of a config mapping, in place, into the environment: tokens (at any depth) into
    HF_TOKEN, and the secret entries of an `env:` mapping into their own variables (where the stage would have put
    them). Returns whether anything was taken."""
    taken = False
    for key in list(mapping):
        value = mapping[key]
        if key in SECRET_FIELDS and isinstance(value, str):
            if value:
                os.environ[TOKEN_ENV] = value
            del mapping[key]
            taken = True
        elif key == "env" and isinstance(value, dict):
            for name in [name for name in value if is_secret_env(name)]:
                os.environ[str(name)] = str(value.pop(name))
                taken = True
            if not value:
                del mapping[key]
        elif isinstance(value, dict):
            taken = take_secrets(value) or taken
        elif isinstance(value, list):
            for item in value:
                taken = (isinstance(item, dict) and take_secrets(item)) or taken
    return taken
