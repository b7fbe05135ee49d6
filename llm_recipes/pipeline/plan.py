"""Reading a pipeline config and turning it into a plan: which stages run, on what, writing where.

A pipeline config is one YAML file: a `pipeline:` section of settings, then one section per stage that is exactly
that stage's own config (lift it out and `llm-recipes <stage> --config it.yaml` runs it alone), or names one with
`config: <stage file>` (the file's settings; keys beside `config` override them), so a stage's settings have one
source. The plan fills the input fields a section leaves out from the outputs of the stages before it (`CHAINS`), so
a pipeline config may name each folder once; the chained fields a referenced stage file names (its own inputs, for
running alone) are the pipeline's to fill, unless the section itself names them.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.configs import ConfigError, load_yaml_config, looks_local
from llm_recipes.pretrain.config import PretrainScriptArguments, TokenizeArguments

# The pipeline's slots in order; "rl" is filled by the algorithm `rl_algorithm` names.
SLOTS = (
    "clean-corpus",
    "train-tokenizer",
    "tokenize",
    "pretrain",
    "sft",
    "reward",
    "feedback-to-data",
    "rl",
    "evaluate",
    "distill",
    "quantize",
    "prune",
    "export",
)
RL_ALGORITHMS = ("ppo", "grpo", "rloo", "dpo", "kto")
TRAINING_STAGES = frozenset({"pretrain", "sft", "reward", "ppo", "grpo", "rloo", "dpo", "kto", "distill", "prune"})
SECTION_NAMES = frozenset(SLOTS) - {"rl"} | set(RL_ALGORITHMS)

NEWEST_MODEL = ("rl", "sft", "pretrain")
# stage -> input field -> the slots whose output fills it when the section leaves it out (first one present wins)
CHAINS: dict[str, dict[str, tuple[str, ...]]] = {
    "train-tokenizer": {"dataset_path": ("clean-corpus",)},
    "tokenize": {"dataset_path": ("clean-corpus",), "tokenizer_name_or_path": ("train-tokenizer",)},
    "pretrain": {"dataset_path": ("tokenize", "clean-corpus"), "tokenizer_name_or_path": ("train-tokenizer",)},
    "sft": {"model_name_or_path": ("pretrain",)},
    "reward": {"model_name_or_path": ("sft", "pretrain")},
    "ppo": {"model_name_or_path": ("sft", "pretrain"), "reward_model_path": ("reward",)},
    "grpo": {"model_name_or_path": ("sft", "pretrain"), "reward_model_path": ("reward",)},
    "rloo": {"model_name_or_path": ("sft", "pretrain"), "reward_model_path": ("reward",)},
    "dpo": {"model_name_or_path": ("sft", "pretrain")},
    "kto": {"model_name_or_path": ("sft", "pretrain")},
    "evaluate": {"reward_model": ("reward",)},
    "distill": {"teacher_name_or_path": NEWEST_MODEL},
    "quantize": {"model_name_or_path": NEWEST_MODEL},
    "prune": {"model_name_or_path": NEWEST_MODEL},
    "export": {"model_name_or_path": NEWEST_MODEL, "eval_results_path": ("evaluate",)},
}
# A feedback round (configs/demo/feedback_round.yaml): the serve stage's feedback, exported by feedback-to-data, is
# the dataset of the dpo or kto stage -- the file of that stage's format in its output folder. Only a pipeline with a
# feedback-to-data section has that slot (the others' plans and tables do not list it).
FEEDBACK_SLOT = "feedback-to-data"
FEEDBACK_FILES = {"dpo": "dpo.jsonl", "kto": "kto.jsonl"}
# Slots a plan lists only when the config has their section (or use_existing names them): the feedback export, and
# tokenize (a corpus cut into shards ahead of pretraining, which then streams them instead of tokenizing at start-up).
OPTIONAL_SLOTS = frozenset({FEEDBACK_SLOT, "tokenize"})
# what pretrain must read tokenize's shards with as tokenize cut them (the same field in both stages)
STREAM_FIELDS = ("block_size", "packing", "packing_boundaries")
# a chained field stays empty when the section already says where its input comes from another way
ALTERNATIVES = {
    "dataset_path": ("datasets",),
    "reward_model_path": ("reward_function",),
    "tokenizer_name_or_path": ("model_name_or_path",),
}
# evaluate compares every model the pipeline made, oldest first, unless its section names the models
EVALUATED_SLOTS = ("pretrain", "sft", "rl")


@dataclass
class PipelineSettings:
    output_root: str = "outputs/pipeline"
    rl_algorithm: str = "ppo"
    skip: list[str] = field(default_factory=list)
    use_existing: dict[str, str] = field(default_factory=dict)
    launch: dict[str, list[str]] = field(default_factory=dict)
    model_configs: dict[str, str] = field(default_factory=dict)
    state_dir: str | None = None

    @property
    def run_dir(self) -> Path:
        """Where the pipeline keeps its state, the resolved stage configs and its report."""
        return Path(self.state_dir or os.path.join(self.output_root, "pipeline_run"))


@dataclass
class StagePlan:
    slot: str  # the pipeline slot ("rl" for any RL algorithm)
    stage: str  # the stage that fills it (llm-recipes <stage>)
    action: str  # run | skip | existing
    config: dict[str, Any] = field(default_factory=dict)  # the section, chained inputs filled in
    output: str | None = None  # output_dir, or the existing folder / Hub id
    chained: dict[str, str] = field(default_factory=dict)  # field -> slot whose output the pipeline put there
    launch_args: list[str] = field(default_factory=list)

    @property
    def is_training(self) -> bool:
        return self.stage in TRAINING_STAGES


def stage_for_slot(slot: str, settings: PipelineSettings) -> str:
    return settings.rl_algorithm if slot == "rl" else slot


def read_pipeline_config(path: str) -> tuple[PipelineSettings, dict[str, dict[str, Any]]]:
    """The settings and the stage sections of a pipeline YAML, checked for shape (the stages check their own)."""
    raw = load_yaml_config(path)
    if "pipeline" not in raw:
        raise ConfigError(f"{path}: a pipeline config starts with a `pipeline:` section (configs/demo/pipeline.yaml)")
    settings = _read_settings(raw.pop("pipeline") or {})
    sections: dict[str, dict[str, Any]] = {}
    for name, section in raw.items():
        if name not in SECTION_NAMES:
            match = difflib.get_close_matches(str(name), sorted(SECTION_NAMES), n=1)
            hint = f"; did you mean {match[0]}?" if match else f" (stages: {', '.join(sorted(SECTION_NAMES))})"
            raise ConfigError(f"unknown section '{name}'{hint}")
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"section '{name}' must be a mapping of that stage's config fields")
        sections[name] = expand_stage_file(name, section, from_feedback=FEEDBACK_SLOT in raw)
    return settings, sections


def expand_stage_file(stage: str, section: dict[str, Any], from_feedback: bool = False) -> dict[str, Any]:
    """A section with `config: <stage file>`: that file's settings, less the inputs the pipeline chains, then the
    section's own keys over them (editing the file changes the stage's config, so the stage runs again)."""
    if "config" not in section:
        return section
    path = section["config"]
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{stage}.config: must be the path of a {stage} config file")
    try:
        settings = load_yaml_config(path)
    except ConfigError as error:
        raise ConfigError(f"{stage}.config: {error}") from None
    if "config" in settings:
        raise ConfigError(f"{stage}.config: {path} names another config file; a stage file holds settings only")
    chained = set(CHAINS.get(stage, {})) | ({"models"} if stage == "evaluate" else set())
    if from_feedback and stage in FEEDBACK_FILES:  # the stage file's own data gives way to the feedback export
        chained.add("dataset_path")
    own = {key: value for key, value in section.items() if key != "config"}
    return {**{key: value for key, value in settings.items() if key not in chained}, **own}


def _read_settings(raw: dict[str, Any]) -> PipelineSettings:
    if not isinstance(raw, dict):
        raise ConfigError("pipeline: must be a mapping of settings (rl_algorithm, skip, use_existing, launch, ...)")
    known = set(PipelineSettings.__dataclass_fields__)
    for key in raw:
        if key not in known:
            match = difflib.get_close_matches(str(key), sorted(known), n=1)
            raise ConfigError(f"pipeline.{key}: unknown setting" + (f"; did you mean {match[0]}?" if match else ""))
    settings = PipelineSettings(**raw)
    if settings.rl_algorithm not in RL_ALGORITHMS:
        raise ConfigError(f"pipeline.rl_algorithm: '{settings.rl_algorithm}' is not one of {', '.join(RL_ALGORITHMS)}")
    settings.skip = _as_string_list(settings.skip, "pipeline.skip")
    for name in settings.skip:
        _check_slot_name(name, "pipeline.skip", settings)
    _check_mapping(settings.use_existing, "pipeline.use_existing")
    for name, target in settings.use_existing.items():
        _check_slot_name(name, "pipeline.use_existing", settings)
        if looks_local(str(target)) and not os.path.exists(os.path.expanduser(str(target))):
            raise ConfigError(f"pipeline.use_existing.{name}: {target} does not exist")
    _check_mapping(settings.launch, "pipeline.launch")
    launch = {}
    for name, flags in settings.launch.items():
        if name != "training":
            _check_slot_name(name, "pipeline.launch", settings)
        launch[name] = [str(flag) for flag in _as_string_list(flags, f"pipeline.launch.{name}")]
    settings.launch = launch
    _check_mapping(settings.model_configs, "pipeline.model_configs")
    return settings


def _check_slot_name(name: str, where: str, settings: PipelineSettings) -> None:
    if name in SECTION_NAMES or name == "rl":
        return
    match = difflib.get_close_matches(str(name), sorted(SECTION_NAMES), n=1)
    raise ConfigError(f"{where}: unknown stage '{name}'" + (f"; did you mean {match[0]}?" if match else ""))


def _check_mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping")


def _as_string_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list")
    return [str(item) for item in value]


def build_plan(settings: PipelineSettings, sections: dict[str, dict[str, Any]]) -> list[StagePlan]:
    """Every slot in order: run (it has a section and is not skipped), existing (use_existing) or skip."""
    outputs: dict[str, str] = {}
    plan = []
    for slot in SLOTS:
        stage = stage_for_slot(slot, settings)
        existing = settings.use_existing.get(slot) or settings.use_existing.get(stage)
        if existing:
            plan.append(StagePlan(slot, stage, "existing", output=str(existing)))
            outputs[slot] = str(existing)
            continue
        if stage in OPTIONAL_SLOTS and stage not in sections:
            continue
        if stage not in sections or slot in settings.skip or stage in settings.skip:
            plan.append(StagePlan(slot, stage, "skip"))
            continue
        config = dict(sections[stage])
        config.setdefault("output_dir", os.path.join(settings.output_root, stage))
        chained = _fill_inputs(stage, config, outputs)
        tokenize = next((step for step in plan if step.stage == "tokenize" and step.action == "run"), None)
        if stage == "pretrain" and tokenize is not None and _reads(config.get("dataset_path"), tokenize.output):
            chained.update(_agree_with_shards(config, tokenize.config))
        launch = settings.launch.get(stage, settings.launch.get(slot))
        if launch is None and stage in TRAINING_STAGES:
            launch = settings.launch.get("training", [])
        plan.append(StagePlan(slot, stage, "run", config, str(config["output_dir"]), chained, list(launch or [])))
        outputs[slot] = str(config["output_dir"])
    _check_distinct_outputs(plan)
    return plan


def _fill_inputs(stage: str, config: dict[str, Any], outputs: dict[str, str]) -> dict[str, str]:
    chained = {}
    for name, sources in CHAINS.get(stage, {}).items():
        if config.get(name) or any(config.get(other) for other in ALTERNATIVES.get(name, ())):
            continue
        source = next((slot for slot in sources if slot in outputs), None)
        if source is not None:
            config[name] = outputs[source]
            chained[name] = source
    feedback = outputs.get(FEEDBACK_SLOT)
    if feedback and stage in FEEDBACK_FILES and not config.get("dataset_path") and not config.get("datasets"):
        config["dataset_path"] = os.path.join(feedback, FEEDBACK_FILES[stage])
        chained["dataset_path"] = FEEDBACK_SLOT
    if stage == "evaluate" and not config.get("models") and not config.get("model_name_or_path"):
        made = [slot for slot in EVALUATED_SLOTS if slot in outputs]
        if made:
            config["models"] = [outputs[slot] for slot in made]
            chained["models"] = ", ".join(made)
    return chained


def _reads(path: Any, folder: str | None) -> bool:
    """Whether a dataset_path names this folder (chained, or written by hand in any spelling)."""
    same = os.path.abspath(os.path.expanduser(str(path))) == os.path.abspath(os.path.expanduser(str(folder)))
    return isinstance(path, str) and bool(folder) and same


def _agree_with_shards(pretrain: dict[str, Any], tokenize: dict[str, Any]) -> dict[str, str]:
    """Pretrain streaming the shard folder tokenize will write: the block size and packing it leaves out are
    tokenize's, ones it sets must be tokenize's, and what a stream cannot do is refused now, not after tokenizing
    (pretrain's own checks see the folder only once it exists). Returns the fields filled."""
    filled = {}
    for name in STREAM_FIELDS:
        cut = tokenize.get(name, TokenizeArguments.__dataclass_fields__[name].default)
        if name not in pretrain:
            if cut != PretrainScriptArguments.__dataclass_fields__[name].default:
                pretrain[name] = cut
                filled[name] = "tokenize"
        elif pretrain[name] != cut:
            raise ConfigError(
                f"pretrain.{name}: {pretrain[name]} but tokenize cuts its shards with {name} {cut}; set the same "
                f"in both sections (or leave pretrain's out)"
            )
    if not pretrain.get("tokenizer_name_or_path") and not pretrain.get("model_name_or_path"):
        if tokenize.get("tokenizer_name_or_path"):  # the shards' tokenizer is the one pretraining must use
            pretrain["tokenizer_name_or_path"] = tokenize["tokenizer_name_or_path"]
            filled["tokenizer_name_or_path"] = "tokenize"
    steps = pretrain.get("max_steps", -1)
    if not isinstance(steps, int) or steps <= 0:
        raise ConfigError("pretrain.max_steps: required when pretrain streams tokenize's shards (a stream has no end)")
    if pretrain.get("curriculum", "none") != "none":
        raise ConfigError("pretrain.curriculum: tokenize's shards are read in their own order; order documents before")
    return filled


def _check_distinct_outputs(plan: list[StagePlan]) -> None:
    seen: dict[str, str] = {}
    for step in plan:
        if step.action != "run":
            continue
        where = os.path.abspath(os.path.expanduser(step.output))
        if where in seen:
            raise ConfigError(f"{step.stage}.output_dir: {step.output} is also {seen[where]}'s; give each its own")
        seen[where] = step.stage


def planned_paths(plan: list[StagePlan]) -> list[str]:
    """The folders the stages that run will write (and the files in feedback-to-data's that a stage reads)."""
    paths = []
    for step in plan:
        if step.action == "run" and step.output:
            paths.append(step.output)
            if step.stage == FEEDBACK_SLOT:
                paths += [os.path.join(step.output, name) for name in FEEDBACK_FILES.values()]
    return paths
