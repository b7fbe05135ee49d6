"""Evaluation helpers that need no model: metric modules against the reference libraries, classification metrics,
win rate, training-curve plots, the results file and report, and the argument checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llm_recipes.errors import UserError
from llm_recipes.evaluation.config import EvaluateArguments

PREDICTIONS = ["the cat sat on the mat", "a dog runs in the park today", "hello there", "It is a green dog."]
REFERENCES = ["the cat is on the mat", "the dog runs in a park", "hello there", "It is a dog."]
SECOND_REFERENCES = ["a cat sat on a mat", "a dog ran in the park", "hi there", "The dog is green."]


# ---------------------------------------------------------------------------------------------------------------
# Metric modules: loaded by path through `evaluate`, equal to the reference implementations called directly


def test_bleu_and_chrf_match_sacrebleu():
    import sacrebleu

    from llm_recipes.metrics import load_metric

    bleu = load_metric("bleu").compute(predictions=PREDICTIONS, references=REFERENCES)
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES])
    assert bleu["bleu"] == pytest.approx(expected.score)
    assert bleu["brevity_penalty"] == pytest.approx(expected.bp)
    assert 0 < bleu["bleu"] < 100

    # several references per prediction: sacrebleu takes them as parallel streams
    multi = [[a, b] for a, b in zip(REFERENCES, SECOND_REFERENCES, strict=True)]
    bleu_multi = load_metric("bleu").compute(predictions=PREDICTIONS, references=multi)["bleu"]
    assert bleu_multi == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES, SECOND_REFERENCES]).score)
    assert bleu_multi > bleu["bleu"]

    chrf = load_metric("chrf").compute(predictions=PREDICTIONS, references=REFERENCES)["chrf"]
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score)
    chrf_pp = load_metric("chrf").compute(predictions=PREDICTIONS, references=REFERENCES, word_order=2)["chrf"]
    assert chrf_pp == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES], word_order=2).score)


def test_rouge_matches_rouge_score():
    from rouge_score import rouge_scorer

    from llm_recipes.metrics import load_metric

    result = load_metric("rouge").compute(predictions=PREDICTIONS, references=REFERENCES)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    per_example = [scorer.score(ref, pred) for pred, ref in zip(PREDICTIONS, REFERENCES, strict=True)]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = sum(scores[name].fmeasure for scores in per_example) / len(per_example)
        assert result[name] == pytest.approx(expected)
    assert result["rouge1"] > result["rouge2"]

    stemmed = load_metric("rouge").compute(predictions=["cats running"], references=["cat runs"], use_stemmer=True)
    assert stemmed["rouge1"] == pytest.approx(1.0)


def test_exact_match_and_the_local_module_layout():
    import evaluate

    from llm_recipes.metrics import METRIC_NAMES, load_metric, metric_path

    for name in METRIC_NAMES:
        folder = Path(metric_path(name))
        assert (folder / f"{name}.py").is_file()
        assert isinstance(evaluate.load(str(folder)), evaluate.Metric)  # plain evaluate.load works on the path
    with pytest.raises(UserError, match="unknown metric 'blue'"):
        metric_path("blue")

    em = load_metric("exact_match")
    assert em.compute(predictions=PREDICTIONS, references=REFERENCES)["exact_match"] == pytest.approx(0.25)
    loose = em.compute(
        predictions=["Paris.", " rome "], references=["paris", "Rome"], ignore_case=True, ignore_punctuation=True
    )
    assert loose["exact_match"] == 1.0
    assert em.compute(predictions=["Paris."], references=["paris"])["exact_match"] == 0.0
    assert em.compute(predictions=["b"], references=[["a", "b"]])["exact_match"] == 1.0  # any reference counts


def test_generation_metrics_bundle_equals_the_parts():
    import sacrebleu

    from llm_recipes.evaluation import generation_metrics

    metrics = generation_metrics(PREDICTIONS, REFERENCES)
    assert set(metrics) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match"}
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score)
    assert metrics["exact_match"] == pytest.approx(0.25)
    assert set(generation_metrics(PREDICTIONS, REFERENCES, ["rouge"])) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    with pytest.raises(UserError, match="3 predictions but 4 references"):
        generation_metrics(PREDICTIONS[:3], REFERENCES)


# ---------------------------------------------------------------------------------------------------------------
# Classification metrics on fixed predictions


def test_sequence_classification_metrics_by_hand():
    from llm_recipes.evaluation import classification_metrics

    references = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 2, 2]
    metrics = classification_metrics(predictions, references)
    # class 0: tp 2, predicted 2, actual 3 -> P 1, R 2/3, F1 0.8
    # class 1: tp 1, predicted 2, actual 2 -> P 1/2, R 1/2, F1 1/2
    # class 2: tp 1, predicted 2, actual 1 -> P 1/2, R 1, F1 2/3
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision_macro"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert metrics["recall_macro"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert metrics["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # single-label: micro precision = micro recall = micro F1 = accuracy
    for key in ("precision_micro", "recall_micro", "f1_micro"):
        assert metrics[key] == pytest.approx(4 / 6)
    assert metrics["support"] == 6

    # a class never predicted has precision 0 (scikit-learn's zero_division=0); names work like ids
    named = classification_metrics(["pos", "pos", "pos"], ["pos", "neg", "neg"])
    assert named["precision_macro"] == pytest.approx((1 / 3 + 0) / 2)
    assert named["recall_macro"] == pytest.approx((1 + 0) / 2)


def test_token_classification_metrics_skip_ignored_positions():
    from llm_recipes.evaluation import classification_metrics

    references = [[0, 1, -100, 1], [2, -100, 0]]
    predictions = [[0, 1, 2, 0], [2, 1, 0]]  # the -100 positions (sub-words, padding) never count
    metrics = classification_metrics(predictions, references)
    assert metrics["support"] == 5
    assert metrics["accuracy"] == pytest.approx(4 / 5)
    # class 0: tp 2, pred 3, actual 2; class 1: tp 1, pred 1, actual 2; class 2: tp 1, pred 1, actual 1
    assert metrics["precision_macro"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert metrics["recall_macro"] == pytest.approx((1 + 0.5 + 1) / 3)
    with pytest.raises(UserError, match="2 predicted labels but 3 references"):
        classification_metrics([[0, 1]], [[0, 1, 1]])


def test_classification_metrics_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    import random

    from llm_recipes.evaluation import classification_metrics

    rng = random.Random(0)
    references = [rng.randrange(4) for _ in range(200)]
    predictions = [r if rng.random() < 0.6 else rng.randrange(4) for r in references]
    ours = classification_metrics(predictions, references)
    for average in ("macro", "micro"):
        assert ours[f"f1_{average}"] == pytest.approx(
            sklearn_metrics.f1_score(references, predictions, average=average, zero_division=0)
        )
        assert ours[f"precision_{average}"] == pytest.approx(
            sklearn_metrics.precision_score(references, predictions, average=average, zero_division=0)
        )
        assert ours[f"recall_{average}"] == pytest.approx(
            sklearn_metrics.recall_score(references, predictions, average=average, zero_division=0)
        )


def test_win_rate_counts_ties_half():
    from llm_recipes.evaluation import win_rate

    assert win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert win_rate([0.3, 0.1], [0.3, 0.1]) == 0.5
    with pytest.raises(UserError, match="paired"):
        win_rate([1.0], [1.0, 2.0])


# ---------------------------------------------------------------------------------------------------------------
# Training curves


def _write_state(folder: Path, steps: int) -> None:
    history = []
    for step in range(1, steps + 1):
        history.append(
            {
                "step": step,
                "epoch": step / 10,
                "loss": 3.0 / step,
                "learning_rate": 1e-3 * (1 - step / 40),
                "rewards/chosen": 0.1 * step,
                "rewards/accuracies": 0.5,
                "objective/kl": 0.01 * step,
            }
        )
        if step % 5 == 0:
            history.append({"step": step, "eval_loss": 3.5 / step, "eval_runtime": 0.1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history}), encoding="utf-8")


def test_plots_are_valid_pngs_from_the_latest_checkpoint(tmp_path):
    from llm_recipes.evaluation import find_trainer_state, plot_training_curves
    from llm_recipes.evaluation.plots import curve_series, read_log_history

    run = tmp_path / "run"
    _write_state(run / "checkpoint-9", 9)
    _write_state(run / "checkpoint-20", 20)  # numerically latest, though it sorts before checkpoint-9 as text
    assert find_trainer_state(run) == run / "checkpoint-20" / "trainer_state.json"
    series = curve_series(read_log_history(run))
    assert set(series) == {"loss", "learning_rate", "reward", "kl"}
    assert set(series["loss"]) == {"loss", "eval_loss"}
    assert set(series["reward"]) == {"rewards/chosen"}  # accuracies are not rewards
    assert series["loss"]["eval_loss"][0] == [5, 10, 15, 20]

    written = plot_training_curves(run, tmp_path / "plots", title="run")
    assert sorted(p.name for p in written) == ["kl.png", "learning_rate.png", "loss.png", "reward.png"]
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 5000

    # a top-level trainer_state.json (trainer.save_state()) wins over checkpoints; no state: no plots
    _write_state(run, 3)
    assert find_trainer_state(run) == run / "trainer_state.json"
    assert plot_training_curves(tmp_path / "nothing-here", tmp_path / "none") == []


# ---------------------------------------------------------------------------------------------------------------
# Results file, model-card results, report


def _results():
    from llm_recipes.evaluation.report import DatasetRef, ModelResult

    data = DatasetRef("data/eval.jsonl", "eval", "test")
    text = DatasetRef("data/web.jsonl", "web", "train")
    base = ModelResult(
        path="outputs/base",
        stage="init-model",
        dataset=data,
        perplexity_dataset=text,
        metrics={"perplexity": 40.0, "bits_per_byte": 1.5, "bleu": 1.0, "rougeL": 0.1, "mean_reward": -0.5},
    )
    sft = ModelResult(
        path="outputs/sft",
        stage="sft",
        dataset=data,
        perplexity_dataset=text,
        metrics={
            "perplexity": 20.0,
            "bits_per_byte": 1.2,
            "bleu": 30.0,
            "rougeL": 0.5,
            "mean_reward": 0.5,
            "win_rate": 0.75,
        },
        samples=[{"prompt": "a | b\nc", "reference": "r", "generation": "g", "reward": 0.5}],
        lm_eval={"tiny_mc": {"acc": 0.6}},
    )
    return [base, sft]


def test_eval_results_schema_and_model_card_results(tmp_path):
    from huggingface_hub import EvalResult

    from llm_recipes.evaluation import eval_results_for_card, write_eval_results

    path = write_eval_results(_results(), tmp_path)
    document = json.loads(path.read_text())
    assert set(document) == {"models", "model_index"}
    sft = document["models"]["outputs/sft"]
    assert set(sft) == {"metrics", "dataset", "samples", "stage"}
    assert sft["metrics"]["perplexity"] == 20.0 and sft["metrics"]["tiny_mc/acc"] == 0.6
    assert sft["dataset"] == {"name": "eval", "split": "test"}
    entries = {e["metric_type"]: e for e in document["model_index"]["outputs/sft"]}
    assert entries["perplexity"]["dataset_name"] == "web"  # perplexity was measured on the text dataset
    assert entries["bleu"]["dataset_type"] == "data/eval.jsonl" and entries["bleu"]["dataset_split"] == "test"
    assert entries["win_rate"]["metric_name"] == "Win rate vs outputs/base"
    assert entries["acc"]["dataset_name"] == "tiny_mc"
    assert {e["task_type"] for e in entries.values()} == {"text-generation"}
    assert "win_rate" not in {e["metric_type"] for e in document["model_index"]["outputs/base"]}

    card = eval_results_for_card(path, "outputs/sft")
    assert all(isinstance(r, EvalResult) for r in card)
    assert {(r.metric_type, r.metric_value) for r in card} >= {("perplexity", 20.0), ("bleu", 30.0)}
    # the same folder named another way, or just by its name, finds the entry
    (tmp_path / "outputs" / "sft").mkdir(parents=True)
    assert len(eval_results_for_card(tmp_path, str(tmp_path / "outputs" / "sft"))) == len(card)
    with pytest.raises(UserError, match="no results for 'outputs/rl'"):
        eval_results_for_card(path, "outputs/rl")
    with pytest.raises(UserError, match="eval results not found"):
        eval_results_for_card(tmp_path / "missing.json", "outputs/sft")


def test_comparison_table_and_markdown_report():
    from llm_recipes.evaluation import comparison_rows, markdown_report, text_table

    header, rows = comparison_rows(_results())
    assert header == [
        "model",
        "stage",
        "perplexity",
        "bits/byte",
        "BLEU",
        "ROUGE-L",
        "mean reward",
        "win rate vs first",
        "tiny_mc/acc",
    ]
    assert rows[0] == ["outputs/base", "init-model", "40", "1.5", "1", "0.1", "-0.5", "-", "-"]
    assert rows[1][-2:] == ["0.75", "0.6"]
    printed = text_table(header, rows).splitlines()
    assert printed[0].startswith("model") and len(printed) == 4

    report = markdown_report(_results(), {"reward_model": "outputs/rm", "generation": {"max_new_tokens": 8}})
    assert "| model | stage | perplexity | bits/byte |" in report
    assert "| outputs/sft | sft | 20 | 1.2 | 30 |" in report
    assert "a \\| b<br>c" in report  # a cell never breaks the table
    assert "Reward under `outputs/rm`" in report and "## `outputs/sft`" in report


# ---------------------------------------------------------------------------------------------------------------
# Argument checks: one clear line each


def _args(**fields) -> EvaluateArguments:
    return EvaluateArguments(**fields)


def test_model_folder_without_weights_is_one_line(tmp_path):
    from llm_recipes.evaluation.suite import check_arguments

    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"")
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "hello"}\n')
    with pytest.raises(UserError, match=r"has no weights -- no \.safetensors file \(found pytorch_model\.bin") as err:
        check_arguments(_args(model_name_or_path=str(folder), dataset_path=str(data)))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="model folder not found"):
        check_arguments(_args(model_name_or_path=str(tmp_path / "nope"), dataset_path=str(data)))
    with pytest.raises(UserError, match="no model to evaluate"):
        check_arguments(_args(dataset_path=str(data)))


def test_empty_dataset_and_other_config_mistakes(tmp_path, base_model_dir):
    from llm_recipes.evaluation.suite import check_arguments

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match=f"dataset '{empty}' is empty"):
        check_arguments(_args(model_name_or_path=str(base_model_dir), dataset_path=str(empty)))
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "hello"}\n')
    base = dict(model_name_or_path=str(base_model_dir), dataset_path=str(data))
    with pytest.raises(UserError, match="reward needs reward_model"):
        check_arguments(_args(**base, metrics=["perplexity", "reward"]))
    with pytest.raises(UserError, match="stride: 8 must be below context_length"):
        check_arguments(_args(**base, context_length=8, stride=8))
    with pytest.raises(UserError, match="generation_config: unknown field 'temprature'"):
        check_arguments(_args(**base, generation_config={"temprature": 0.7}))
    with pytest.raises(UserError, match="generation_config: expected a mapping"):
        check_arguments(_args(**base, generation_config="not json"))
    with pytest.raises(UserError, match="nothing to evaluate on"):
        check_arguments(_args(model_name_or_path=str(base_model_dir)))


def test_missing_text_column_is_one_line(tmp_path, base_model_dir):
    from llm_recipes.evaluation.suite import load_inputs

    data = tmp_path / "eval.jsonl"
    data.write_text('{"content": "hello"}\n{"content": "world"}\n')
    with pytest.raises(UserError) as err:
        load_inputs(_args(model_name_or_path=str(base_model_dir), dataset_path=str(data), text_field="body"))
    assert "\n" not in str(err.value) and "content" in str(err.value)
    with pytest.raises(UserError, match="set text_field"):
        load_inputs(_args(model_name_or_path=str(base_model_dir), dataset_path=str(data), data_format="text"))
    plain = dict(model_name_or_path=str(base_model_dir), dataset_path=str(data), text_field="content")
    with pytest.raises(UserError, match="metrics: bleu needs prompts with reference answers"):
        load_inputs(_args(**plain, metrics=["perplexity", "generation"]))
    assert load_inputs(_args(**plain)).data.texts == ["hello", "world"]
    with pytest.raises(UserError, match="label_field: dataset .* has no column 'label'"):
        load_inputs(
            _args(
                model_name_or_path=str(base_model_dir),
                dataset_path=str(data),
                text_field="content",
                label_field="label",
            )
        )


def test_recipe_prints_config_errors_as_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import PROJECT

    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "hello"}\n')
    completed = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "recipes" / "evaluate_models.py"),
            "--model_name_or_path",
            str(folder),
            "--dataset_path",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == f"error: model_name_or_path: {folder} has no weights -- no .safetensors file"


def test_perplexity_math_of_windows():
    """Windows score every token after the first exactly once, each with >= context - stride tokens before it."""
    from llm_recipes.evaluation.sliding_window import sliding_windows

    ids = list(range(23))
    windows = sliding_windows(ids, context_length=8, stride=3)
    scored = [token for w in windows for token in w.input_ids[len(w.input_ids) - w.targets :]]
    assert scored == ids[1:]
    assert all(len(w.input_ids) <= 8 for w in windows)
    assert all(len(w.input_ids) - w.targets >= 8 - 3 for w in windows[1:])
    assert [w.input_ids for w in sliding_windows(ids, 64, 32)] == [ids]  # one window covers it all
    with pytest.raises(UserError, match="stride: 8 must be >= 1 and below context_length"):
        sliding_windows(ids, 8, 8)
    assert math.isclose(len(scored), 22)
