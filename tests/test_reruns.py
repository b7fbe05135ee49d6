"""Output folders and reruns: files in the way are refused, two runs never share a folder, a dead run's leftovers are
cleaned, and a rerun resumes only into the settings it was made with (or says it is done, or applies the few
changes it may, recording both values)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEMO_DATA, PROJECT, write_yaml
from transformers import TrainerCallback

from llm_recipes.cli import load_recipe
from llm_recipes.errors import StageComplete, UserError
from llm_recipes.runs.manifest import read_manifest
from llm_recipes.runs.outputs import check_output_path, claim_output, lock_path, settle

CLI = [sys.executable, "-m", "llm_recipes.cli"]
PRETRAIN = load_recipe("pretrain")
ARITHMETIC = DEMO_DATA / "arithmetic_alpaca.jsonl"


def run_cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


def one_error(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return errors[0]


def export_config(tmp_path: Path, model: Path, output: Path, **extra) -> Path:
    return write_yaml(tmp_path / "export.yaml", {"model_name_or_path": str(model), "output_dir": str(output), **extra})


def corpus_config(tmp_path: Path, output: Path) -> Path:
    import yaml

    config = yaml.safe_load((PROJECT / "configs" / "demo" / "clean_corpus.yaml").read_text(encoding="utf-8"))
    return write_yaml(tmp_path / "corpus.yaml", {**config, "output_dir": str(output)})


# --------------------------------------------------------------------------------------------------------------
# Files in the way


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["export", "clean-corpus"])
def test_an_output_dir_that_is_a_file_is_refused_and_kept(stage, tmp_path, chat_model_dir):
    """A typo like `output_dir: data/train.jsonl` used to delete the user's file and put a model there."""
    users_file = tmp_path / "train.jsonl"
    users_file.write_text('{"text": "the user\'s data"}\n', encoding="utf-8")
    config = (
        export_config(tmp_path, chat_model_dir, users_file)
        if stage == "export"
        else corpus_config(tmp_path, users_file)
    )
    line = one_error(run_cli(stage, "--config", config))
    assert line == f"error: output_dir: {users_file} is an existing file, not a folder; choose another output_dir"
    assert users_file.read_text(encoding="utf-8") == '{"text": "the user\'s data"}\n'


def test_a_folder_no_stage_wrote_is_refused_unless_overwrite(tmp_path, chat_model_dir):
    export = load_recipe("export")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    config = export_config(tmp_path, chat_model_dir, folder)
    with pytest.raises(UserError, match="holds files that no llm-recipes stage wrote; .* overwrite_output_dir: true"):
        export.main(*export.parse_args(["--config", str(config)]))
    assert (folder / "notes.txt").read_text() == "keep me"

    export.main(*export.parse_args(["--config", str(config), "--overwrite_output_dir", "true"]))
    assert not (folder / "notes.txt").exists() and read_manifest(folder)["complete"]


