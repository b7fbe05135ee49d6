"""A feedback round as a pipeline (configs/demo/feedback_round.yaml): feedback-to-data's export is the dpo or kto
stage's dataset, the served model is the policy it trains and the model evaluate compares the new one with, and the
new one is what export writes; the pipelines without a feedback-to-data section plan as before."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_CONFIGS, PROJECT, relocated_demo_pipeline
from datasets import Dataset, DatasetDict

from llm_recipes.pipeline.plan import build_plan, expand_stage_file, read_pipeline_config


def feedback_round(tmp_path: Path, served: Path, **settings: str) -> Path:
    """The demo round with its outputs under tmp_path/out and the served model a folder of the test's."""
    out = tmp_path / "out"
    protocol = tmp_path / "protocol.yaml"  # evaluate's protocol names the demo's outputs too
    protocol.write_text((DEMO_CONFIGS / "protocol.yaml").read_text(encoding="utf-8").replace("outputs/demo", str(out)))
    raw = yaml.safe_load((DEMO_CONFIGS / "feedback_round.yaml").read_text(encoding="utf-8"))
    expanded = {name: s if name == "pipeline" else expand_stage_file(name, s, True) for name, s in raw.items()}
    text = yaml.safe_dump(expanded, sort_keys=False).replace("outputs/demo", str(out))
    config = yaml.safe_load(text.replace("configs/demo/protocol.yaml", str(protocol)))
    config["pipeline"].update(use_existing={"sft": str(served)}, **settings)
    path = tmp_path / "feedback_round.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def steps_of(path: Path) -> dict:
    return {step.slot: step for step in build_plan(*read_pipeline_config(str(path)))}


@pytest.mark.parametrize("algorithm", ["dpo", "kto"])
def test_the_round_trains_the_served_model_on_its_feedback_and_exports_the_new_one(tmp_path, algorithm):
    served = tmp_path / "served"
    served.mkdir()
    steps = steps_of(feedback_round(tmp_path, served, rl_algorithm=algorithm))
    out = tmp_path / "out" / "feedback_round"
    assert [slot for slot, step in steps.items() if step.action != "skip"] == [
        "sft", "feedback-to-data", "rl", "evaluate", "export",
    ]  # fmt: skip
    assert steps["sft"].action == "existing" and steps["feedback-to-data"].output == str(out / "feedback_data")
    rl = steps["rl"]
    assert rl.stage == algorithm and rl.output == str(out / algorithm)
    # the stage file's own dataset (configs/demo/dpo.yaml: the demo's preference pairs) gives way to the feedback
    assert rl.config["dataset_path"] == str(out / "feedback_data" / f"{algorithm}.jsonl")
    assert rl.config["model_name_or_path"] == str(served)
    assert rl.chained == {"model_name_or_path": "sft", "dataset_path": "feedback-to-data"}
    assert steps["evaluate"].config["models"] == [str(served), rl.output]  # the served model against the new one
    assert steps["export"].config["model_name_or_path"] == rl.output
    assert steps["export"].config["eval_results_path"] == steps["evaluate"].output


def test_without_a_feedback_section_the_plan_and_the_stage_files_data_are_unchanged(tmp_path):
    config = relocated_demo_pipeline(tmp_path)
    config["pipeline"]["rl_algorithm"] = "dpo"
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    steps = steps_of(path)
    assert "feedback-to-data" not in steps
    assert steps["rl"].config["dataset_path"] == "configs/demo/data/preferences.jsonl"
    # and a stage file read by a pipeline without feedback keeps its dataset
    section = expand_stage_file("dpo", {"config": str(DEMO_CONFIGS / "dpo.yaml")})
    assert section["dataset_path"] == "configs/demo/data/preferences.jsonl"


def test_the_round_dry_runs_through_the_console_script(tmp_path, chat_model_dir):
    served = tmp_path / "served"
    shutil.copytree(chat_model_dir, served)
    # what the round's evaluation protocol reads from the demo's own run: its reward model and its corpus
    shutil.copytree(chat_model_dir, tmp_path / "out" / "reward")
    DatasetDict({"test": Dataset.from_dict({"text": ["The cat is red."]})}).save_to_disk(tmp_path / "out" / "corpus")
    path = feedback_round(tmp_path, served)
    result = subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", "pipeline", "--config", path, "--dry_run"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines() if line[:2].strip().isdigit()}
    actions = {stage: row[2] for stage, row in rows.items() if row[2] != "skip"}
    assert actions == {"sft": "existing", "feedback-to-data": "run", "dpo": "run", "evaluate": "run", "export": "run"}
    assert "model_name_or_path <- sft, dataset_path <- feedback-to-data" in result.stdout
    assert (
        "models <- sft, rl" in result.stdout
        and "model_name_or_path <- rl, eval_results_path <- evaluate" in result.stdout
    )
    assert "every stage config checked" in result.stdout
    assert not (tmp_path / "out" / "feedback_round").exists()  # a dry run writes nothing
