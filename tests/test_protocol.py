"""The evaluation protocol: two models measured on one spec give the same measure names; every measure equals a
hand computation on a tiny model; the evaluate stage, a compression report and the pipeline table print the same
measures, and the same model gets the same figure in each (no two cells with one name computed differently)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_yaml
from torch.nn import functional as F

from llm_recipes.data.synthetic import synthetic_reward
from llm_recipes.errors import UserError
from llm_recipes.evaluation.protocol import (
    MEASURES,
    Protocol,
    ProtocolSpec,
    measure,
    measure_kind,
    read_protocol,
    spec_from_dict,
)

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "llm_recipes.cli"]

CORPUS = [
    "The river runs past the old mill, and the miller sells bread on the hill every morning.",
    "A short page.",
    "What is 12 plus 13? 12 plus 13 is 25. The cat sat on the mat, and the dog ran in the park.",
]
ARITHMETIC = [("What is 3 plus 4?", "3 plus 4 is 7."), ("What is 9 minus 2?", "9 minus 2 is 7.")]
COLOUR_PROMPTS = ["Describe the cat.", "What is the owl like?", "Tell me about the fox."]
CHATS = [
    [{"role": "user", "content": "I see a red dog. What animal is it?"}, {"role": "assistant", "content": "A dog."}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What colour is the blue fox?"},
        {"role": "assistant", "content": "The fox is blue."},
        {"role": "user", "content": "And where does it live?"},
        {"role": "assistant", "content": "It lives near the river."},
    ],
]
SAMPLE_PROMPTS = ["What is 7 plus 5?", "Describe the owl."]
MAX_NEW_TOKENS = 6


def _save_model(folder: Path, tokenizer_dir: Path, seed: int) -> Path:
    from transformers import AutoTokenizer

    from llm_recipes.models.loading import init_decoder

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = init_decoder("llama-tiny", tokenizer)
    with torch.no_grad():  # wide random weights: varied answers (a fresh init repeats one token)
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory, chat_model_dir) -> tuple[Path, Path]:
    """Two chat models (ChatML template) with different random weights."""
    root = tmp_path_factory.mktemp("protocol-models")
    return _save_model(root / "a", chat_model_dir, 1), _save_model(root / "b", chat_model_dir, 2)


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, chat_model_dir) -> Path:
    """A tiny reward model as the reward stage leaves it: a one-output classifier on the chat tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("protocol-reward")
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(3)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def greedy_answer(model, tokenizer, prompt: str) -> str:
    """A greedy answer computed by hand: one prompt, the chat template, `generate` token by token up to EOS."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    ids = list(ids)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(MAX_NEW_TOKENS):
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory, models, reward_dir) -> Path:
    """A protocol over every kind of measure; half the arithmetic references are model a's own greedy answers, so
    its exact match is 0.5 by construction."""
    from llm_recipes.evaluation import load_model, load_tokenizer_for

    root = tmp_path_factory.mktemp("protocol-data")
    model, tokenizer = load_model(str(models[0]), device="cpu"), load_tokenizer_for(str(models[0]))
    own = greedy_answer(model, tokenizer, ARITHMETIC[0][0])
    arithmetic = [{"instruction": ARITHMETIC[0][0], "input": "", "output": own}]
    arithmetic += [{"instruction": q, "input": "", "output": a} for q, a in ARITHMETIC[1:]]
    (root / "checks.py").write_text(
        "def answer_length(prompts, completions, **kwargs):\n"
        "    return [float(len(c[0]['content'] if isinstance(c, list) else c)) for c in completions]\n",
        encoding="utf-8",
    )
    spec = {
        "corpus": {"path": _jsonl(root / "corpus.jsonl", [{"text": t} for t in CORPUS]), "split": "train"},
        "tasks": [
            {"name": "arithmetic", "kind": "exact_match", "path": _jsonl(root / "arith.jsonl", arithmetic)},
            {
                "name": "colour",
                "kind": "true_reward",
                "path": _jsonl(
                    root / "colour.jsonl", [{"prompt": [{"role": "user", "content": p}]} for p in COLOUR_PROMPTS]
                ),
                "function": "llm_recipes.data.synthetic:synthetic_reward",
            },
            {
                "name": "length",
                "kind": "share",
                "path": str(root / "colour.jsonl"),
                "function": f"{root / 'checks.py'}:answer_length",
            },
            {
                "name": "chat",
                "kind": "chat_loss",
                "path": _jsonl(root / "chats.jsonl", [{"messages": c} for c in CHATS]),
            },
        ],
        "reward_model": {"path": str(reward_dir), "task": "colour"},
        "samples": {"prompts": SAMPLE_PROMPTS, "max_new_tokens": 5},
        "latency": {"max_new_tokens": 4, "repeats": 1},
        "max_new_tokens": MAX_NEW_TOKENS,
        "batch_size": 2,
        "device": "cpu",
    }
    return write_yaml(root / "protocol.yaml", spec)


@pytest.fixture(scope="module")
def measured(models, spec_file):
    protocol = Protocol(read_protocol(str(spec_file)))
    return [measure(str(folder), None, protocol) for folder in models]


def test_two_models_give_the_same_measure_names(measured, spec_file):
    spec = read_protocol(str(spec_file))
    names = spec.measure_names()
    assert names == [
        "corpus_perplexity",
        "corpus_bits_per_byte",
        "arithmetic/exact_match",
        "colour/true_reward",
        "length/share",
        "chat/chat_loss",
        "reward_model_score",
        "ms_per_token",
        "size_bytes",
        "parameters",
    ]
    first, second = measured
    assert list(first.measures) == list(second.measures) == names
    assert all(value is not None for result in measured for value in result.measures.values())
    assert first.measures["corpus_perplexity"] != second.measures["corpus_perplexity"]  # two models indeed
    assert set(spec.definitions()) == set(names) and all(measure_kind(n) in MEASURES for n in names)
    assert first.protocol == second.protocol == spec.fingerprint()
    assert [s["prompt"] for s in first.samples] == SAMPLE_PROMPTS and all(
        s["greedy"] is not None for s in first.samples
    )


def test_corpus_perplexity_and_bits_per_byte_equal_a_loop_over_tokens(measured, models):
    from llm_recipes.evaluation import load_model, load_tokenizer_for

    model, tokenizer = load_model(str(models[0]), device="cpu"), load_tokenizer_for(str(models[0]))
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    nll, tokens, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for text in CORPUS:
            ids = [start, *tokenizer(text, add_special_tokens=False)["input_ids"]]
            for position in range(1, len(ids)):
                logits = model(torch.tensor([ids[:position]])).logits[0, -1]
                nll -= float(F.log_softmax(logits.float(), -1)[ids[position]])
                tokens += 1
            n_bytes += len(text.encode("utf-8"))
    result = measured[0].measures
    assert result["corpus_perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert result["corpus_bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-4)


def test_task_scores_equal_hand_computations(measured, models):
    from llm_recipes.evaluation import load_model, load_tokenizer_for

    model, tokenizer = load_model(str(models[0]), device="cpu"), load_tokenizer_for(str(models[0]))
    result = measured[0]
    # exact match: the first reference is the model's own greedy answer, the second a right sum it does not give
    answers = [greedy_answer(model, tokenizer, question) for question, _ in ARITHMETIC]
    assert result.answers["arithmetic"] == answers
    assert answers[1] != ARITHMETIC[1][1]
    assert result.measures["arithmetic/exact_match"] == 0.5
    # true reward: the task's own reward function on the greedy answers, as RL calls it
    colour = [greedy_answer(model, tokenizer, prompt) for prompt in COLOUR_PROMPTS]
    assert result.answers["colour"] == result.answers["length"] == colour
    prompts = [[{"role": "user", "content": p}] for p in COLOUR_PROMPTS]
    completions = [[{"role": "assistant", "content": answer}] for answer in colour]
    expected = synthetic_reward(prompts, completions)
    assert result.measures["colour/true_reward"] == pytest.approx(sum(expected) / len(expected))
    assert result.measures["length/share"] == pytest.approx(sum(len(a) for a in colour) / len(colour))


def test_chat_loss_equals_a_masked_cross_entropy(measured, models):
    from llm_recipes.evaluation import load_model, load_tokenizer_for

    model, tokenizer = load_model(str(models[0]), device="cpu"), load_tokenizer_for(str(models[0]))
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for chat in CHATS:
            encoded = tokenizer.apply_chat_template(
                chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            ids, mask = list(encoded["input_ids"]), encoded["assistant_masks"]
            logits = model(torch.tensor([ids])).logits[0].float()
            for position in range(1, len(ids)):
                if mask[position]:
                    nll -= float(F.log_softmax(logits[position - 1], -1)[ids[position]])
                    tokens += 1
    assert tokens > 10
    assert measured[0].measures["chat/chat_loss"] == pytest.approx(nll / tokens, rel=1e-4)
    assert measured[0].details["chat/chat_loss"]["assistant tokens"] == tokens


def test_reward_model_score_size_and_parameters_by_hand(measured, models, reward_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = measured[0]
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    scores = []
    with torch.no_grad():
        for prompt, answer in zip(COLOUR_PROMPTS, result.answers["colour"], strict=True):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            scores.append(float(reward_model(ids).logits[0, 0]))
    assert result.measures["reward_model_score"] == pytest.approx(sum(scores) / len(scores), rel=1e-4)
    files = sorted(Path(models[0]).glob("*.safetensors"))
    assert files and result.measures["size_bytes"] == sum(file.stat().st_size for file in files)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models[0])
    assert result.measures["parameters"] == sum(p.numel() for p in model.parameters())  # tied weights once


def test_latency_is_per_generated_token(models, spec_file, monkeypatch):
    """With a clock that advances one second per reading, a timed run lasts one second: ms/token must be 1000 /
    the tokens generated (the protocol's max_new_tokens), whatever the prompt length."""
    import llm_recipes.evaluation.footprint as footprint

    clock = iter(range(1000))
    monkeypatch.setattr(footprint, "perf_counter", lambda: float(next(clock)))
    spec = read_protocol(str(spec_file))
    spec.corpus, spec.tasks, spec.reward_model, spec.samples.prompts = None, [], None, []
    spec.latency.max_new_tokens, spec.latency.repeats = 8, 3
    result = measure(str(models[1]), None, spec)
    assert result.measures["ms_per_token"] == pytest.approx(1000 / 8)
    assert list(result.measures) == ["ms_per_token", "size_bytes", "parameters"]


def test_spec_mistakes_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"protocol: tasks\[0\]\.kind: 'accuracy' is not one of exact_match"):
        spec_from_dict({"tasks": [{"name": "a", "kind": "accuracy", "path": "x.jsonl"}]})
    with pytest.raises(UserError, match=r"p.yaml: corpus.max_text: unknown field; did you mean max_texts\?"):
        spec_from_dict({"corpus": {"path": "c.jsonl", "max_text": 3}}, "p.yaml")
    with pytest.raises(UserError, match="true_reward and share tasks need one"):
        spec_from_dict({"tasks": [{"name": "c", "kind": "true_reward", "path": "c.jsonl"}]})
    with pytest.raises(UserError, match="reward_model scores answers to 'colour': add it to tasks"):
        spec_from_dict({"reward_model": {"path": "rm", "task": "colour"}})
    with pytest.raises(UserError, match="protocol: file not found"):
        read_protocol(str(tmp_path / "missing.yaml"))
    assert ProtocolSpec().measure_names() == ["ms_per_token", "size_bytes", "parameters"]


