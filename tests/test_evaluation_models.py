"""Evaluation on tiny random models: perplexity against a hand computation, batched generation, reward scores and
win rate, classifiers, PEFT adapters, the lm-evaluation-harness bridge, and the stage end to end."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from torch.nn import functional as F

from llm_recipes.evaluation.config import EvaluateArguments

pytestmark = pytest.mark.slow

TEXTS = [
    "What is 12 plus 13? 12 plus 13 is 25. The cat sat on the mat, and the dog ran in the park.",
    "A short one.",
    "Describe a process of making crepes: mix flour, eggs and milk, rest the batter, then fry thin layers.",
]


@pytest.fixture(scope="module")
def lm(base_model_dir):
    from llm_recipes.evaluation import load_model, load_tokenizer_for

    return load_model(str(base_model_dir), device="cpu"), load_tokenizer_for(str(base_model_dir))


def _save_classifier(folder, base_model_dir, cls_name: str, num_labels: int, seed: int):
    import transformers
    from transformers import AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    getattr(transformers, cls_name)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, base_model_dir):
    """A tiny reward model as TRL's RewardTrainer leaves it: a sequence classifier with one output."""
    folder = tmp_path_factory.mktemp("tiny-reward")
    return _save_classifier(folder, base_model_dir, "LlamaForSequenceClassification", 1, seed=1)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory, base_model_dir):
    """A second policy: the base architecture and tokenizer with other random weights."""
    from transformers import AutoTokenizer

    from llm_recipes.models.loading import init_decoder

    folder = tmp_path_factory.mktemp("tiny-other")
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    torch.manual_seed(7)
    init_decoder("llama-tiny", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Perplexity


def _token_logprob(model, context: list[int], token: int) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([context])).logits[0, -1]
    return float(F.log_softmax(logits.float(), -1)[token])


def test_perplexity_equals_the_full_computation_when_the_window_covers_the_text(lm):
    from llm_recipes.evaluation import perplexity

    model, tokenizer = lm
    text = TEXTS[0]
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = F.log_softmax(logits[:-1].float(), -1)
    nll = -float(logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())

    result = perplexity(model, tokenizer, [text], context_length=len(ids) + 3, stride=1)
    assert result.tokens == len(ids) - 1
    assert result.bytes == len(text.encode("utf-8"))
    assert result.perplexity == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-5)
    assert result.bits_per_byte == pytest.approx(nll / math.log(2) / len(text.encode("utf-8")), rel=1e-5)
    assert result.loss == pytest.approx(nll / (len(ids) - 1), rel=1e-5)


def test_sliding_window_matches_token_by_token_computation(lm):
    """Each token is scored once, with the context its window gives it: checked one forward pass per token."""
    from llm_recipes.evaluation import perplexity

    model, tokenizer = lm
    context_length, stride = 8, 3
    total_nll, total_tokens = 0.0, 0
    for text in TEXTS:
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        ends = [min(context_length, len(ids))]
        while ends[-1] < len(ids):
            ends.append(min(ends[-1] + stride, len(ids)))
        for position in range(1, len(ids)):
            end = next(e for e in ends if e > position)  # the first window reaching this token scores it
            start = max(0, end - context_length)
            total_nll -= _token_logprob(model, ids[start:position], ids[position])
            total_tokens += 1

    for batch_size in (1, 4):  # padding inside a batch must not change anything
        result = perplexity(
            model, tokenizer, TEXTS, context_length=context_length, stride=stride, batch_size=batch_size
        )
        assert result.tokens == total_tokens
        assert result.texts == len(TEXTS)
        assert result.perplexity == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)
    full = perplexity(model, tokenizer, TEXTS, context_length=256)
    assert full.tokens == total_tokens and full.perplexity != pytest.approx(result.perplexity, rel=1e-6)


def test_perplexity_on_shared_web_text_is_finite_and_per_byte(lm, shared_data):
    from llm_recipes.evaluation import load_eval_data, perplexity

    model, tokenizer = lm
    data = load_eval_data(str(shared_data / "c4_demo.jsonl"), max_samples=3)
    result = perplexity(model, tokenizer, data.texts, context_length=128, stride=64, batch_size=8)
    assert result.bytes == sum(len(t.encode("utf-8")) for t in data.texts)
    assert result.tokens > 128  # the documents are longer than one window
    # a random model over an 800-token vocabulary: about log2(800) bits per token, fewer per byte
    assert 1 < result.perplexity < 5000 and 0 < result.bits_per_byte < math.log2(800)


