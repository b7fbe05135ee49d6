"""Reward models: scoring as RewardTrainer trains, reward functions by name, the reward stage end to end (a smoke
test on the shared real-format preference file, and the proof that it learns the synthetic task)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import PROJECT

from llm_recipes.errors import UserError


def load_stage(stage: str, script: str):
    """The recipe module, through the CLI's stage table once the stage is registered there."""
    from llm_recipes.cli import STAGES, load_recipe

    if stage in STAGES:
        return load_recipe(stage)
    spec = importlib.util.spec_from_file_location(f"recipe_{stage}", PROJECT / "recipes" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = load_stage("reward", "reward.py")

TRAINING = [
    "--bf16",
    "false",
    "--use_cpu",
    "true",
    "--gradient_checkpointing",
    "false",
    "--save_strategy",
    "no",
    "--dtype",
    "float32",
]


def _classifier(model_dir):
    """A random one-output classifier on a tiny model's backbone, and that model's tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _last_token_score(model, ids: list[int]) -> float:
    with torch.no_grad():
        return float(model(torch.tensor([ids])).logits[0, 0])


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def test_score_responses_reads_text_the_way_reward_trainer_trains(base_model_dir):
    from llm_recipes.rl.rewards import score_responses

    model, tokenizer = _classifier(base_model_dir)
    prompts = ["What is 12 plus 13?", "Name an animal.", "Hi"]
    responses = [" 25.", " A green dog that lives on a farm.", ""]
    # RewardTrainer trains on prompt + answer + EOS, tokenized with the tokenizer's special tokens
    by_hand = [
        _last_token_score(model, tokenizer(p + r + tokenizer.eos_token)["input_ids"])
        for p, r in zip(prompts, responses, strict=True)
    ]
    batched = score_responses(model, tokenizer, prompts, responses, batch_size=3)
    one_at_a_time = [score_responses(model, tokenizer, [p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert batched == pytest.approx(by_hand, abs=1e-5)
    assert one_at_a_time == pytest.approx(batched, abs=1e-5)
    assert len(set(batched)) == 3

    with pytest.raises(UserError, match="3 prompts but 2 responses"):
        score_responses(model, tokenizer, prompts, responses[:2])


def test_conversations_are_scored_through_the_chat_template(chat_model_dir):
    from llm_recipes.rl.rewards import REWARD_INPUT_FIELD, score_responses

    model, tokenizer = _classifier(chat_model_dir)
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky colour?"}]
    messages = [*conversation, {"role": "assistant", "content": "Blue."}]
    by_hand = _last_token_score(
        model, tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )
    assert score_responses(model, tokenizer, [conversation], ["Blue."]) == pytest.approx([by_hand], abs=1e-5)

    # a model recorded as trained on conversations reads a plain prompt as a user turn; by default it is text
    user_turn = [{"role": "user", "content": "Sky colour?"}]
    as_chat = score_responses(model, tokenizer, [user_turn], ["Blue."])
    as_text = score_responses(model, tokenizer, ["Sky colour?"], ["Blue."])
    setattr(model.config, REWARD_INPUT_FIELD, "conversational")
    assert score_responses(model, tokenizer, ["Sky colour?"], ["Blue."]) == pytest.approx(as_chat, abs=1e-5)
    assert as_text != pytest.approx(as_chat, abs=1e-5)


def test_reward_function_from_path(tmp_path):
    from llm_recipes.data.synthetic import synthetic_reward
    from llm_recipes.rl.rewards import reward_function_from_path

    assert reward_function_from_path("llm_recipes.data.synthetic:synthetic_reward") is synthetic_reward
    script = tmp_path / "my_rewards.py"
    script.write_text("def brevity(prompts, completions, **kwargs):\n    return [-len(c) for c in completions]\n")
    assert reward_function_from_path(f"{script}:brevity")(prompts=["p"], completions=["abc"]) == [-3]

    script.write_text(script.read_text() + "def strict(prompts, completions):\n    return []\nNOT_A_FUNCTION = 3\n")
    for spec, message in [
        ("llm_recipes.data.synthetic", "must look like package.module:function"),
        ("no_such_module_here:f", "cannot import 'no_such_module_here'"),
        ("llm_recipes.data.synthetic:nothing", "'llm_recipes.data.synthetic' has no 'nothing'"),
        (f"{script}:strict", r"must accept \(prompts, completions, \*\*kwargs\)"),
        (f"{script}:NOT_A_FUNCTION", "is not a function"),
        ("missing_file.py:f", "file not found: missing_file.py"),
    ]:
        with pytest.raises(UserError, match=message):
            reward_function_from_path(spec)


def test_pairwise_metrics_are_exact_over_pairs():
    from transformers import EvalPrediction

    from llm_recipes.rl.rewards import pairwise_metrics

    pairs = [[2.0, 1.0], [0.0, 3.0], [1.0, 1.0], [5.0, -1.0]]
    metrics = pairwise_metrics(EvalPrediction(predictions=pairs, label_ids=[0, 0, 0, 0]))
    assert metrics == pytest.approx({"pairwise_accuracy": (1 + 0 + 0.5 + 1) / 4, "mean_margin": (1 - 3 + 0 + 6) / 4})


# ---------------------------------------------------------------------------------------------------------------
# The stage: config checks, then training


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    from llm_recipes.data.synthetic import synthetic_preferences, write_synthetic_base_model, write_synthetic_demo_data

    folder = tmp_path_factory.mktemp("synthetic")
    # the colour alone tells chosen from rejected: a model trained from scratch for seconds cannot also compare the
    # answer's animal with the question's (the demo's pretrained one learns both)
    write_synthetic_demo_data(folder / "data", conversational=False, wrong_animal_share=0.0)
    heldout = folder / "data" / "heldout.jsonl"  # other seed: pairs the reward model never saw
    pairs = synthetic_preferences(200, seed=10, wrong_animal_share=0.0)
    heldout.write_text("".join(json.dumps(row) + "\n" for row in pairs))
    write_synthetic_base_model(folder / "base")
    return folder


def test_config_mistakes_fail_before_any_model_loads(synthetic_data, tmp_path):
    data = str(synthetic_data / "data" / "preferences.jsonl")
    base = ["--model_name_or_path", str(synthetic_data / "base"), "--output_dir", str(tmp_path / "rm"), *TRAINING]
    with pytest.raises(UserError, match="dataset_path is required"):
        R.parse_args(base)
    with pytest.raises(UserError, match="data_format: invalid choice: 'sharegtp'"):
        R.parse_args([*base, "--dataset_path", data, "--data_format", "sharegtp"])
    with pytest.raises(UserError, match="lora_task_type: a reward model is a classifier"):
        R.parse_args([*base, "--dataset_path", data, "--use_peft", "true", "--lora_task_type", "CAUSAL_LM"])
    with pytest.raises(UserError, match="eval_strategy is 'steps' but there is no eval data"):
        R.parse_args([*base, "--dataset_path", data, "--eval_split_size", "0", "--eval_strategy", "steps"])
    with pytest.raises(UserError, match="center_rewards_coefficient: -0.1 must be >= 0"):
        R.parse_args([*base, "--dataset_path", data, "--center_rewards_coefficient", "-0.1"])
    script_args, training_args, model_args = R.parse_args([*base, "--dataset_path", data])
    assert model_args.lora_task_type == "SEQ_CLS" and training_args.report_to == []


@pytest.mark.slow
def test_reward_model_smoke_test_on_the_shared_dpo_demo(shared_data, chat_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from llm_recipes.data.preferences import to_preference_columns
    from llm_recipes.rl.rewards import load_reward_model, score_responses
    from llm_recipes.runs.manifest import read_manifest

    output = tmp_path / "rm"
    args = [
        "--dataset_path",
        str(shared_data / "dpo_en_demo.json"),
        "--model_name_or_path",
        str(chat_model_dir),
        "--output_dir",
        str(output),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--max_length",
        "512",
        "--eval_split_size",
        "16",
        *TRAINING,
    ]
    summary = R.main(*R.parse_args(args))
    assert summary["data format"] == "sharegpt" and summary["conversational"] is True
    assert summary["optimizer steps"] == 3
    assert summary["training pairs"] + summary["pairs over max_length (dropped)"] == 300 - 16
    assert summary["eval pairwise accuracy"] is not None and 0 <= summary["eval pairwise accuracy"] <= 1

    model = AutoModelForSequenceClassification.from_pretrained(output)
    assert model.config.num_labels == 1
    assert model.config.pad_token_id is not None and model.config.reward_input == "conversational"
    manifest = read_manifest(output)
    assert manifest["stage"] == "reward" and manifest["inputs"]["model"] == str(chat_model_dir)

    from datasets import Dataset

    pairs, _ = to_preference_columns(Dataset.from_list(json.loads((shared_data / "dpo_en_demo.json").read_text())[:6]))
    reward_model, tokenizer = load_reward_model(str(output), device="cpu")
    prompts, answers = pairs["prompt"], [row[0]["content"] for row in pairs["chosen"]]
    batched = score_responses(reward_model, tokenizer, prompts, answers, batch_size=6, max_length=256)
    single = [
        score_responses(reward_model, tokenizer, [p], [a], max_length=256)[0]
        for p, a in zip(prompts, answers, strict=True)
    ]
    assert batched == pytest.approx(single, abs=1e-4)


def _heldout_accuracy(model_dir, pairs_path) -> float:
    from llm_recipes.rl.rewards import load_reward_model, score_responses

    pairs = [json.loads(line) for line in pairs_path.read_text().splitlines()]
    model, tokenizer = load_reward_model(str(model_dir), device="cpu")
    prompts = [row["prompt"] for row in pairs]
    chosen = score_responses(model, tokenizer, prompts, [row["chosen"] for row in pairs])
    rejected = score_responses(model, tokenizer, prompts, [row["rejected"] for row in pairs])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


def _synthetic_args(folder, output, *extra):
    return [
        "--dataset_path",
        str(folder / "data" / "preferences.jsonl"),
        "--eval_split_size",
        "0.1",
        "--model_name_or_path",
        str(folder / "base"),
        "--output_dir",
        str(output),
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "3e-3",
        "--lr_scheduler_type",
        "cosine",
        "--max_length",
        "64",
        *TRAINING,
        *extra,
    ]


@pytest.mark.slow
def test_reward_model_learns_the_synthetic_task(synthetic_data, tmp_path):
    """The learning proof: held-out pairwise accuracy well above chance, measured on pairs drawn with another seed
    through the saved model and `score_responses` (the path RL uses), not only by the trainer."""
    summary = R.main(*R.parse_args(_synthetic_args(synthetic_data, tmp_path / "rm")))
    accuracy = _heldout_accuracy(tmp_path / "rm", synthetic_data / "data" / "heldout.jsonl")
    print(
        f"\nreward model: eval pairwise accuracy {summary['eval pairwise accuracy']:.3f}, "
        f"mean margin {summary['eval mean margin']:.2f}, held-out accuracy {accuracy:.3f}, {summary['seconds']} s"
    )
    assert summary["eval pairwise accuracy"] >= 0.9
    assert summary["eval mean margin"] > 0
    assert accuracy >= 0.9


@pytest.mark.slow
def test_lora_reward_model_saves_and_loads_its_score_head(synthetic_data, tmp_path):
    from llm_recipes.evaluation import load_reward_model as evaluation_loader
    from llm_recipes.rl.rewards import REWARD_INPUT_FILE, load_reward_model, score_responses

    output = tmp_path / "rm-lora"
    extra = ["--use_peft", "true", "--lora_r", "8", "--learning_rate", "1e-2", "--center_rewards_coefficient", "0.01"]
    args = _synthetic_args(synthetic_data, output, *extra)
    args[args.index("--learning_rate") + 1] = "1e-2"
    summary = R.main(*R.parse_args(args))
    adapter = json.loads((output / "adapter_config.json").read_text())
    assert "score" in adapter["modules_to_save"] and adapter["task_type"] == "SEQ_CLS"
    assert json.loads((output / REWARD_INPUT_FILE).read_text()) == {"reward_input": "text"}
    assert summary["trainable parameters"] < summary["total parameters"] / 10

    accuracy = _heldout_accuracy(output, synthetic_data / "data" / "heldout.jsonl")
    print(f"\nLoRA reward model: held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.9
    # the evaluation stage's loader reads the same adapter to the same scores
    model, tokenizer = load_reward_model(str(output), device="cpu")
    other = evaluation_loader(str(output), device="cpu")
    texts = (["Describe the cat."], [" The cat is red and lives near the farm."])
    assert score_responses(other, tokenizer, *texts) == pytest.approx(score_responses(model, tokenizer, *texts))


# ---------------------------------------------------------------------------------------------------------------
# Straight from a base model: no chat template, and heads without a generation config


@pytest.mark.parametrize(
    "head", ["AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoModelForQuestionAnswering"]
)
def test_every_head_gets_a_chat_template_from_a_base_model(base_model_dir, head):
    import transformers

    from llm_recipes.models.chat import IM_END, ensure_chat_template

    tokenizer = transformers.AutoTokenizer.from_pretrained(base_model_dir)
    assert not tokenizer.chat_template
    model = getattr(transformers, head).from_pretrained(base_model_dir)
    added = ensure_chat_template(tokenizer, model)

    assert tokenizer.convert_ids_to_tokens(added) == ["<|im_start|>", IM_END]
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], return_tensors="pt"
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        model(input_ids=ids)  # the new rows are used


def _hh_rows(count: int, words: int = 1) -> list[dict]:
    answer = " ".join(["very"] * words)
    return [
        {
            "chosen": f"\n\nHuman: Sky colour {i}?\n\nAssistant: A {answer} blue sky {i}.",
            "rejected": f"\n\nHuman: Sky colour {i}?\n\nAssistant: No idea.",
        }
        for i in range(count)
    ]


@pytest.mark.slow
def test_reward_model_from_a_base_model_on_mixed_shapes_reports_every_dropped_pair(base_model_dir, tmp_path):
    """A base model without a chat template (as init-model writes) becomes a reward model on HH-RLHF transcripts
    and explicit pairs in one file; the summary says, per source, what was read and dropped, and for length."""
    explicit = [{"prompt": f"Name animal {i}.", "chosen": f"A red fox {i}.", "rejected": "A rock."} for i in range(18)]
    same = [{"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."}] * 2
    train = tmp_path / "pairs.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in _hh_rows(16) + explicit + same))
    held_out = tmp_path / "eval.jsonl"  # three answers too long for max_length: RewardTrainer leaves them out
    held_out.write_text("".join(json.dumps(row) + "\n" for row in _hh_rows(4) + _hh_rows(3, words=200)))
    args = [
        *["--dataset_path", str(train), "--eval_dataset_path", str(held_out)],
        *["--model_name_or_path", str(base_model_dir), "--output_dir", str(tmp_path / "rm")],
        *["--max_steps", "2", "--per_device_train_batch_size", "8", "--max_length", "64", *TRAINING],
    ]
    summary = R.main(*R.parse_args(args))

    assert summary["conversational"] is True and summary["optimizer steps"] == 2
    assert summary[f"rows kept from {train}"] == (
        "34/36 (prompt_chosen_rejected 20, hh_rlhf 16; dropped: chosen equals rejected 2)"
    )
    assert summary["training pairs"] == 34 and summary["pairs over max_length (dropped)"] == 0
    assert summary["eval pairs"] == 4 and summary["eval pairs over max_length (dropped)"] == 3
