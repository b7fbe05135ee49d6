"""Tool-calling accuracy of a model trained by configs/demo/sft_tools.yaml, on held-out requests.

The requests (configs/demo/data/heldout/tool_requests.jsonl, llm_recipes.data.tool_demo): a phrasing never paired
with its city or currency pair in training, amounts drawn afresh. Each is answered greedily with both tools'
schemas in the prompt; llm_recipes.evaluation.tool_calls scores the replies at four nested levels -- one call in
the template's form parsed, the right tool, the right argument names, the exact argument values -- for all requests
and per tool, and prints a few replies that missed.

    llm-recipes sft --config configs/demo/sft_tools.yaml        # after the demo's pretrain stage
    .venv/bin/python benchmarks/tool_calling.py                  # --model outputs/demo/sft_tools
    .venv/bin/python benchmarks/tool_calling.py --model outputs/demo/pretrain   # the untrained baseline: 0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import llm_recipes  # noqa: E402,F401  (first: it quiets bitsandbytes' import-time warning)

# isort: split
from llm_recipes.evaluation.loading import load_model, load_tokenizer_for  # noqa: E402
from llm_recipes.evaluation.tool_calls import (  # noqa: E402
    RATES,
    evaluate_tool_calls,
    read_tool_requests,
    score_tool_calls,
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(PROJECT / "outputs/demo/sft_tools"))
    parser.add_argument("--requests", default=str(PROJECT / "configs/demo/data/heldout/tool_requests.jsonl"))
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--show-misses", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = parse()
    rows = read_tool_requests(args.requests)
    model, tokenizer = load_model(args.model, device="cpu"), load_tokenizer_for(args.model)
    scores, replies = evaluate_tool_calls(
        model, tokenizer, rows, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
    )
    print(f"model {args.model}, {len(rows)} held-out requests ({args.requests})")
    print(f"{'requests':<24}" + "".join(f"{name:>17}" for name in RATES))
    groups = {"all": list(range(len(rows)))}
    for index, row in enumerate(rows):
        groups.setdefault(row["expected"]["name"], []).append(index)
    for group, indices in groups.items():
        part = score_tool_calls([replies[i] for i in indices], [rows[i]["expected"] for i in indices])
        cells = "".join(f"{part.counts[name]:>7}/{part.total:<3} {rate:.3f}" for name, rate in part.rates().items())
        print(f"{group + f' ({len(indices)})':<24}{cells}")
    for level, reply in scores.misses[: args.show_misses]:
        print(f"missed at {level!r}: {reply[:200]!r}")


if __name__ == "__main__":
    main()
