"""The architecture each stage trains or loads, resolved offline: local folders, a pipeline's `model_configs`
mapping (Hub id or path -> a folder holding its config.json), the local HF cache (never the network), presets and
config overrides for pretraining, the student built from its teacher for distillation, and the output folders of
earlier pipeline stages (`earlier_outputs`), which do not exist yet during a dry run. `as_saved` is what a stage
hands on to the next.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from transformers import AutoConfig, AutoTokenizer, BertConfig, LlamaConfig, PretrainedConfig

from llm_recipes.compress.distill import every_other_layer, student_config_from_teacher
from llm_recipes.configs import looks_local
from llm_recipes.errors import UserError
from llm_recipes.models import RECURRENT_PRESETS, RecurrentLMConfig  # (importing registers them with AutoConfig)
from llm_recipes.models.loading import DECODER_PRESETS, ENCODER_PRESETS
from llm_recipes.pipeline.estimates.shapes import parameter_count, with_fields
from llm_recipes.pipeline.estimates.stage_settings import DATA_STAGES, stage_settings
from llm_recipes.pretrain.build import parse_overrides


def model_config_for(
    stage: str,
    section: dict,
    *,
    model_configs: dict[str, str] | None = None,
    vocab_size: int | None = None,
    earlier_outputs: dict[str, PretrainedConfig] | None = None,
) -> PretrainedConfig | None:
    """The architecture the stage trains/loads: pretrain from preset/config_name/model_name_or_path (vocab_size
    overrides when the tokenizer will be trained by an earlier stage), others from their model field
    (model_name_or_path; distill: the student from student preset/student_name_or_path, teacher too).
    A local folder -> AutoConfig from it; a Hub id -> model_configs mapping, else the local HF cache only
    (local_files_only=True; never the network); None when not resolvable. `earlier_outputs` maps the output
    folders of earlier pipeline stages (any spelling of the path) to the architecture they will hold."""
    known = {_normalized(path): config for path, config in (earlier_outputs or {}).items()}
    config, _ = _stage_model_config(stage, section, model_configs or {}, vocab_size, known)
    return config


def related_model_configs(
    stage: str,
    section: dict,
    *,
    model_configs: dict[str, str] | None = None,
    earlier_outputs: dict[str, PretrainedConfig] | None = None,
) -> dict[str, PretrainedConfig | None]:
    """The stage's other models, as `estimate_stage` keywords: distill's teacher; the reward model of PPO, GRPO,
    RLOO and evaluate, and PPO's value_model_path (the value model otherwise starts from the reward model)."""
    known = {_normalized(path): config for path, config in (earlier_outputs or {}).items()}
    return _related_configs(stage, section, model_configs or {}, known)


def _related_configs(
    stage: str, section: dict, model_configs: dict[str, str], known: dict[str, PretrainedConfig]
) -> dict[str, PretrainedConfig | None]:
    def resolve(name: str | None) -> PretrainedConfig | None:
        return _resolve_config(name, model_configs, known)[0] if name else None

    if stage == "distill":
        return {"teacher_config": resolve(section.get("teacher_name_or_path"))}
    if stage == "ppo":
        related = {"reward_config": resolve(section.get("reward_model_path"))}
        if section.get("value_model_path"):
            related["value_config"] = resolve(section["value_model_path"])
        return related
    if stage in ("grpo", "rloo"):
        return {"reward_config": resolve(section.get("reward_model_path"))}
    if stage == "evaluate":
        return {"reward_config": resolve(section.get("reward_model"))}
    return {}


def _normalized(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _resolve_config(
    name: str | None, model_configs: dict[str, str], known: dict[str, PretrainedConfig]
) -> tuple[PretrainedConfig | None, str]:
    """(config, where it came from); (None, why) when it cannot be had offline."""
    if not name:
        return None, "no model named"
    if _normalized(name) in known:
        return known[_normalized(name)], f"{name} (written by an earlier stage)"
    folder = model_configs.get(name)
    if folder is None:
        folder = next(
            (v for k, v in model_configs.items() if looks_local(k) and _normalized(k) == _normalized(name)), None
        )
    if folder is not None:
        config = _config_from_folder(folder)
        if config is None:
            raise UserError(f"model_configs: {folder} (for {name}) has no readable config.json")
        return config, f"{name} via model_configs ({folder})"
    if os.path.isdir(os.path.expanduser(name)):
        config = _config_from_folder(name)
        return config, name if config is not None else f"{name} has no config.json"
    if looks_local(name):
        return None, f"{name} does not exist yet"
    # a Hub id: a file lookup in the local cache (even `local_files_only` downloads can reach the network for
    # their request headers)
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        cached = None
    if isinstance(cached, str):
        return AutoConfig.from_pretrained(os.path.dirname(cached)), f"{name} (local HF cache)"
    return None, f"{name}: not in model_configs nor the local HF cache"


def _config_from_folder(folder: str) -> PretrainedConfig | None:
    path = Path(folder).expanduser()
    if (path / "config.json").is_file():
        try:
            return AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError):
            return None
    adapter = path / "adapter_config.json"
    if adapter.is_file():  # a PEFT adapter: the architecture is its base model's
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base and os.path.isdir(os.path.expanduser(base)):
            return _config_from_folder(base)
    return None


