"""The evaluate stage's arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs.options import OutputOptions
from llm_recipes.configs.parsing import DATA_FORMATS, RANGE_CHECKS

EVAL_METRICS = (
    "perplexity",
    "generation",
    "bleu",
    "chrf",
    "rouge",
    "exact_match",
    "reward",
    "judge",
    "classification",
)
JUDGE_MODES = ("single", "pairwise")


@dataclass
class EvaluateArguments(OutputOptions):
    """Evaluate one model, or compare several stages' models (base, SFT, RL, distilled, quantized, pruned) on the
    same data: perplexity, generation metrics, reward, classification, lm-evaluation-harness tasks, curves."""

    models: list[str] | None = field(
        default=None,
        metadata={
            "help": "Model folders (or Hub ids) to compare on the same data, one row each; the first is the "
            "baseline of the win rate. PEFT adapter folders load on their base model."
        },
    )
    model_name_or_path: str | None = field(default=None, metadata={"help": "One model to evaluate (or use models)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Use this tokenizer for every model instead of each model's own."}
    )
    output_dir: str = field(
        default="outputs/evaluate", metadata={"help": "Where eval_results.json, eval_report.md and plots go."}
    )
    protocol: str | None = field(
        default=None,
        metadata={
            "help": "The evaluation protocol YAML (configs/demo/protocol.yaml): every model measured on its held-out "
            "corpus, tasks, reward model, fixed prompts, latency and size, by one definition each -- the measures "
            "the compression stages and the pipeline table use. The fields below add other metrics beside them."
        },
    )
    # data
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Evaluation data: plain text (perplexity), prompts with answers in any SFT format (perplexity "
            "of the whole rows, generation metrics against the answers), prompts without answers (MT-bench `turns`, "
            "`prompt` alone, user-only `messages`: answered, then judged by reward_model / judge_model), or "
            "labelled data for a classifier."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it from the columns.", "choices": DATA_FORMATS},
    )
    text_field: str = field(
        default="text", metadata={"help": "Column holding plain text (or a classifier's input text / words)."}
    )
    label_field: str | None = field(
        default=None, metadata={"help": "Classification: the label column (a label, or a list of token labels)."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path`."})
    max_eval_samples: int | None = field(
        default=200, metadata={"help": "Use at most this many rows (the first) of each dataset; null for all."}
    )
    perplexity_dataset_path: str | None = field(
        default=None, metadata={"help": "Score perplexity on this (text) dataset instead of dataset_path."}
    )
    perplexity_dataset_split: str = field(default="train", metadata={"help": "Split of perplexity_dataset_path."})
    # what to measure
    metrics: list[str] | None = field(
        default=None,
        metadata={
            "help": "What to compute (default: all that the data and models allow): perplexity; generation (= bleu, "
            "chrf, rouge, exact_match) or any of those; reward (needs reward_model); judge (needs judge_model); "
            "classification.",
            "choices": EVAL_METRICS,
        },
    )
    context_length: int | None = field(
        default=None,
        metadata={"help": "Perplexity window in tokens (default: the model's maximum positions, at most 2048)."},
    )
    stride: int | None = field(
        default=None, metadata={"help": "Tokens the perplexity window moves by (default: half the window)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Windows, prompts or texts per forward pass."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest generated answer, in tokens."})
    generation_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "GenerationConfig fields on top of the model's own (YAML mapping or JSON), e.g. {do_sample: "
            "true, temperature: 0.7}. Greedy by default."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={"help": "A reward model folder: mean reward of each model's answers and win rate vs the first."},
    )
    # LLM judge (MT-bench / AlpacaEval protocol; llm_recipes.evaluation.judges)
    judge_model: str | None = field(
        default=None,
        metadata={
            "help": "An LLM judge of the answers: a local chat model folder, or the URL of an OpenAI-compatible "
            "server (vLLM, llama.cpp, the OpenAI API: http://127.0.0.1:8000). It rates each answer 1-10 and "
            "compares each model with the first in both orders."
        },
    )
    judge_api_model: str | None = field(
        default=None,
        metadata={"help": "The model name sent to a judge server (default: the first it lists at /v1/models)."},
    )
    judge_api_key_env: str | None = field(
        default=None,
        metadata={
            "help": "Name of the environment variable holding the judge server's API key (e.g. OPENAI_API_KEY); "
            "the key is sent as a Bearer token and written nowhere."
        },
    )
    judge_modes: list[str] = field(
        default_factory=lambda: list(JUDGE_MODES),
        metadata={
            "help": "single: a 1-10 rating of every answer; pairwise: each model against the first, each pair "
            "judged in both orders (needs two models or more).",
            "choices": JUDGE_MODES,
        },
    )
    judge_prompts: str | None = field(
        default=None,
        metadata={
            "help": "A folder of your own judge prompts replacing the shipped ones by name: single.txt, "
            "single_multi_turn.txt, pairwise.txt, pairwise_multi_turn.txt (llm_recipes/evaluation/judge_prompts)."
        },
    )
    judge_max_new_tokens: int = field(default=512, metadata={"help": "Longest judge output, in tokens."})
    judge_max_unparsed: int = field(
        default=0,
        metadata={
            "help": "Judge outputs without a verdict ([[7]], [[A]]) allowed before the run stops with an error; "
            "those answers are left out of the scores and counted as unparsed. 0: the first one stops it."
        },
    )
    judge_timeout: float = field(default=120.0, metadata={"help": "Seconds to wait for a judge server's answer."})
    num_samples: int = field(default=5, metadata={"help": "Prompts with generations shown in the report."})
    plot_training_curves: bool = field(
        default=True, metadata={"help": "Plot loss, learning rate, reward and KL of models that have a trainer state."}
    )
    # lm-evaluation-harness
    lm_eval_tasks: list[str] | None = field(
        default=None,
        metadata={"help": "lm-evaluation-harness tasks to run on every model (needs `pip install lm-eval`)."},
    )
    lm_eval_include_path: str | None = field(default=None, metadata={"help": "A folder of your own task YAML files."})
    lm_eval_limit: float | None = field(
        default=None, metadata={"help": "Examples per lm-eval task: a count, or a share below 1."}
    )
    lm_eval_num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples per lm-eval prompt."})
    # runtime
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (default: cuda if available)."})
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype (default: float32 on CPU, the saved dtype on GPU).",
            "choices": ("auto", "float32", "bfloat16", "float16"),
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    seed: int = field(default=42, metadata={"help": "Seed for sampled generation."})


RANGE_CHECKS["context_length"] = (lambda v: v is None or v >= 2, "must be >= 2")
RANGE_CHECKS["batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["stride"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["judge_max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["judge_max_unparsed"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["judge_timeout"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["num_samples"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["lm_eval_limit"] = (lambda v: v is None or v > 0, "must be > 0 (a count, or a share below 1)")
RANGE_CHECKS["lm_eval_num_fewshot"] = (lambda v: v is None or v >= 0, "must be >= 0")
