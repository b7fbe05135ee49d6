"""The small manifest every stage leaves in its output folder: what it read, its resolved config, its metrics,
the library versions and the time taken. The pipeline recipe reads it to chain and resume stages.

A training stage also records, when it starts, the settings that decide its result (every config field but those
in `IGNORED_SETTINGS`, plus a mark of each local input it reads). A rerun into the same folder compares them: the
same settings resume an interrupted run or, for a finished one, do nothing; other settings are refused with the
fields that differ, so a manifest never says a run trained with settings it did not train with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_recipes.errors import StageComplete, UserError
from llm_recipes.runs.outputs import OutputClaim, claim_output, settle

MANIFEST_NAME = "llm_recipes_manifest.json"
LIBRARIES = ("llm-recipes", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")
SECRET_FIELDS = {"hub_token", "token", "push_to_hub_token", "hf_token"}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def config_as_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data, with secrets removed (also inside mappings such as
    `model_init_kwargs`)."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    for key in raw:
        if key.endswith("_token") and hasattr(config, key):
            # transformers' to_dict masks every *_token field (SFTConfig's eos_token too, set or not): the manifest
            # records the real values and masks the secrets only, when they are set
            raw[key] = getattr(config, key)
    return _redacted(json.loads(json.dumps(raw, default=str)))


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: ("<redacted>" if item else None) if key in SECRET_FIELDS else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


def write_json_atomically(path: str | Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
    os.replace(tmp, path)


# Fields that do not change what a stage produces: where and how often it logs, saves and pushes, and the
# options that steer the rerun itself
IGNORED_SETTINGS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_with_changes",
        "resume_from_checkpoint",
        "logging_dir",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "log_level",
        "log_level_replica",
        "report_to",
        "run_name",
        "project",
        "disable_tqdm",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_only_model",
        "push_to_hub",
        "local_rank",
        "dataloader_num_workers",
        "dataloader_prefetch_factor",
        "dataloader_persistent_workers",
        "dataset_num_proc",
        "num_proc",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        *SECRET_FIELDS,
    }
)
# What may change when a run resumes (`resume_with_changes: true`): the rate after a NaN, a longer schedule
CHANGEABLE_ON_RESUME = frozenset(
    {"learning_rate", "max_steps", "num_train_epochs", "num_ppo_steps", "total_episodes", "max_grad_norm"}
)


def stage_settings(configs: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide a stage's result, from all of its config objects (their field names never clash)."""
    settings = {}
    for config in configs.values():
        for key, value in config_as_dict(config).items():
            if key not in IGNORED_SETTINGS:
                settings[key] = value
    return settings


def input_marks(settings: dict[str, Any]) -> dict[str, str]:
    """Which writing of each local input the settings name: an output's manifest time, a file's size and mtime."""
    marks = {}

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, str) and value and os.path.exists(os.path.expanduser(value)):
            path = Path(value).expanduser()
            if path.is_dir():
                manifest = read_manifest(path)
                marks[value] = f"written {manifest.get('started_at')}" if manifest else "folder"
            else:
                stat = path.stat()
                marks[value] = f"{stat.st_size} bytes, modified {stat.st_mtime_ns}"

    visit(settings)
    return marks