def _tokenizer_length(path: str | None) -> int | None:
    """len(tokenizer) of a local tokenizer folder, without the network."""
    if not path or not os.path.isdir(os.path.expanduser(path)):
        return None
    try:
        return len(AutoTokenizer.from_pretrained(os.path.expanduser(path), local_files_only=True))
    except (OSError, ValueError):
        return None


def _stage_model_config(
    stage: str,
    section: dict,
    model_configs: dict[str, str],
    vocab_size: int | None,
    known: dict[str, PretrainedConfig],
) -> tuple[PretrainedConfig | None, list[str]]:
    notes: list[str] = []
    if stage in DATA_STAGES:
        return None, notes
    if stage == "pretrain":
        return _pretrain_config(section, model_configs, vocab_size, known)
    if stage == "distill":
        return _student_config(section, model_configs, known)
    if stage == "evaluate":
        return _largest_evaluated(section, model_configs, known)
    config, source = _resolve_config(section.get("model_name_or_path"), model_configs, known)
    if config is None:
        notes.append(f"model config not available offline: {source}")
    return config, notes


def _pretrain_config(section, model_configs, vocab_size, known) -> tuple[PretrainedConfig | None, list[str]]:
    notes: list[str] = []
    vocab = vocab_size or _tokenizer_length(section.get("tokenizer_name_or_path"))
    overrides = parse_overrides(section.get("config_overrides"))
    preset, config_name, model = section.get("preset"), section.get("config_name"), section.get("model_name_or_path")
    if model:
        config, source = _resolve_config(model, model_configs, known)
        if config is None:
            return None, [f"model config not available offline: {source}"]
        fields = dict(overrides)
        if vocab and vocab > config.vocab_size:  # the embeddings grow to a bigger tokenizer (never shrink)
            fields["vocab_size"] = vocab
        return with_fields(config, fields), notes
    if vocab is None:
        notes.append("vocabulary size unknown (tokenizer not trained yet and no vocab_size given)")
    if config_name:
        config, source = _resolve_config(config_name, model_configs, known)
        if config is None:
            return None, [f"model config not available offline: {source}"]
        if vocab is None:
            notes.append(f"vocabulary taken from {config_name}: {config.vocab_size}")
        return with_fields(config, {**({"vocab_size": vocab} if vocab else {}), **overrides}), notes
    if vocab is None:
        return None, notes
    fields = {"vocab_size": vocab, **overrides}
    if preset in DECODER_PRESETS:
        return LlamaConfig(tie_word_embeddings=True, **{**DECODER_PRESETS[preset], **fields}), notes
    if preset in ENCODER_PRESETS:
        return BertConfig(**{**ENCODER_PRESETS[preset], **fields}), notes
    if preset in RECURRENT_PRESETS:
        return RecurrentLMConfig(**{**RECURRENT_PRESETS[preset], **fields}), notes
    return None, notes + [f"unknown preset {preset!r}" if preset else "no model source (preset, config_name, model)"]


def _student_config(section, model_configs, known) -> tuple[PretrainedConfig | None, list[str]]:
    if section.get("student_name_or_path"):
        config, source = _resolve_config(section["student_name_or_path"], model_configs, known)
        return config, [] if config is not None else [f"student config not available offline: {source}"]
    teacher, source = _resolve_config(section.get("teacher_name_or_path"), model_configs, known)
    if teacher is None:
        return None, [f"teacher config not available offline (the student is built from it): {source}"]
    preset = section.get("student_preset")
    if preset:
        if preset not in DECODER_PRESETS:
            return None, [f"unknown student_preset {preset!r}"]
        fields = {
            "vocab_size": teacher.get_text_config().vocab_size,
            **parse_overrides(section.get("student_config_overrides"), "student_config_overrides"),
        }
        return LlamaConfig(tie_word_embeddings=True, **{**DECODER_PRESETS[preset], **fields}), []
    layers = section.get("student_layers") or every_other_layer(teacher.num_hidden_layers)
    return student_config_from_teacher(teacher, layers), []


def _largest_evaluated(section, model_configs, known) -> tuple[PretrainedConfig | None, list[str]]:
    """Evaluate loads its models one at a time: the largest sets the peak."""
    names = list(section.get("models") or []) or [section.get("model_name_or_path")]
    best, best_count, notes = None, -1, []
    for name in names:
        config, source = _resolve_config(name, model_configs, known)
        if config is None:
            notes.append(f"model config not available offline: {source}")
            continue
        count = parameter_count(config)
        if count > best_count:
            best, best_count = config, count
    return best, notes


def as_saved(stage: str, section: dict, config: PretrainedConfig) -> PretrainedConfig:
    """The architecture a stage writes, with the dtype its weights are saved in (what `auto` reads next)."""
    settings = stage_settings(stage, section)
    if stage == "distill" or (stage == "pretrain" and not settings.get("model_name_or_path")):
        saved = "float32"
    elif stage in ("sft", "reward", "dpo", "kto", "grpo", "rloo", "ppo", "export"):
        saved = settings.get("dtype")
    else:
        return config
    if saved in (None, "auto"):
        return config
    return with_fields(config, {"dtype": saved})
