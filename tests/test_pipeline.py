"""The pipeline recipe: plan and chaining, up-front config errors, skipping, resume between and inside stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT, relocated_demo_pipeline

from llm_recipes.cli import load_recipe
from llm_recipes.configs import ConfigError
from llm_recipes.errors import UserError
from llm_recipes.pipeline.plan import RL_ALGORITHMS, PipelineSettings, build_plan, read_pipeline_config
from llm_recipes.pipeline.runner import StageFailed

DEMO_PIPELINE = PROJECT / "configs" / "demo" / "pipeline.yaml"
CLI = [sys.executable, "-m", "llm_recipes.cli"]
pipeline_recipe = load_recipe("pipeline")


def demo_config(tmp_path, **settings) -> dict:
    """The demo pipeline writing under tmp_path (every outputs/demo path moved there)."""
    config = relocated_demo_pipeline(tmp_path)
    config["pipeline"].update(settings)
    return config


def write_config(tmp_path, config: dict, name: str = "pipeline.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return str(path)


def plan_of(config: dict):
    settings_raw = dict(config["pipeline"])
    sections = {name: section for name, section in config.items() if name != "pipeline"}
    return build_plan(PipelineSettings(**settings_raw), sections)


def by_stage(plan):
    return {step.stage: step for step in plan}


# --- plan and chaining ------------------------------------------------------------------------------------------


def test_chaining_fills_only_what_a_section_leaves_out(tmp_path):
    config = demo_config(tmp_path)
    config["quantize"]["model_name_or_path"] = str(tmp_path / "out" / "sft")  # named by hand: kept
    steps = by_stage(plan_of(config))
    out = tmp_path / "out"
    assert steps["train-tokenizer"].config["dataset_path"] == str(out / "corpus")
    assert steps["pretrain"].config["tokenizer_name_or_path"] == str(out / "tokenizer")
    assert steps["sft"].config["model_name_or_path"] == str(out / "pretrain")
    assert steps["ppo"].config["reward_model_path"] == str(out / "reward")
    assert steps["ppo"].chained == {"model_name_or_path": "sft", "reward_model_path": "reward"}
    assert steps["evaluate"].config["models"] == [str(out / name) for name in ("pretrain", "sft", "ppo")]
    assert steps["export"].config["model_name_or_path"] == str(out / "ppo")
    assert steps["export"].config["eval_results_path"] == str(out / "evaluate")
    assert steps["quantize"].config["model_name_or_path"] == str(out / "sft")
    assert "model_name_or_path" not in steps["quantize"].chained


def test_one_field_switches_the_rl_algorithm(tmp_path):
    config = demo_config(tmp_path, rl_algorithm="rloo")
    plan = plan_of(config)
    rl = next(step for step in plan if step.slot == "rl")
    assert rl.stage == "rloo" and rl.action == "run"
    # rloo's section rewards with a function, so no reward model is chained in
    assert "reward_model_path" not in rl.config
    assert by_stage(plan)["export"].config["model_name_or_path"] == str(tmp_path / "out" / "rloo")
    assert not {"ppo", "grpo", "dpo"} & {step.stage for step in plan}


def test_skipped_and_existing_stages_reroute_the_chain(tmp_path):
    existing = tmp_path / "their-model"
    existing.mkdir()
    config = demo_config(tmp_path, skip=["rl", "distill"], use_existing={"pretrain": str(existing)})
    steps = by_stage(plan_of(config))
    assert steps["pretrain"].action == "existing" and steps["ppo"].action == "skip"
    assert steps["distill"].action == "skip"
    assert steps["sft"].config["model_name_or_path"] == str(existing)
    assert steps["export"].config["model_name_or_path"] == str(tmp_path / "out" / "sft")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sfft": {}}, "unknown section 'sfft'; did you mean sft?"),
        ({"pipeline": {"rl_algorithm": "a2c"}}, "pipeline.rl_algorithm: 'a2c' is not one of ppo, grpo, rloo, dpo, kto"),
        ({"pipeline": {"skpi": ["prune"]}}, "pipeline.skpi: unknown setting; did you mean skip?"),
        ({"pipeline": {"skip": ["prun"]}}, "pipeline.skip: unknown stage 'prun'; did you mean prune?"),
        ({"pipeline": {"use_existing": {"sft": "./nowhere"}}}, "pipeline.use_existing.sft: ./nowhere does not exist"),
    ],
)
def test_pipeline_settings_errors_say_what_to_fix(tmp_path, change, message):
    config = {"pipeline": change.pop("pipeline", {}), "export": {}, **change}
    with pytest.raises(ConfigError) as err:
        read_pipeline_config(write_config(tmp_path, config))
    assert str(err.value) == message


def test_two_stages_cannot_share_an_output_folder(tmp_path):
    config = demo_config(tmp_path)
    config["reward"]["output_dir"] = config["sft"]["output_dir"]
    with pytest.raises(ConfigError, match="reward.output_dir: .* is also sft's"):
        plan_of(config)


def test_a_stage_config_error_names_the_stage_and_field_before_anything_runs(tmp_path):
    config = demo_config(tmp_path)
    config["export"]["max_shard_sise"] = "1GB"
    path = write_config(tmp_path, config)
    result = subprocess.run(
        CLI + ["pipeline", "--config", path], capture_output=True, text=True, timeout=300, cwd=PROJECT
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: stage export: unknown key 'max_shard_sise' in the config; did you mean max_shard_size?"
    )
    assert not (tmp_path / "out" / "corpus").exists()  # the first stage never started


def test_dry_run_checks_everything_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(PROJECT)
    path = write_config(tmp_path, demo_config(tmp_path, skip=["prune"]))
    assert run_pipeline(path, "--dry_run") == {}
    printed = capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    rows = {line.split()[1]: line.split() for line in printed.splitlines() if line[:2].strip().isdigit()}
    assert list(rows) == [
        "clean-corpus", "train-tokenizer", "pretrain", "sft", "reward", "ppo",
        "evaluate", "distill", "quantize", "prune", "export",
    ]  # fmt: skip
    assert rows["prune"][2] == "skip" and rows["sft"][2] == "run"
    assert "model_name_or_path <- sft, reward_model_path <- reward" in printed
    # the llama-demo preset (2 layers, tied embeddings) with the 2,000-entry vocabulary the tokenizer stage is asked for
    assert rows["pretrain"][-4:-2] == ["625.3K", "625.3K"] and rows["pretrain"][-1] == "MiB"
    assert "every stage config checked" in printed


# --- running: resume between and inside stages ------------------------------------------------------------------


def small_pipeline(tmp_path, **pretrain) -> dict:
    """clean-corpus -> train-tokenizer -> pretrain, small enough for a test."""
    config = demo_config(tmp_path)
    kept = {"pipeline", "clean-corpus", "train-tokenizer", "pretrain"}
    config = {name: section for name, section in config.items() if name in kept}
    config["pretrain"].update(
        max_steps=6, save_steps=2, save_total_limit=3, per_device_train_batch_size=4, eval_split_size=0.05, **pretrain
    )
    config["pretrain"]["logging_steps"] = 1
    return config


def run_pipeline(path: str, *extra: str):
    (args,) = pipeline_recipe.parse_args(["--config", path, *extra])
    return {result.stage: result for result in pipeline_recipe.main(args)}


def manifest_time(folder) -> str:
    return json.loads((folder / "llm_recipes_manifest.json").read_text())["started_at"] + str(
        os.path.getmtime(folder / "llm_recipes_manifest.json")
    )


@pytest.mark.slow
def test_resume_between_and_inside_stages(tmp_path, monkeypatch, capsys):
    from transformers import Trainer

    monkeypatch.chdir(PROJECT)
    path = write_config(tmp_path, small_pipeline(tmp_path))
    out = tmp_path / "out"
    real_step = Trainer.training_step
    steps = {"n": 0, "fail_at": 5}

    def counted_step(self, *args, **kwargs):
        steps["n"] += 1
        if steps["n"] == steps["fail_at"]:
            raise KeyboardInterrupt("power cut")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", counted_step)

    # 1) interrupted inside pretraining, in its 5th optimizer step (checkpoints at 2 and 4)
    with pytest.raises(StageFailed, match="stage pretrain stopped .* rerun the same command to continue"):
        run_pipeline(path)
    assert (out / "pretrain" / "checkpoint-4").is_dir()
    corpus_written, tokenizer_written = manifest_time(out / "corpus"), manifest_time(out / "tokenizer")

    # 2) the same command again: finished stages are skipped, pretraining continues from checkpoint-4
    steps.update(n=0, fail_at=None)
    results = run_pipeline(path)
    assert results["clean-corpus"].status == "done earlier" and results["train-tokenizer"].status == "done earlier"
    assert manifest_time(out / "corpus") == corpus_written and manifest_time(out / "tokenizer") == tokenizer_written
    assert results["pretrain"].status == "resumed"
    printed = capsys.readouterr().out
    assert "== pretrain (resuming)" in printed and "checkpoint-4" in printed
    assert steps["n"] == 2  # steps 5 and 6 only
    state = json.loads((out / "pretrain" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert "loss on its eval blocks" in results["pretrain"].headline and "->" in results["pretrain"].headline

    # 3) nothing changed: nothing runs
    steps["n"] = 0
    results = run_pipeline(path)
    assert {result.status for result in results.values() if result.output} == {"done earlier"}
    assert steps["n"] == 0

    # 4) a changed pretrain section reruns pretraining afresh (old checkpoints removed), and nothing before it
    path = write_config(tmp_path, small_pipeline(tmp_path, learning_rate=1e-3))
    results = run_pipeline(path)
    assert results["clean-corpus"].status == "done earlier" and results["pretrain"].status == "ran"
    assert steps["n"] == 6

    # 5) --skip leaves a stage out of this run
    results = run_pipeline(path, "--skip", "pretrain")
    assert results["pretrain"].status == "skipped"
    report = (out / "pipeline_run" / "report.txt").read_text()
    assert "pretrain" in report and "skipped" in report


def test_a_rerun_refuses_checkpoints_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT)
    path = write_config(tmp_path, small_pipeline(tmp_path))
    (tmp_path / "out" / "pretrain" / "checkpoint-3").mkdir(parents=True)
    settings, sections = read_pipeline_config(path)
    plan = build_plan(settings, sections)
    # earlier stages "run" as no-ops here: only the decision about pretrain's folder is under test
    import llm_recipes.pipeline.runner as runner
    from llm_recipes.pipeline.runner import run_plan

    ran = []
    original = runner.run_stage
    runner.run_stage = lambda step, config_path, **_: ran.append(step.stage)
    try:
        with pytest.raises(UserError, match="stage pretrain: output_dir .* holds checkpoints this pipeline did not"):
            run_plan(plan, settings, {step.stage: tmp_path / "x.yaml" for step in plan})
    finally:
        runner.run_stage = original
    assert ran == ["clean-corpus", "train-tokenizer"]


# --- several processes per training stage -----------------------------------------------------------------------


def two_stage_pipeline(tmp_path, tokenizer_dir, launch: list[str]) -> str:
    data = PROJECT / "configs" / "demo" / "data"
    common = {"use_cpu": True, "save_strategy": "no", "logging_steps": 1, "per_device_train_batch_size": 4}
    config = {
        "pipeline": {"output_root": str(tmp_path / "out"), "launch": {"training": launch} if launch else {}},
        "pretrain": {
            "dataset_path": str(data / "raw_corpus.jsonl"),
            "tokenizer_name_or_path": str(tokenizer_dir),
            "preset": "llama-tiny",
            "block_size": 64,
            "eval_split_size": 0,
            "max_steps": 4,
            **common,
        },
        "sft": {"dataset_path": str(data / "arithmetic_alpaca.jsonl"), "max_length": 64, "max_steps": 3, **common},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_config(tmp_path, config)


@pytest.mark.slow
def test_training_stages_under_two_processes_give_the_same_result_shape(tmp_path, base_model_dir, monkeypatch):
    """pipeline.launch runs pretrain and SFT through `accelerate launch --cpu --num_processes 2` (gloo)."""
    from safetensors import safe_open

    monkeypatch.chdir(PROJECT)
    single = run_pipeline(two_stage_pipeline(tmp_path / "one", base_model_dir, []))
    double = run_pipeline(two_stage_pipeline(tmp_path / "two", base_model_dir, ["--cpu", "--num_processes", "2"]))
    for stage in ("pretrain", "sft"):
        assert single[stage].status == double[stage].status == "ran"
        assert set(single[stage].metrics) == set(double[stage].metrics)
        one, two = (tmp_path / run / "out" / stage for run in ("one", "two"))
        assert sorted(path.name for path in one.iterdir()) == sorted(path.name for path in two.iterdir())
        with safe_open(one / "model.safetensors", "pt") as a, safe_open(two / "model.safetensors", "pt") as b:
            assert {key: a.get_slice(key).get_shape() for key in a.keys()} == {
                key: b.get_slice(key).get_shape() for key in b.keys()
            }
    # the same number of optimizer steps, each seeing twice the examples
    assert single["pretrain"].metrics["optimizer steps"] == double["pretrain"].metrics["optimizer steps"] == 4
    tokens = (single["pretrain"].metrics["tokens trained on"], double["pretrain"].metrics["tokens trained on"])
    assert tokens[1] == pytest.approx(2 * tokens[0], rel=0.01)  # (a last short block may hold a few tokens less)
    assert (single["sft"].metrics["processes"], double["sft"].metrics["processes"]) == (1, 2)
    assert double["sft"].metrics["examples seen"] == 2 * single["sft"].metrics["examples seen"] == 24


# --- the demo, reduced ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_pipeline_end_to_end_then_nothing_left_to_do(tmp_path):
    """The README's first command, with fewer steps: every stage through `llm-recipes pipeline`, then a rerun."""
    config = demo_config(tmp_path)
    config["pretrain"].update(num_train_epochs=1)
    config["sft"].update(num_train_epochs=1)
    config["reward"].update(max_steps=5)
    config["ppo"].update(num_ppo_steps=3)
    config["evaluate"].update(max_eval_samples=8)
    config["distill"].update(max_steps=4, report_eval_texts=8)
    config["quantize"].update(max_eval_samples=8)
    config["prune"].update(max_steps=2, max_eval_samples=8, calibration_samples=8)
    path = write_config(tmp_path, config)
    result = subprocess.run(
        CLI + ["pipeline", "--config", path], capture_output=True, text=True, timeout=900, cwd=PROJECT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout[result.stdout.index("pipeline finished") :]
    body = table.split("-\n", 1)[1].split("\n\n")[0]  # the rows between the header's rule and the total
    rows = {line.split()[0]: line for line in body.splitlines()}
    assert list(rows) == [
        "clean-corpus", "train-tokenizer", "pretrain", "sft", "reward", "ppo",
        "evaluate", "distill", "quantize", "prune", "export",
    ]  # fmt: skip
    assert all(row.split()[1] == "ran" for row in rows.values())
    assert "documents 800 -> " in rows["clean-corpus"]
    assert "loss on its eval blocks" in rows["pretrain"] and "score on its eval prompts" in rows["ppo"]
    assert "method bitsandbytes int8" in rows["quantize"]
    # then every model on the one protocol: a row each, a compression row followed by its source
    models = table.split("every model on the protocol ")[1].split(":", 1)[1].strip().split("\n\n")[0]
    labels = [line.strip().split("  ")[0] for line in models.splitlines()[2:]]
    assert labels[:7] == [
        "pretrain",
        "sft",
        "ppo",
        "distill",
        "labels only, same budget",
        "its source, ppo",
        "quantize",
    ]
    assert labels[-3:] == ["prune", "before recovery", "its source, ppo"]

    out = tmp_path / "out"
    from transformers import pipeline

    generator = pipeline("text-generation", model=str(out / "export"))
    assert generator("What is 2 plus 3?", max_new_tokens=4)[0]["generated_text"].startswith("What is 2 plus 3?")
    card = (out / "export" / "README.md").read_text()
    for stage in ("clean-corpus", "train-tokenizer", "pretrain", "sft", "ppo"):
        assert stage in card, stage
    # each stage's resolved config runs alone
    ppo_config = yaml.safe_load((out / "pipeline_run" / "configs" / "ppo.yaml").read_text())
    assert ppo_config["model_name_or_path"] == str(out / "sft")
    load_recipe("ppo").parse_args(["--config", str(out / "pipeline_run" / "configs" / "ppo.yaml")])

    again = subprocess.run(
        CLI + ["pipeline", "--config", path], capture_output=True, text=True, timeout=300, cwd=PROJECT
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier (complete, config and inputs unchanged); skipping") == 11


def test_editing_a_file_a_stage_names_makes_it_run_again(tmp_path):
    """A protocol or data file named by path: its content, not just its name, is part of what the stage ran with."""
    from llm_recipes.pipeline.plan import StagePlan
    from llm_recipes.pipeline.state import fingerprint

    protocol = tmp_path / "protocol.yaml"
    protocol.write_text("corpus: {path: a}\n")
    step = StagePlan(stage="evaluate", slot="evaluate", action="run", config={"protocol": str(protocol)})
    before = fingerprint(step, {})
    assert fingerprint(step, {}) == before
    protocol.write_text("corpus: {path: b, split: test}\n")
    assert fingerprint(step, {}) != before


# --- one source per demo config ----------------------------------------------------------------------------------


def test_each_demo_section_is_its_stage_file_and_runs_as_it_does_alone(monkeypatch):
    """configs/demo/pipeline.yaml names each stage's file; the stage the pipeline runs is exactly the file's config
    (its inputs are the folders the pipeline chains), so `llm-recipes <stage> --config` on the file runs the same."""
    monkeypatch.chdir(PROJECT)
    raw = yaml.safe_load(DEMO_PIPELINE.read_text(encoding="utf-8"))
    settings, sections = read_pipeline_config(str(DEMO_PIPELINE))
    for name, section in raw.items():
        if name != "pipeline":
            assert list(section) == ["config"], f"{name}: settings belong in {section.get('config')}"
    for rl in RL_ALGORITHMS:  # the files downstream of RL name the PPO policy, the demo's choice
        settings.rl_algorithm = rl
        for step in build_plan(settings, sections):
            if step.action != "run" or (rl != "ppo" and step.slot != "rl"):
                continue
            stage_file = PROJECT / raw[step.stage]["config"]
            assert step.config == yaml.safe_load(stage_file.read_text(encoding="utf-8")), step.stage


def test_a_section_overrides_its_stage_file_and_the_pipeline_chains_its_inputs(tmp_path):
    stage_file = tmp_path / "sft.yaml"
    stage_file.write_text("model_name_or_path: elsewhere/base\nlearning_rate: 1.0e-3\nnum_train_epochs: 2\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"pipeline: {{output_root: {tmp_path / 'out'}}}\n"
        f"pretrain: {{output_dir: {tmp_path / 'out' / 'pretrain'}}}\n"
        f"sft: {{config: {stage_file}, learning_rate: 5.0e-4}}\n"
    )
    settings, sections = read_pipeline_config(str(config))
    sft = {step.stage: step for step in build_plan(settings, sections)}["sft"]
    assert sft.config["learning_rate"] == 5.0e-4 and sft.config["num_train_epochs"] == 2
    assert sft.config["model_name_or_path"] == str(tmp_path / "out" / "pretrain")  # chained, not the file's
    assert sft.chained == {"model_name_or_path": "pretrain"}

    config.write_text(f"pipeline: {{}}\nsft: {{config: {tmp_path / 'missing.yaml'}}}\n")
    with pytest.raises(ConfigError, match=r"sft\.config: config file not found"):
        read_pipeline_config(str(config))
