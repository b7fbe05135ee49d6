"""The serve stage: an OpenAI-compatible API over stage outputs, A/B versions, and a feedback store.

    config.py      ServeArguments: what is served, engine, address, limits, store
    checks.py      the config checked before any model loads (folders, chat templates, traffic, engine, db URL)
    engine.py      the engine behind the API: transformers' own serving, reading our stage outputs; or vllm
    upstream.py    engine: vllm's child servers (one `vllm serve` per weights folder) and the relay to them
    vllm_command.py  the `vllm serve` command for each served folder (LoRA modules, quantization, dtype)
    routing.py     which version answers: the one named, or a seeded draw from the traffic split
    app.py         our FastAPI app: chat completions (streaming too), models, feedback, health; the listening socket
    middleware.py  API key, request size limit, errors as JSON
    feedback.py    feedback bodies -> rows (rating, choice, edit, comment) or the 4xx saying what is wrong
    store.py       SQLAlchemy tables and the FeedbackStore (SQLite by default, PostgreSQL by URL), retention
    stats.py       per-version requests, tokens, latency and ratings since the server started
    metrics.py     Prometheus metrics at /metrics: requests, errors, TTFT, per-token latency, in flight, feedback
    page.py        the chat page at / (static/chat.html, .js, .css): streaming chat, thumbs, A/B choice, edits
    feedback_data.py  the store read back as KTO/DPO/SFT rows, PII redacted, with a report (feedback-to-data)

Its packages (FastAPI, uvicorn and openai's types through transformers[serving]; httpx; SQLAlchemy; psycopg;
prometheus_client) come with the `serve` extra. They are checked here, first, so a missing one is one line saying
what to install rather than an ImportError from whichever module happens to import it.
"""

from transformers.utils.import_utils import is_serve_available

from llm_recipes.errors import UserError

try:
    import sqlalchemy  # noqa: F401
except ImportError:
    is_sqlalchemy_available = False
else:
    is_sqlalchemy_available = True

try:
    import prometheus_client  # noqa: F401
except ImportError:
    is_prometheus_available = False
else:
    is_prometheus_available = True

try:
    import httpx  # noqa: F401
except ImportError:
    is_httpx_available = False
else:
    is_httpx_available = True

if not (is_serve_available() and is_sqlalchemy_available and is_prometheus_available and is_httpx_available):
    raise UserError("serve needs its packages: pip install 'llm-recipes[serve]'")