def test_recurrent_model_scores_and_generates(tmp_path, base_model_dir):
    """Our LSTM baseline: right padding leaves a recurrent model's scores alone; generation goes one prompt at a time
    (left padding would run through its state)."""
    from transformers import AutoTokenizer

    from llm_recipes.evaluation import (
        build_generation_config,
        generate_responses,
        load_model,
        load_tokenizer_for,
        perplexity,
    )
    from llm_recipes.models.loading import build_config, init_model

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    torch.manual_seed(0)
    init_model(build_config(tokenizer, preset="lstm-tiny")).save_pretrained(tmp_path / "lstm")
    tokenizer.save_pretrained(tmp_path / "lstm")
    model, tokenizer = load_model(str(tmp_path / "lstm"), device="cpu"), load_tokenizer_for(str(tmp_path / "lstm"))
    assert model.config.model_type == "recurrent_lm"
    one = perplexity(model, tokenizer, TEXTS, context_length=16, stride=8, batch_size=1)
    assert perplexity(model, tokenizer, TEXTS, context_length=16, stride=8, batch_size=4).perplexity == pytest.approx(
        one.perplexity, rel=1e-5
    )
    prompts = ["What is 12 plus 13?", "Hi"]
    config = build_generation_config(model, tokenizer, max_new_tokens=5)
    batched = generate_responses(model, tokenizer, prompts, generation_config=config, batch_size=2)
    assert batched == [generate_responses(model, tokenizer, [p], generation_config=config)[0] for p in prompts]


# ---------------------------------------------------------------------------------------------------------------
# Generation


def test_batched_generation_equals_one_prompt_at_a_time(lm):
    from llm_recipes.errors import UserError
    from llm_recipes.evaluation import build_generation_config, generate_responses

    model, tokenizer = lm
    prompts = ["What is 12 plus 13?", [{"role": "user", "content": "I see a green dog. What animal is it?"}], "Hi"]
    config = build_generation_config(model, tokenizer, max_new_tokens=6, overrides={"repetition_penalty": 1.3})
    assert config.do_sample is False and config.repetition_penalty == 1.3
    batched = generate_responses(model, tokenizer, prompts, generation_config=config, batch_size=3)
    single = [generate_responses(model, tokenizer, [p], generation_config=config)[0] for p in prompts]
    assert batched == single
    assert any(batched)  # the random model does say something

    with pytest.raises(UserError, match="unknown field 'max_new_token'; did you mean max_new_tokens"):
        build_generation_config(model, tokenizer, overrides={"max_new_token": 3})


# ---------------------------------------------------------------------------------------------------------------
# Reward and win rate


def test_reward_scores_and_win_rate_of_two_known_models(lm, other_model_dir, reward_model_dir):
    from llm_recipes.evaluation import (
        build_generation_config,
        compare_by_reward,
        generate_responses,
        load_model,
        load_reward_model,
        load_tokenizer_for,
        reward_scores,
        win_rate,
    )

    prompts = ["What is 12 plus 13?", "What is 15 minus 11?", "Name an animal.", "Describe crepes.", "Hello"]
    # A: the base model, greedy. B: other weights, and a decoding that never repeats a token (a random tiny model
    # left alone tends to repeat the prompt's last token, which would make A and B say the same thing)
    model_b = load_model(str(other_model_dir), device="cpu")
    tokenizer_b = load_tokenizer_for(str(other_model_dir))
    config_a = build_generation_config(*lm, max_new_tokens=6)
    config_b = build_generation_config(model_b, tokenizer_b, max_new_tokens=6, overrides={"no_repeat_ngram_size": 1})
    reward_model = load_reward_model(str(reward_model_dir), device="cpu")
    reward_tokenizer = load_tokenizer_for(str(reward_model_dir))

    # by hand: each answer generated alone, each (prompt + answer + EOS, as RewardTrainer trains on text) scored
    # alone at its last token
    def by_hand(model, tokenizer, config):
        answers = [generate_responses(model, tokenizer, [p], generation_config=config)[0] for p in prompts]
        scores = []
        for prompt, answer in zip(prompts, answers, strict=True):
            ids = reward_tokenizer(prompt + answer + reward_tokenizer.eos_token)["input_ids"]
            with torch.no_grad():
                scores.append(float(reward_model(torch.tensor([ids])).logits[0, 0]))
        return answers, scores

    answers_a, scores_a = by_hand(*lm, config_a)
    answers_b, scores_b = by_hand(model_b, tokenizer_b, config_b)
    assert answers_a != answers_b
    reward = (reward_model, reward_tokenizer)
    assert reward_scores(*reward, prompts, answers_a, batch_size=5) == pytest.approx(scores_a, abs=1e-5)

    comparison = compare_by_reward(
        lm,
        (model_b, tokenizer_b),
        reward,
        prompts,
        generation_config_a=config_a,
        generation_config_b=config_b,
        batch_size=5,
    )
    assert comparison.responses_a == answers_a and comparison.responses_b == answers_b
    assert comparison.scores_b == pytest.approx(scores_b, abs=1e-5)
    assert comparison.mean_reward_a == pytest.approx(sum(scores_a) / len(prompts), abs=1e-5)
    expected = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b, strict=True))
    assert comparison.win_rate == pytest.approx(expected / len(prompts))
    assert 0 < comparison.win_rate < 1  # these two models each win somewhere
    # the same model against itself ties everywhere; A over B and B over A add up to one
    same = compare_by_reward(lm, lm, reward, prompts, generation_config_a=config_a, generation_config_b=config_a)
    assert same.win_rate == 0.5
    assert win_rate(comparison.scores_b, comparison.scores_a) == pytest.approx(1 - comparison.win_rate)


