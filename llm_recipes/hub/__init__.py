"""Model cards and Hub pushes: one implementation for the export stage and for every training stage's
`push_to_hub`.

The card is huggingface_hub's `ModelCard`/`ModelCardData` (metadata, `model-index` eval results) and is checked
with huggingface_hub's own parser before anything is written. What we add is its content: every stage that
produced the model, found by following the stage manifests from the model folder back through the folders each
stage read (e.g. clean-corpus -> train-tokenizer -> pretrain -> sft -> export), with its configuration and
metrics; the evaluation stage's results; and a usage snippet for what the folder actually holds.

Pushing is `HfApi.create_repo` (private by default) + `create_branch` + `upload_folder`, once per stage, at its end
(the Trainer's own pushing is turned off). The token comes from `HF_TOKEN` (where a stage moves a config's
`hub_token` before anything is saved, llm_recipes.runs.secrets) or the `hf auth login` store, and is never printed or
written: Hub errors are turned into one-line `UserError`s with any token text removed. Without a network the push
stops with a message saying the folder is complete and the exact command that uploads it later.

    history.py  the stages that made a model, from the manifests; the Hub ids they started from
    results.py  the evaluation stage's results for the card's model-index, and its report copied beside the model
    folder.py   what a model folder holds (full model or adapter, quantized, its task) and its usage snippet
    card.py     the model card: build, check, write
    push.py     repo creation, upload, the offline fallback, and the Trainer's push taken over by ours
"""

from llm_recipes.hub.card import (
    CARD_NAME,
    CARD_TEMPLATE,
    CardOptions,
    build_model_card,
    card_tags,
    check_card,
    write_model_card,
)
from llm_recipes.hub.folder import FolderFacts, folder_facts, usage_snippet
from llm_recipes.hub.history import StageRecord, hub_datasets, hub_models, stage_history
from llm_recipes.hub.push import (
    PUSH_IGNORE,
    PushResult,
    connection_errors,
    hub_offline,
    push_folder,
    push_stage_output,
    push_trained_output,
    take_over_trainer_push,
    upload_command,
)
from llm_recipes.hub.results import (
    EVAL_RESULTS_NAME,
    EvalReport,
    copy_eval_results,
    eval_results_file,
    read_eval_results,
)

__all__ = [
    "CARD_NAME",
    "CARD_TEMPLATE",
    "EVAL_RESULTS_NAME",
    "PUSH_IGNORE",
    "CardOptions",
    "EvalReport",
    "FolderFacts",
    "PushResult",
    "StageRecord",
    "build_model_card",
    "card_tags",
    "check_card",
    "connection_errors",
    "copy_eval_results",
    "eval_results_file",
    "folder_facts",
    "hub_datasets",
    "hub_models",
    "hub_offline",
    "push_folder",
    "push_stage_output",
    "push_trained_output",
    "read_eval_results",
    "stage_history",
    "take_over_trainer_push",
    "upload_command",
    "usage_snippet",
    "write_model_card",
]