def test_an_unwritable_output_dir_is_one_line_before_anything_loads(tmp_path, chat_model_dir):
    """/proc refuses writes even to root (permission bits would not stop a root CI run)."""
    unwritable = Path("/proc/llm_recipes_test/out")
    with pytest.raises(UserError, match=r"output_dir: cannot write to /proc/llm_recipes_test/out \(/proc is not"):
        check_output_path(unwritable)
    line = one_error(run_cli("export", "--config", export_config(tmp_path, chat_model_dir, unwritable)))
    assert "cannot write to /proc/llm_recipes_test/out" in line


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(tmp_path, chat_model_dir):
    output = tmp_path / "export"
    hold = (
        f"from llm_recipes.runs.outputs import claim_output; claim_output({str(output)!r}); print('held', flush=True)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold + "; import time; time.sleep(120)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_error(run_cli("export", "--config", export_config(tmp_path, chat_model_dir, output)))
        assert f"output_dir: {output} is in use by another run (pid {holder.pid} on " in line
        assert not output.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock went with it
    claim = claim_output(output)
    settle(claim)
    assert not lock_path(output).exists()


def test_a_killed_runs_temporaries_are_removed_on_the_next_start(tmp_path, chat_model_dir):
    export = load_recipe("export")
    output = tmp_path / "export"
    output.mkdir()
    (output / "llm_recipes_manifest.json").write_text(json.dumps({"stage": "export", "complete": True}))
    (output / ".llm_recipes_manifest.json.k2j4h5g6.tmp").write_text("{half")
    staging = tmp_path / ".export.a1b2c3d4.tmp"  # what a killed export left: a half-written model beside the output
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"half")
    other = tmp_path / ".export-v2.a1b2c3d4.tmp"  # another output's staging folder is not ours to remove
    other.mkdir()
    export.main(*export.parse_args(["--config", str(export_config(tmp_path, chat_model_dir, output))]))
    assert not staging.exists() and other.exists()
    assert [p.name for p in output.iterdir() if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------------------------------------------------
# Reruns into the same settings


def pretrain_config(tokenizer_dir: Path, output: Path, **overrides) -> dict:
    config = {
        "dataset_path": str(ARITHMETIC),
        "eval_split_size": 0,
        "tokenizer_name_or_path": str(tokenizer_dir),
        "preset": "llama-tiny",
        "block_size": 64,
        "output_dir": str(output),
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 3,
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return {**config, **overrides}


def run_pretrain(tmp_path: Path, config: dict, *cli: str, callbacks=()) -> dict:
    path = write_yaml(tmp_path / "pretrain.yaml", config)
    return PRETRAIN.main(*PRETRAIN.parse_args(["--config", str(path), *cli]), callbacks=callbacks)


class Interrupted(Exception):
    pass


class InterruptAfterSaving(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"stopped after saving step {state.global_step}")


def logged_rates(output: Path) -> dict[int, float]:
    state = json.loads((output / "trainer_state.json").read_text())
    return {entry["step"]: entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry}


@pytest.mark.slow
def test_a_finished_run_is_complete_and_other_settings_are_refused(tmp_path, base_model_dir):
    """The README's first example after `make demo`: a new learning rate into a finished output used to print
    "resuming", train nothing and record the new rate in the manifest."""
    output = tmp_path / "sft"
    config = write_yaml(
        tmp_path / "sft.yaml",
        {
            "model_name_or_path": str(base_model_dir),
            "dataset_path": str(ARITHMETIC),
            "output_dir": str(output),
            "max_steps": 4,
            "per_device_train_batch_size": 8,
            "max_length": 96,
            "save_strategy": "steps",
            "save_steps": 2,
            "use_cpu": True,
            "seed": 0,
        },
    )
    assert run_cli("sft", "--config", config).returncode == 0
    weights = (output / "model.safetensors").read_bytes()
    manifest = read_manifest(output)

    line = one_error(run_cli("sft", "--config", config, "--learning_rate", "1e-3"))
    assert re.match(
        rf"error: output_dir: {output} holds a run with other settings \(learning_rate \S+ -> 0.001\);", line
    )
    assert "overwrite_output_dir: true" in line and "resume_with_changes: true" in line

    again = run_cli("sft", "--config", config)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"sft: {output} is complete with these settings" in again.stdout
    assert "resuming" not in again.stdout
    assert (output / "model.safetensors").read_bytes() == weights
    assert read_manifest(output) == manifest  # still says what trained: nothing rewritten
    assert not (output / "checkpoint-5").exists()


@pytest.mark.slow
def test_resume_with_a_lower_rate_trains_at_it_and_records_both(tmp_path, base_model_dir):
    """After a NaN the guard says: rerun with a lower --learning_rate and --resume_with_changes true. The restored
    optimizer and scheduler used to bring the old rate back."""
    output = tmp_path / "pretrain"
    with pytest.raises(Interrupted):
        run_pretrain(tmp_path, pretrain_config(base_model_dir, output), callbacks=[InterruptAfterSaving(3)])
    with pytest.raises(UserError, match=r"learning_rate 0\.003 -> 0\.001\).*resume_with_changes: true"):
        run_pretrain(tmp_path, pretrain_config(base_model_dir, output, learning_rate=1e-3))

    summary = run_pretrain(
        tmp_path, pretrain_config(base_model_dir, output, learning_rate=1e-3), "--resume_with_changes", "true"
    )
    assert summary["optimizer steps"] == 6
    rates = logged_rates(output)
    assert [rates[step] for step in (1, 2, 3)] == [pytest.approx(3e-3)] * 3
    assert [rates[step] for step in (4, 5, 6)] == [pytest.approx(1e-3)] * 3
    manifest = read_manifest(output)
    assert manifest["complete"] and manifest["resumed_with_changes"] == {
        "learning_rate": {"before": 0.003, "after": 0.001}
    }
    assert manifest["settings"]["learning_rate"] == 0.001


def test_resume_with_changes_covers_only_the_rate_and_the_length(tmp_path, base_model_dir):
    output = tmp_path / "pretrain"
    with pytest.raises(Interrupted):
        run_pretrain(tmp_path, pretrain_config(base_model_dir, output), callbacks=[InterruptAfterSaving(3)])
    with pytest.raises(UserError, match=r"block_size 64 -> 32\).*resume_with_changes covers only learning_rate"):
        run_pretrain(tmp_path, pretrain_config(base_model_dir, output, block_size=32), "--resume_with_changes", "true")


@pytest.mark.slow
def test_a_run_resumed_from_a_checkpoint_that_rotation_removes_finishes(tmp_path, base_model_dir):
    """save_total_limit deletes the checkpoint a run resumed from before the run ends; the summary used to read it."""
    output = tmp_path / "pretrain"
    config = pretrain_config(base_model_dir, output, save_steps=2, save_total_limit=1)
    with pytest.raises(Interrupted):
        run_pretrain(tmp_path, config, callbacks=[InterruptAfterSaving(2)])
    summary = run_pretrain(tmp_path, config)
    assert summary["optimizer steps"] == 6 and read_manifest(output)["complete"]
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-6"]
    with pytest.raises(StageComplete):
        run_pretrain(tmp_path, config)


def test_a_rerun_that_starts_over_says_the_old_output_is_no_longer_whole(tmp_path, base_model_dir):
    """`--rerun ppo` killed midway used to leave the previous model and `complete: true` beside new checkpoints."""
    output = tmp_path / "pretrain"
    run_pretrain(tmp_path, pretrain_config(base_model_dir, output, max_steps=3))
    assert read_manifest(output)["complete"]
    with pytest.raises(Interrupted):
        run_pretrain(
            tmp_path,
            pretrain_config(base_model_dir, output, learning_rate=1e-3),
            "--overwrite_output_dir",
            "true",
            callbacks=[InterruptAfterSaving(3)],
        )
    manifest = read_manifest(output)
    assert not manifest["complete"] and manifest["settings"]["learning_rate"] == 1e-3
    assert not (output / "model.safetensors").exists()  # the earlier run's model went with its manifest


def test_a_started_manifest_comes_before_the_first_checkpoint(tmp_path, base_model_dir):
    output = tmp_path / "pretrain"
    seen = {}

    class LookAtTheManifest(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update(read_manifest(output) or {})

    run_pretrain(tmp_path, pretrain_config(base_model_dir, output, max_steps=2), callbacks=[LookAtTheManifest()])
    assert seen["complete"] is False and seen["settings"]["max_steps"] == 2
    time.sleep(0)  # (the finished manifest replaced it)
    assert read_manifest(output)["complete"] is True
