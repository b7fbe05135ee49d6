"""The serve stage's arguments: what is served (one model, or several versions with a traffic split), by which engine,
where, with which limits, and where feedback goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENGINES = ("transformers", "vllm")
SWITCHES = ("auto", "true", "false")
SERVE_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class ServeArguments:
    """An OpenAI-compatible API over stage outputs, with A/B versions, limits and a feedback store."""

    model: str | None = field(
        default=None,
        metadata={"help": "The stage output to serve (a full model, a LoRA/DoRA adapter or a quantized model)."},
    )
    versions: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Several versions at once instead of `model`: {name: folder} (YAML mapping or a JSON string). "
            "A request naming a version gets it; one naming model_name (or none) gets the traffic split."
        },
    )
    traffic: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Each version's share of the requests, e.g. {v1: 90, v2: 10} (normalized); default: even."},
    )
    model_name: str = field(
        default="llm-recipes",
        metadata={"help": "The model name clients ask for to be routed through the traffic split (/v1/models)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the traffic split's draws (reproducible assignment)."})
    engine: str = field(
        default="transformers",
        metadata={
            "help": "transformers: transformers' own serving (CPU and one GPU); vllm: a `vllm serve` server per "
            "model folder (CUDA), behind this API.",
            "choices": ENGINES,
        },
    )
    continuous_batching: str = field(
        default="auto",
        metadata={
            "help": "Batch concurrent requests with paged attention (transformers engine); auto: on with a GPU.",
            "choices": SWITCHES,
        },
    )
    start_timeout: float = field(
        default=1800.0,
        metadata={
            "help": "Seconds each `vllm serve` (engine: vllm) may take to load and answer before the start fails."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto (a GPU if there is one), cpu, cuda, cuda:1, ..."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype; auto: float32 on CPU, the saved dtype on a GPU.", "choices": SERVE_DTYPES},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    # where
    host: str = field(
        default="127.0.0.1", metadata={"help": "Address to listen on; 127.0.0.1 keeps the API on this machine."}
    )
    port: int = field(default=8000, metadata={"help": "Port to listen on; 0 picks a free one (printed)."})
    api_key_env: str | None = field(
        default=None,
        metadata={
            "help": "Environment variable holding the API key; requests must then send `Authorization: Bearer KEY`."
        },
    )
    # limits
    max_tokens: int = field(
        default=512,
        metadata={"help": "Most tokens an answer may have: more is refused (400); a request asking none gets this."},
    )
    max_request_bytes: int = field(
        default=1_000_000, metadata={"help": "Largest request body, in bytes; larger ones get 413."}
    )
    max_feedback_chars: int = field(
        default=20_000, metadata={"help": "Longest edit or comment a feedback may carry, in characters (413)."}
    )
    # feedback store
    db: str = field(
        default="sqlite:///feedback.db",
        metadata={"help": "The feedback store: a SQLAlchemy URL, sqlite:///FILE or postgresql://USER@HOST/DB."},
    )
    log_conversations: bool = field(
        default=False,
        metadata={"help": "Store every conversation; off: a conversation is stored only when feedback names it."},
    )
    remember_responses: int = field(
        default=10_000,
        metadata={"help": "Recent conversations kept in memory so feedback can store them (without logging)."},
    )
    retention_days: float | None = field(
        default=None, metadata={"help": "Delete responses (and their feedback) older than this; null keeps all."}
    )
    log_level: str = field(
        default="info",
        metadata={"help": "The server's log level.", "choices": ("critical", "error", "warning", "info", "debug")},
    )
