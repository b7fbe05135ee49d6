"""Evaluating any model a stage wrote (base, SFT, RL, distilled, quantized, pruned) so each stage can be compared
with the one before it. One concern per module:

- `perplexity`: sliding-window perplexity per token and bits per byte
- `generation`: batched generation and BLEU / chrF / ROUGE / exact match (local `evaluate` modules in
  `llm_recipes.metrics`)
- `classification`: accuracy, precision, recall, F1 (macro and micro) for sequence and token classification
- `reward`: the reward model loaded, its scores, mean reward and win rate of one model over another
- `lm_eval_bridge`: lm-evaluation-harness tasks on a model folder
- `protocol` (spec: `protocol_spec`): the one evaluation protocol every model is measured on -- held-out corpus
  perplexity and bits per byte, task scores, reward, answers to fixed prompts, latency, size -- by one definition
  per measure, used by the evaluate stage, the compression reports and the pipeline table
- `footprint`: size on disk, latency per generated token, zero weights
- `plots`: training curves from a stage's trainer_state.json
- `report`: eval_results.json, the Markdown report, the comparison table, model-card results
- `data`, `loading`, `suite`, `config`: the evaluation data, model loading, the stage's steps and its arguments
"""

from __future__ import annotations

from llm_recipes.evaluation.classification import (
    classification_metrics,
    predict_sequence_labels,
    predict_token_labels,
)
from llm_recipes.evaluation.data import ClassificationData, EvalData, load_classification_data, load_eval_data
from llm_recipes.evaluation.generation import build_generation_config, generate_responses, generation_metrics
from llm_recipes.evaluation.lm_eval_bridge import run_lm_eval
from llm_recipes.evaluation.loading import check_model_folder, load_model, load_tokenizer_for
from llm_recipes.evaluation.perplexity import PerplexityResult, perplexity
from llm_recipes.evaluation.plots import find_trainer_state, plot_training_curves, read_log_history
from llm_recipes.evaluation.protocol import MEASURES, Protocol, ProtocolResult, ProtocolSpec, read_protocol
from llm_recipes.evaluation.report import (
    ModelResult,
    comparison_rows,
    eval_results_for_card,
    load_eval_results,
    markdown_report,
    text_table,
    write_eval_results,
    write_markdown_report,
)
from llm_recipes.evaluation.reward import (
    RewardComparison,
    compare_by_reward,
    load_reward_model,
    reward_scores,
    win_rate,
)
from llm_recipes.evaluation.suite import evaluate_model, run_evaluation

__all__ = [
    "MEASURES",
    "ClassificationData",
    "EvalData",
    "ModelResult",
    "PerplexityResult",
    "Protocol",
    "ProtocolResult",
    "ProtocolSpec",
    "RewardComparison",
    "build_generation_config",
    "check_model_folder",
    "classification_metrics",
    "compare_by_reward",
    "comparison_rows",
    "eval_results_for_card",
    "evaluate_model",
    "find_trainer_state",
    "generate_responses",
    "generation_metrics",
    "load_classification_data",
    "load_eval_data",
    "load_eval_results",
    "load_model",
    "load_reward_model",
    "load_tokenizer_for",
    "markdown_report",
    "perplexity",
    "plot_training_curves",
    "predict_sequence_labels",
    "predict_token_labels",
    "read_log_history",
    "read_protocol",
    "reward_scores",
    "run_evaluation",
    "run_lm_eval",
    "text_table",
    "win_rate",
    "write_eval_results",
    "write_markdown_report",
]