def setting_changes(before: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = sorted(set(before) | set(now))
    return {key: (before.get(key), now.get(key)) for key in keys if before.get(key) != now.get(key)}


class StageRun:
    """Times a stage and writes its manifest when it completes.

    `StageRun.begin` is how a stage starts: it claims the output folder (checked, locked) and, for a training stage,
    decides between a fresh run, a resume and nothing to do, before anything is loaded.
    """

    def __init__(self, stage: str, output_dir: str | Path):
        self.stage = stage
        self.output_dir = Path(output_dir)
        self.started = time.time()
        self.inputs: dict[str, Any] = {}
        self.settings: dict[str, Any] | None = None
        self.input_marks: dict[str, str] = {}
        # fields changed on resume (resume_with_changes): name -> (the run's value so far, the value from now on)
        self.changes: dict[str, tuple[Any, Any]] = {}
        self.claim: OutputClaim | None = None
        self.configs: dict[str, Any] = {}

    @classmethod
    def begin(cls, stage: str, output_dir: str | Path, configs: dict[str, Any], *, training: bool = False) -> StageRun:
        """Claim `output_dir` for this stage and say what the run will do there.

        Every stage refuses an output that is a file, an unwritable place, a folder another run holds, and a
        non-empty folder that is not a stage output (no manifest, no checkpoints) unless `overwrite_output_dir`.
        A training stage then compares its settings with the run recorded there: the same settings resume an
        interrupted run, or raise `StageComplete` for a finished one; other settings are refused, except the few in
        `CHANGEABLE_ON_RESUME` under `resume_with_changes`. Only reads here, so every process of a launch decides
        alike; the first process writes (`mark_started`) once all of them have decided.
        """
        run = cls(stage, output_dir)
        run.configs = configs
        options = _run_options(configs)
        run.claim = claim_output(run.output_dir)
        output = run.claim.path
        first_process = os.environ.get("RANK", "0") == "0"
        if options["overwrite_output_dir"]:
            if first_process and output.is_dir() and any(output.iterdir()):
                _empty_folder(output)
                print(f"overwrite_output_dir: removed the earlier contents of {output_dir}")
            earlier, checkpoints = None, []
        else:
            earlier = read_manifest(output) if output.is_dir() else None
            checkpoints = sorted(output.glob("checkpoint-*")) if output.is_dir() else []
            if output.is_dir() and earlier is None and not checkpoints and not _holds_stage_outputs(output):
                raise UserError(
                    f"output_dir: {output_dir} holds files that no llm-recipes stage wrote; choose another "
                    "output_dir or set overwrite_output_dir: true to replace them"
                )
        if training:
            run.settings = stage_settings(configs)
            run.input_marks = input_marks(run.settings)
            if earlier is not None or checkpoints:
                run._compare_with(earlier, bool(checkpoints), options["resume_with_changes"])
        return run

    def mark_started(self) -> Path:
        """Say in the folder that a run is under way (`complete: false`), before it writes anything else there:
        a kill from now on never leaves an earlier run's `complete: true` beside this run's checkpoints."""
        return self._write_manifest(complete=False, configs=self.configs, metrics={})

    def _compare_with(self, earlier: dict[str, Any] | None, has_checkpoints: bool, resume_with_changes: bool) -> None:
        where = str(self.output_dir)
        if earlier is None or earlier.get("stage") != self.stage or earlier.get("settings") is None:
            what = f"a {earlier['stage']} output" if earlier and earlier.get("stage") != self.stage else "a run"
            raise UserError(
                f"output_dir: {where} holds {what} whose settings are not recorded; choose another output_dir or "
                "set overwrite_output_dir: true to start over"
            )
        changes = setting_changes(earlier["settings"], self.settings)
        moved = setting_changes(earlier.get("input_marks", {}), self.input_marks)
        if not changes and not moved:
            if earlier.get("complete"):
                raise StageComplete(
                    f"{self.stage}: {where} is complete with these settings (finished a run started "
                    f"{earlier.get('started_at')}); nothing to do. Set overwrite_output_dir: true to train it again."
                )
            return
        fixed = sorted(set(changes) - CHANGEABLE_ON_RESUME)
        if resume_with_changes and not fixed and not moved and has_checkpoints:
            self.changes = changes
            described = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items())
            print(f"resume_with_changes: continuing {where} with {described}")
            return
        raise UserError(_refusal(where, changes, moved, fixed, has_checkpoints, resume_with_changes))

    @property
    def seconds(self) -> float:
        return time.time() - self.started

    def write(self, configs: dict[str, Any], metrics: dict[str, Any]) -> Path:
        """The stage is complete: its manifest says so, and the output folder is no longer held."""
        path = self._write_manifest(complete=True, configs=configs, metrics=metrics)
        if self.claim is not None:
            settle(self.claim)
        return path

    def _write_manifest(self, *, complete: bool, configs: dict[str, Any], metrics: dict[str, Any]) -> Path:
        manifest = {
            "stage": self.stage,
            "complete": complete,
            "inputs": self.inputs,
            "config": {name: config_as_dict(config) for name, config in configs.items()},
            "metrics": metrics,
            "versions": library_versions(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "seconds": round(self.seconds, 2),
        }
        if self.settings is not None:
            manifest["settings"] = self.settings
            manifest["input_marks"] = self.input_marks
        if self.changes:
            manifest["resumed_with_changes"] = {
                key: {"before": old, "after": new} for key, (old, new) in self.changes.items()
            }
        path = self.output_dir / MANIFEST_NAME
        write_json_atomically(path, manifest)
        return path


def _run_options(configs: dict[str, Any]) -> dict[str, bool]:
    options = {"overwrite_output_dir": False, "resume_with_changes": False}
    for config in configs.values():
        for name in options:
            options[name] = options[name] or bool(getattr(config, name, False))
    return options


def _refusal(
    where: str,
    changes: dict[str, tuple[Any, Any]],
    moved: dict[str, tuple[Any, Any]],
    fixed: list[str],
    has_checkpoints: bool,
    resume_with_changes: bool,
) -> str:
    """One line: what differs from the run in the folder, and the ways out."""
    differences = [f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items()]
    differences += [f"input {path} was rewritten" for path in moved]
    shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
    ways = "use a new output_dir, or overwrite_output_dir: true to start over"
    if has_checkpoints and not fixed and not moved:
        ways += ", or resume_with_changes: true to continue from its last checkpoint with the new values"
    elif resume_with_changes and (fixed or moved):
        only = ", ".join(sorted(CHANGEABLE_ON_RESUME))
        ways += f" (resume_with_changes covers only {only})"
    return f"output_dir: {where} holds a run with other settings ({shown}); {ways}"


def _holds_stage_outputs(folder: Path) -> bool:
    """Empty, or holding stage outputs one level down (finetune-task's search/, a pipeline's output_root)."""
    entries = list(folder.iterdir())
    return not entries or any((entry / MANIFEST_NAME).is_file() for entry in entries if entry.is_dir())


def _empty_folder(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def read_manifest(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
