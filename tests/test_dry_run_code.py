"""Config fields that name code are code: `pipeline --dry_run` runs none of it (it only finds the files and modules)
and prints what a real run will import; the stages' own checks still import it, so a typo fails before training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_DATA, PROJECT, relocated_demo_pipeline

from llm_recipes.configs.code import check_code_exists, code_not_imported, imports_code
from llm_recipes.errors import UserError

CLI = [sys.executable, "-m", "llm_recipes.cli"]


def marking_code(path: Path, marker: Path, body: str) -> Path:
    """A Python file that leaves `marker` behind when it is imported."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n{body}")
    return path


REWARD = "def score(prompts, completions, **kwargs):\n    return [0.0 for _ in completions]\n"
KEEP = "def keep(text):\n    return True\n"


def code_pipeline(tmp_path: Path, model_dir: Path) -> tuple[Path, Path, Path]:
    """clean-corpus then GRPO, GRPO rewarded by a file and the corpus filtered by a module on the import path; both
    write a marker when imported. Returns (config, reward marker, filter marker)."""
    reward_marker, filter_marker = tmp_path / "reward-imported", tmp_path / "filter-imported"
    reward_file = marking_code(tmp_path / "rewards" / "my_reward.py", reward_marker, REWARD)
    marking_code(tmp_path / "importable" / "my_filters.py", filter_marker, KEEP)
    demo = relocated_demo_pipeline(tmp_path)
    corpus = {
        **demo["clean-corpus"],
        "steps": [*demo["clean-corpus"]["steps"], {"callable": {"fn": "my_filters:keep"}}],
    }
    grpo = {
        "model_name_or_path": str(model_dir),
        "dataset_path": str(DEMO_DATA / "rl_prompts.jsonl"),
        "reward_function": f"{reward_file}:score",
        "output_dir": str(tmp_path / "out" / "grpo"),
        "use_cpu": True,
    }
    pipeline = {"output_root": str(tmp_path / "out"), "rl_algorithm": "grpo"}
    path = tmp_path / "pipeline.yaml"
    sections = {"pipeline": pipeline, "clean-corpus": corpus, "grpo": grpo}
    path.write_text(yaml.safe_dump(sections, sort_keys=False), encoding="utf-8")
    return path, reward_marker, filter_marker


def dry_run(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "importable"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*CLI, "pipeline", "--config", str(config), "--dry_run"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_dry_run_imports_no_code_and_names_what_a_real_run_will(tmp_path, base_model_dir):
    config, reward_marker, filter_marker = code_pipeline(tmp_path, base_model_dir)
    done = dry_run(tmp_path, config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not reward_marker.exists() and not filter_marker.exists()
    printed = done.stdout
    assert "code a real run will import and run" in printed
    reward_file = tmp_path / "rewards" / "my_reward.py"
    assert f"grpo: reward_function {reward_file}:score" in printed
    assert "clean-corpus: callable filter my_filters:keep" in printed


@pytest.mark.slow
def test_a_dry_run_still_fails_on_code_that_is_not_there(tmp_path, base_model_dir):
    config, _, _ = code_pipeline(tmp_path, base_model_dir)
    sections = yaml.safe_load(config.read_text())
    sections["grpo"]["reward_function"] = f"{tmp_path / 'rewards' / 'typo.py'}:score"
    config.write_text(yaml.safe_dump(sections, sort_keys=False))
    done = dry_run(tmp_path, config)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: stage grpo: reward_function: file not found: {tmp_path / 'rewards' / 'typo.py'}"
    )


def test_finding_a_module_runs_none_of_its_packages(tmp_path, monkeypatch):
    marker = tmp_path / "package-imported"
    marking_code(tmp_path / "mypkg" / "__init__.py", marker, "")
    marking_code(tmp_path / "mypkg" / "rules.py", marker, KEEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    with code_not_imported():
        assert not imports_code()
        check_code_exists("mypkg.rules:keep", "callable filter")
        with pytest.raises(UserError, match=r"callable filter: cannot find module 'mypkg\.nothing'"):
            check_code_exists("mypkg.nothing:keep", "callable filter")
        with pytest.raises(UserError, match="callable filter: cannot find module 'mypkg.rules.deeper'"):
            check_code_exists("mypkg.rules.deeper:keep", "callable filter")
        with pytest.raises(UserError, match="must look like package.module:function"):
            check_code_exists("mypkg.rules", "callable filter")
        check_code_exists("llm_recipes.data.synthetic:synthetic_reward", "reward_function")  # already imported
    assert imports_code() and not marker.exists()


def test_outside_a_dry_run_the_checks_import_the_code(tmp_path, monkeypatch):
    """The other side: a stage's own check (and a real pipeline's check of every stage) imports the code, so a
    missing function fails before any model loads."""
    from llm_recipes.corpus.filters import CallableFilter
    from llm_recipes.rl.rewards import check_reward_function

    reward_marker, filter_marker = tmp_path / "reward-imported", tmp_path / "filter-imported"
    reward_file = marking_code(tmp_path / "my_reward.py", reward_marker, REWARD)
    marking_code(tmp_path / "my_checked_filters.py", filter_marker, KEEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="has no 'scor'"):
        check_reward_function(f"{reward_file}:scor")
    CallableFilter("my_checked_filters:keep")
    assert reward_marker.exists() and filter_marker.exists()
    with code_not_imported():
        CallableFilter("my_checked_filters:no_such_function")  # only the module is looked for in a dry run
        with pytest.raises(UserError, match="callable filter: cannot find module 'my_missing_filters'"):
            CallableFilter("my_missing_filters:keep")


def remote_code_model(tmp_path: Path, model_dir: Path, marker: Path) -> Path:
    """A copy of a model folder whose config names its own Python (auto_map): loading the config runs it."""
    import json
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_mine.MineConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    marking_code(
        folder / "configuration_mine.py",
        marker,
        "from transformers import LlamaConfig\n\nclass MineConfig(LlamaConfig):\n    model_type = 'llama'\n",
    )
    return folder


@pytest.mark.parametrize("stage", ["distill", "prune"])
def test_a_dry_run_does_not_load_a_model_folders_own_code(stage, tmp_path, chat_model_dir):
    from llm_recipes.cli import load_recipe

    marker = tmp_path / "model-code-ran"
    model = remote_code_model(tmp_path, chat_model_dir, marker)
    config = {"output_dir": str(tmp_path / "out"), "trust_remote_code": True}
    if stage == "distill":
        config |= {"teacher_name_or_path": str(model), "dataset_path": str(DEMO_DATA / "arithmetic_alpaca.jsonl")}
    else:
        config |= {"model_name_or_path": str(model), "method": "structured", "heads_to_prune": 1}
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with code_not_imported():
        load_recipe(stage).parse_args(["--config", str(path)])
    assert not marker.exists()
