"""Serve stage outputs over an OpenAI-compatible API, with A/B versions and a feedback store.

    llm-recipes serve --model outputs/demo/export [--port 8000] [--db sqlite:///feedback.db]
    llm-recipes serve --config configs/demo/serve.yaml
    python recipes/serve.py --config configs/demo/serve.yaml

Serves any model a stage wrote (a full model, a LoRA/DoRA adapter, a quantized model) at /v1/chat/completions
(streaming too) and /v1/models, through the model's chat template and generation config, on transformers' own
serving code or on vLLM (`engine: vllm`: a `vllm serve` per model folder behind this API). Several versions can run
at once with a traffic split (`versions: {v1: ..., v2: ...}`, `traffic: {v1: 90, v2: 10}`); every answer carries
its OpenAI `id` and the version that produced it. POST /v1/feedback rates an answer (up/down), picks one of two,
edits it or comments on it; feedback is committed to the database (SQLite, or PostgreSQL by URL) before the server
says 2xx. Listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.serving.app import ServingState, bind, build_app, serve_until_stopped, url_of
from llm_recipes.serving.checks import check_serve_arguments, served_versions, traffic_shares
from llm_recipes.serving.config import ServeArguments
from llm_recipes.serving.engine import make_engine
from llm_recipes.serving.store import database_url


def parse_args(argv: Sequence[str] | None = None) -> tuple[ServeArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    (args,) = parse_config((ServeArguments,), argv)
    check_serve_arguments(args)
    return (args,)


def main(args: ServeArguments) -> dict:
    versions = served_versions(args)
    shares = traffic_shares(args.traffic, versions)
    sock = bind(args.host, args.port)  # a port in use fails now, before minutes of loading

    # The store's tables are created if missing; then the models load, each in a process of its own
    state = ServingState(args, versions, shares, make_engine(args, versions))
    state.engine.start()
    app = build_app(state)

    split = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    store = database_url(args.db).render_as_string(hide_password=True)
    print(f"serving {args.model_name} ({split}) at {url_of(sock)}/v1 -- feedback store {store}", flush=True)
    print(f"chat page: {url_of(sock)}/", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not state.api_key:
        print(f"warning: listening on {args.host} without an API key (set api_key_env)", flush=True)
    serve_until_stopped(app, sock, args.log_level)  # until Ctrl+C or SIGTERM; the app stops the engine
    return {"versions": versions, "traffic": shares, "stats": state.stats.snapshot()}


if __name__ == "__main__":
    run_recipe(main, parse_args)