# ---------------------------------------------------------------------------------------------------------------
# Classifiers and adapters


def test_sequence_and_token_classifiers_from_the_suite(tmp_path, base_model_dir):
    from transformers import AutoTokenizer

    from llm_recipes.evaluation import classification_metrics, load_model, predict_token_labels, run_evaluation

    classifier = _save_classifier(tmp_path / "clf", base_model_dir, "LlamaForSequenceClassification", 3, seed=2)
    rows = [{"text": t, "label": i % 3} for i, t in enumerate(TEXTS * 3)]
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = EvaluateArguments(
        model_name_or_path=str(classifier), dataset_path=str(data), label_field="label", output_dir=str(tmp_path / "o")
    )
    (result,) = run_evaluation(args)
    tokenizer = AutoTokenizer.from_pretrained(classifier)
    model = load_model(str(classifier), "sequence_classification", device="cpu")
    with torch.no_grad():  # one text at a time, no padding
        predictions = [int(model(**tokenizer(r["text"], return_tensors="pt")).logits.argmax()) for r in rows]
    expected = classification_metrics(predictions, [r["label"] for r in rows])
    assert result.kind == "sequence_classification"
    assert {k: result.metrics[k] for k in ("accuracy", "f1_macro", "f1_micro")} == pytest.approx(
        {k: expected[k] for k in ("accuracy", "f1_macro", "f1_micro")}
    )
    document = json.loads((tmp_path / "o" / "eval_results.json").read_text())
    assert {e["task_type"] for e in document["model_index"][str(classifier)]} == {"text-classification"}

    tagger = _save_classifier(tmp_path / "tagger", base_model_dir, "LlamaForTokenClassification", 4, seed=3)
    words = [t.split() for t in TEXTS]
    model = load_model(str(tagger), "token_classification", device="cpu")
    batched = predict_token_labels(model, tokenizer, words, batch_size=3)
    for sentence, predicted in zip(words, batched, strict=True):
        encoding = tokenizer(sentence, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            labels = model(**encoding).logits[0].argmax(-1).tolist()
        first = {}
        for position, word in enumerate(encoding.word_ids()):
            if word is not None:
                first.setdefault(word, labels[position])
        assert predicted == [first[i] for i in range(len(sentence))]


def test_peft_adapter_loads_on_its_base(tmp_path, lm, base_model_dir):
    """A fresh LoRA adapter is a no-op (B = 0), so it scores exactly like its base; the folder has no tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llm_recipes.evaluation import load_model, load_tokenizer_for, perplexity

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_model_dir), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "tokenizer.json").exists()
    adapter = load_model(str(tmp_path / "adapter"), device="cpu")
    tokenizer = load_tokenizer_for(str(tmp_path / "adapter"))
    assert type(adapter).__name__.startswith("PeftModel")
    base_ppl = perplexity(*lm, TEXTS, context_length=64).perplexity
    assert perplexity(adapter, tokenizer, TEXTS, context_length=64).perplexity == pytest.approx(base_ppl, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness


MC_ROWS = [
    {"question": "The sky is", "choices": ["blue", "green", "loud"], "answer": 0},
    {"question": "Water is", "choices": ["dry", "wet", "square"], "answer": 1},
    {"question": "Fire is", "choices": ["cold", "hot", "soft"], "answer": 1},
    {"question": "What is 12 plus 13?", "choices": ["25", "7", "plus"], "answer": 0},
    {"question": "Grass is", "choices": ["purple", "green", "blue"], "answer": 1},
]


@pytest.fixture(scope="module")
def tiny_task_dir(tmp_path_factory):
    """A local lm-evaluation-harness task: 5 multiple-choice rows in a jsonl, read offline by the `json` builder."""
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    data = folder / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in MC_ROWS))
    (folder / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


def test_lm_eval_bridge_runs_a_local_task(tiny_task_dir, lm, base_model_dir, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed")
    from llm_recipes.evaluation import run_lm_eval

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = MC_ROWS
    results = run_lm_eval(
        str(base_model_dir), ["tiny_mc"], include_path=str(tiny_task_dir), batch_size=4, device="cpu", bootstrap_iters=0
    )

    # by hand: the harness picks the choice with the highest summed log-likelihood of " choice" after the question
    model, tokenizer = lm
    correct = 0
    for row in rows:
        context = tokenizer(row["question"])["input_ids"]
        scores = []
        for choice in row["choices"]:
            whole = tokenizer(row["question"] + " " + choice)["input_ids"]
            scores.append(sum(_token_logprob(model, whole[:i], whole[i]) for i in range(len(context), len(whole))))
        correct += scores.index(max(scores)) == row["answer"]
    assert results == {"tiny_mc": {"acc": pytest.approx(correct / len(rows))}}


# ---------------------------------------------------------------------------------------------------------------
# The stage end to end


def test_stage_compares_models_end_to_end(
    tmp_path, base_model_dir, other_model_dir, reward_model_dir, tiny_task_dir, shared_data, capsys
):
    import importlib.util

    from conftest import PROJECT, write_yaml

    from llm_recipes.evaluation import eval_results_for_card

    # the second model looks like a trainer stage's output: a manifest and a checkpoint with a trainer state
    sft_like = tmp_path / "sft"
    shutil.copytree(other_model_dir, sft_like)
    (sft_like / "llm_recipes_manifest.json").write_text(json.dumps({"stage": "sft", "complete": True}))
    (sft_like / "checkpoint-4").mkdir()
    history = [{"step": s, "loss": 4.0 / s, "learning_rate": 1e-3 / s} for s in range(1, 5)] + [
        {"step": 4, "eval_loss": 1.5}
    ]
    (sft_like / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"log_history": history}))

    output = tmp_path / "eval"
    has_lm_eval = importlib.util.find_spec("lm_eval") is not None
    lm_eval_config = {"lm_eval_tasks": ["tiny_mc"], "lm_eval_include_path": str(tiny_task_dir)} if has_lm_eval else {}
    config = write_yaml(
        tmp_path / "evaluate.yaml",
        {
            "models": [str(base_model_dir), str(sft_like)],
            "dataset_path": str(shared_data / "alpaca_en_demo.json"),
            "perplexity_dataset_path": str(shared_data / "c4_demo.jsonl"),
            "max_eval_samples": 6,
            "context_length": 128,
            "max_new_tokens": 8,
            "reward_model": str(reward_model_dir),
            "num_samples": 3,
            "output_dir": str(output),
            "device": "cpu",
            **lm_eval_config,
        },
    )
    spec = importlib.util.spec_from_file_location("evaluate_recipe", PROJECT / "recipes" / "evaluate_models.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    metrics = recipe.main(*recipe.parse_args(["--config", str(config)]))

    document = json.loads((output / "eval_results.json").read_text())
    assert list(document["models"]) == [str(base_model_dir), str(sft_like)]
    for path, entry in document["models"].items():
        assert set(entry["metrics"]) >= {
            "perplexity",
            "bits_per_byte",
            "bleu",
            "chrf",
            "rougeL",
            "exact_match",
            "mean_reward",
        }
        assert entry["dataset"] == {"name": "alpaca_en_demo", "split": "train"}
        assert len(entry["samples"]) == 3 and {"prompt", "reference", "generation", "reward"} <= set(
            entry["samples"][0]
        )
        assert entry["metrics"] == pytest.approx(metrics[path])
    assert "win_rate" not in document["models"][str(base_model_dir)]["metrics"]
    assert 0 <= document["models"][str(sft_like)]["metrics"]["win_rate"] <= 1
    if has_lm_eval:
        assert 0 <= document["models"][str(sft_like)]["metrics"]["tiny_mc/acc"] <= 1
    card = eval_results_for_card(output / "eval_results.json", str(sft_like))
    assert {r.metric_type for r in card} >= {"perplexity", "bits_per_byte", "bleu", "rougeL", "win_rate"}
    assert {r.dataset_name for r in card if r.metric_type == "perplexity"} == {"c4_demo"}

    report = (output / "eval_report.md").read_text()
    assert "| model | stage | perplexity | bits/byte | BLEU | chrF | ROUGE-L | exact match | mean reward |" in report
    assert "![loss](plots/" in report
    plots = sorted((output / "plots").rglob("*.png"))
    assert [p.name for p in plots] == ["learning_rate.png", "loss.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)
    generations = (output / "generations").glob("*.jsonl")
    assert sorted(len(p.read_text().splitlines()) for p in generations) == [6, 6]
    manifest = json.loads((output / "llm_recipes_manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and manifest["complete"]

    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith(str(sft_like))]
    assert table and " sft " in table[0]  # the stage comes from the model folder's manifest