# ---------------------------------------------------------------------------------------------------------------
# The stages and the pipeline table use the protocol


def _run(stage: str, config: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        CLI + [stage, "--config", str(config)], capture_output=True, text=True, timeout=600, env=_env()
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def _env() -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_evaluate_compression_and_pipeline_table_share_the_protocol(tmp_path, models, spec_file):
    from llm_recipes.pipeline.report import StageResult, format_results, model_rows

    names = read_protocol(str(spec_file)).measure_names()
    evaluated = tmp_path / "evaluate"
    config = {"models": [str(m) for m in models], "protocol": str(spec_file), "output_dir": str(evaluated)}
    # a metric of the other fields beside the protocol's: exact match on a file of their own, under its own name
    config.update(dataset_path=str(spec_file.parent / "arith.jsonl"), metrics=["exact_match"], max_new_tokens=4)
    printed = _run("evaluate", write_yaml(tmp_path / "evaluate.yaml", config)).stdout
    document = json.loads((evaluated / "eval_results.json").read_text())
    assert document["protocol"]["measures"] == names
    for path in map(str, models):
        assert list(document["models"][path]["protocol"]["measures"]) == names
        assert set(names) | {"exact_match"} == set(document["models"][path]["metrics"])
    assert printed.count("corpus ppl: exp(total negative log-likelihood") == 1  # each definition printed once
    from llm_recipes.evaluation import eval_results_for_card

    card = {result.metric_type: result for result in eval_results_for_card(evaluated, str(models[0]))}
    assert {"corpus_perplexity", "arithmetic/exact_match", "chat/chat_loss", "reward_model_score"} < set(card)
    assert "exact_match" in card and not {"ms_per_token", "size_bytes", "parameters"} & set(card)  # no data: no card
    assert card["corpus_perplexity"].dataset_name == "corpus" and card["corpus_perplexity"].metric_name == "corpus ppl"

    quantized = tmp_path / "quantized"
    config = {"model_name_or_path": str(models[0]), "output_dir": str(quantized), "method": "bnb_int8"}
    config["protocol"] = str(spec_file)
    _run("quantize", write_yaml(tmp_path / "quantize.yaml", config))
    comparison = json.loads((quantized / "compression_report.json").read_text())["comparison"]
    assert comparison["protocol"]["measures"] == names
    assert list(comparison["source"]["measures"]) == list(comparison["compressed"]["measures"]) == names

    # the same model, measured by evaluate and again as quantize's source: the same figure under each name
    evaluated_a = document["models"][str(models[0])]["protocol"]["measures"]
    for name in names:
        if name != "ms_per_token":  # the only measure that is a timing
            assert comparison["source"]["measures"][name] == pytest.approx(evaluated_a[name], rel=1e-5), name

    results = [StageResult("evaluate", "ran", str(evaluated)), StageResult("quantize", "ran", str(quantized))]
    header, rows = model_rows(results)
    assert header["measures"] == names
    assert [row.label.strip() for row in rows] == [
        models[0].name,
        models[1].name,
        "quantize",
        f"its source, {models[0].name}",
    ]
    assert all(list(row.result["measures"]) == names for row in rows)
    table = format_results(results)
    assert "every model on the protocol" in table and "measured under another protocol" not in table
    assert table.count("chat loss: mean negative log-likelihood per assistant-turn token") == 1
    assert "answers to the protocol's fixed prompts" in table


def test_report_fields_with_a_protocol_are_refused(tmp_path, models, spec_file):
    config = {
        "model_name_or_path": str(models[0]),
        "output_dir": str(tmp_path / "q"),
        "protocol": str(spec_file),
        "eval_dataset_path": str(spec_file),
    }
    completed = subprocess.run(
        CLI + ["quantize", "--config", str(write_yaml(tmp_path / "q.yaml", config))],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: set protocol or eval_dataset_path, not both: the protocol file names the report's data"
    )


def _result(model: str, fingerprint: str, ppl: float, size: int) -> dict:
    measures = {"corpus_perplexity": ppl, "ms_per_token": 1.0, "size_bytes": size, "parameters": 10}
    samples = [{"prompt": "Describe the owl.", "greedy": f"{model} greedy", "sampled": f"{model} sampled"}]
    return {"model": model, "protocol": fingerprint, "measures": measures, "samples": samples, "details": {}}


def test_pipeline_table_has_a_row_per_model_and_flags_another_protocol(tmp_path):
    """Read back from the files the stages wrote: evaluate's models, then each compression row and its source; a
    row measured under an older protocol file is marked, never silently compared."""
    from llm_recipes.evaluation.protocol import protocol_header
    from llm_recipes.pipeline.report import StageResult, format_results

    spec = spec_from_dict({"corpus": {"path": "corpus.jsonl"}, "samples": ["Describe the owl."]}, "p.yaml")
    header, fingerprint = protocol_header(spec), spec.fingerprint()
    assert header["measures"] == [
        "corpus_perplexity",
        "corpus_bits_per_byte",
        "ms_per_token",
        "size_bytes",
        "parameters",
    ]
    (tmp_path / "evaluate").mkdir()
    models = {
        str(tmp_path / "pretrain"): {"stage": "pretrain", "protocol": _result("pretrain", fingerprint, 2.0, 100)},
        str(tmp_path / "sft"): {"stage": "sft", "protocol": _result("sft", fingerprint, 3.0, 100)},
    }
    (tmp_path / "evaluate" / "eval_results.json").write_text(json.dumps({"models": models, "protocol": header}))
    (tmp_path / "quantize").mkdir()
    comparison = {
        "protocol": header,
        "source": _result(str(tmp_path / "sft"), fingerprint, 3.0, 100),
        "compressed": _result(str(tmp_path / "quantize"), "0ther0protocol", 3.1, 50),
    }
    (tmp_path / "quantize" / "compression_report.json").write_text(json.dumps({"comparison": comparison}))
    table = format_results(
        [
            StageResult("evaluate", "ran", str(tmp_path / "evaluate"), 1.0),
            StageResult("quantize", "done earlier", str(tmp_path / "quantize"), 1.0),
            StageResult("prune", "skipped"),
        ]
    )
    rows = table.split("every model on the protocol p.yaml:")[1].strip().split("\n\n")[0].splitlines()[2:]
    assert [row.strip().split("  ")[0] for row in rows] == [
        "pretrain",
        "sft",
        "quantize *",
        "its source, sft",
    ]
    assert rows[2].split()[2:4] == ["3.1", "-"]  # corpus ppl, and no bits per byte in that result: "-"
    assert "* measured under another protocol" in table
    assert "corpus ppl relative to pretrain: sft 1.5x, quantize 1.55x" in table
    assert table.count("corpus ppl: exp(total negative log-likelihood") == 1
    answers = table.split("answers to")[1]
    lines = answers.splitlines()
    sft = next(index for index, line in enumerate(lines) if line.split()[:2] == ["sft", "greedy"])
    assert lines[sft].endswith("sft greedy") and lines[sft + 1].split()[0] == "sampled"
    assert lines[sft + 1].endswith("sft sampled") and "its source" not in answers
