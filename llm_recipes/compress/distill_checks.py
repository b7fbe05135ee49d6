"""The distill stage's config checks: everything a user can get wrong fails here, before a model's weights load.

Cheap to import (torch and transformers load inside the checks that read a tokenizer or a config), so the recipe's
parse_args and a pipeline dry run stay quick.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoTokenizer

from llm_recipes.compress.config import DistillArguments
from llm_recipes.compress.distill import check_same_tokenizer, check_same_vocab_size, check_student_layers
from llm_recipes.configs import check_model_path, is_planned
from llm_recipes.configs.code import imports_code
from llm_recipes.errors import UserError
from llm_recipes.evaluation.protocol import check_protocol_paths, read_protocol
from llm_recipes.models.loading import DECODER_PRESETS
from llm_recipes.pretrain.build import parse_overrides


def check_report_fields(script_args: DistillArguments) -> None:
    """The comparison with the teacher is described by a protocol file; the old report fields say to use one."""

    if script_args.report_reward_model:
        raise UserError(
            "report_reward_model: replaced by protocol (a protocol YAML whose reward_model scores both models' "
            "answers, e.g. configs/demo/protocol.yaml)"
        )
    if script_args.report_max_new_tokens != 64:
        raise UserError("report_max_new_tokens: replaced by protocol (its max_new_tokens)")
    if script_args.protocol:
        check_protocol_paths(read_protocol(script_args.protocol))


def check_labels_only(script_args: DistillArguments) -> None:
    """compare_labels_only needs what its baseline is trained and measured with."""
    if script_args.method != "logits":
        raise UserError("compare_labels_only: the baseline is trained by the logits method's trainer (method: logits)")
    if not script_args.protocol or not script_args.compare_with_teacher:
        raise UserError(
            "compare_labels_only: set protocol (and compare_with_teacher), the measures both students share"
        )
    if script_args.alpha == 0:
        raise UserError("compare_labels_only: alpha is 0, so this student is already trained on the labels alone")


def check_student_source(script_args: DistillArguments) -> None:
    """At most one student source (layers, preset or model), and that one usable."""

    sources = [
        name for name in ("student_layers", "student_preset", "student_name_or_path") if getattr(script_args, name)
    ]
    if len(sources) > 1:
        raise UserError(f"set one student source, not {' and '.join(sources)} (none: every other teacher layer)")
    if script_args.student_preset and script_args.student_preset not in DECODER_PRESETS:
        raise UserError(
            f"student_preset: unknown '{script_args.student_preset}'; choose from {', '.join(DECODER_PRESETS)}"
        )
    if script_args.student_config_overrides and not script_args.student_preset:
        raise UserError("student_config_overrides applies to student_preset only")
    parse_overrides(script_args.student_config_overrides, "student_config_overrides")
    if script_args.student_name_or_path:
        check_model_path(script_args.student_name_or_path, "student_name_or_path")


def check_models(script_args: DistillArguments) -> None:
    """Cheap model-level checks from tokenizers and configs, no weights: one vocabulary for teacher and student, and
    student layers the teacher has. Skipped where an earlier pipeline stage makes a model, or where reading it would
    run a model folder's code in a dry run."""

    if is_planned(script_args.teacher_name_or_path) or is_planned(script_args.student_name_or_path):
        return
    if script_args.trust_remote_code and not imports_code():
        return
    teacher_tokenizer = load_tokenizer(script_args.teacher_name_or_path, script_args.trust_remote_code)
    teacher_config = load_config(script_args.teacher_name_or_path, script_args.trust_remote_code)
    if script_args.student_name_or_path:
        student_tokenizer = load_tokenizer(script_args.student_name_or_path, script_args.trust_remote_code)
        check_same_tokenizer(teacher_tokenizer, student_tokenizer)
        check_same_vocab_size(
            teacher_config, load_config(script_args.student_name_or_path, script_args.trust_remote_code)
        )
    if script_args.student_layers is not None:
        check_student_layers(script_args.student_layers, teacher_config.num_hidden_layers)


def load_tokenizer(path: str, trust_remote_code: bool) -> Any:
    """The tokenizer at `path`; one that cannot load is a user error naming the folder."""

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load a tokenizer from '{path}': {first_line}") from None


def load_config(path: str, trust_remote_code: bool) -> Any:
    return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
