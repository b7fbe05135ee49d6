"""Evaluating any model a stage wrote (base, SFT, RL, distilled, quantized, pruned) so each stage can be compared
with the one before it. One concern per module:

- `sliding_window`: sliding-window perplexity per token and bits per byte (`perplexity()`)
- `generation`: batched generation and BLEU / chrF / ROUGE / exact match (local `evaluate` modules in
  `llm_recipes.metrics`)
- `classification`: accuracy, precision, recall, F1 (macro and micro) for sequence and token classification
- `reward`: the reward model loaded, its scores, mean reward and win rate of one model over another
- `conversations`: prompt-only data (MT-bench `turns`, `prompt` alone, user-only `messages`) answered turn by turn
- `judges` (clients: `judge_clients`, the stage's step: `judging`): an LLM judge's 1-10 ratings and position-swapped
  pairwise verdicts (the MT-bench / AlpacaEval protocol, prompts in `judge_prompts/`), the win rate and its Wilson
  interval shared with the reward model
- `lm_eval_bridge`: lm-evaluation-harness tasks on a model folder
- `protocol` (spec: `protocol_spec`): the one evaluation protocol every model is measured on -- held-out corpus
  perplexity and bits per byte, task scores, reward, answers to fixed prompts, latency, size -- by one definition
  per measure, used by the evaluate stage, the compression reports and the pipeline table
- `footprint`: size on disk, latency per generated token, zero weights
- `plots`: training curves from a stage's trainer_state.json
- `tool_calls`: tool-calling accuracy -- one call parsed, the right tool, its argument names and values
- `report`: eval_results.json, the Markdown report, the comparison table, model-card results
- `data`, `loading`, `suite`, `config`: the evaluation data, model loading, the stage's steps and its arguments

Names are imported on first use, so `import llm_recipes.evaluation.config` (a recipe's parse path) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
    "classification": ["classification_metrics", "predict_sequence_labels", "predict_token_labels"],
    "conversations": ["Conversation", "answer_conversations", "units_of"],
    "data": ["ClassificationData", "EvalData", "load_classification_data", "load_eval_data"],
    "generation": ["build_generation_config", "generate_responses", "generation_metrics"],
    "judge_clients": ["LocalChatJudge", "OpenAIChatJudge", "judge_client"],
    "judges": [
        "Comparison",
        "JudgePrompts",
        "compare_scores",
        "grade_answers",
        "judge_pairs",
        "parse_score",
        "parse_verdict",
        "swapped_outcome",
        "wilson_interval",
    ],
    "judging": ["Judge", "add_judgments", "load_judge"],
    "lm_eval_bridge": ["run_lm_eval"],
    "loading": ["check_model_folder", "load_model", "load_tokenizer_for"],
    "sliding_window": ["PerplexityResult", "perplexity"],  # not perplexity.py: the module would shadow the function
    "plots": ["find_trainer_state", "plot_training_curves", "read_log_history"],
    "protocol": ["MEASURES", "Protocol", "ProtocolResult", "ProtocolSpec", "read_protocol"],
    "report": [
        "ModelResult",
        "comparison_rows",
        "eval_results_for_card",
        "load_eval_results",
        "markdown_report",
        "text_table",
        "write_eval_results",
        "write_markdown_report",
    ],
    "reward": ["RewardComparison", "compare_by_reward", "load_reward_model", "reward_scores", "win_rate"],
    "suite": ["evaluate_model", "run_evaluation"],
    "tool_calls": ["ToolCallScores", "evaluate_tool_calls", "read_tool_requests", "score_tool_calls"],
}
_WHERE = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'llm_recipes.evaluation' has no attribute '{name}'")
    return getattr(importlib.import_module(f"llm_recipes.evaluation.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
