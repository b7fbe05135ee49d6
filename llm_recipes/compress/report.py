"""How a compressed model (distilled, quantized, pruned) compares with the model it came from, on the evaluation
protocol (`llm_recipes.evaluation.protocol`): the same measures, by the same definitions, as the evaluate stage and
the pipeline table, for both models in the same run -- so "perplexity" or "latency" in a compression report is the
figure the evaluate stage would print for that model.

A stage's `protocol:` field names the protocol YAML. Without one, the stage's own report fields describe a small
protocol in the same terms (`protocol_from_fields`: its eval data as the corpus, exact match and the reward model on
its prompts, its latency settings), so the names and definitions stay the protocol's and the report says which
data they were measured on.

compression_report.json:

    {"stage": ..., "method": ...,
     "comparison": {"protocol": {"source", "fingerprint", "measures", "definitions", "spec"},
                    "source": <ProtocolResult>, "compressed": <ProtocolResult>},
     ... stage extras (layer sparsity, logit difference, recovery ...)}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llm_recipes.errors import UserError
from llm_recipes.evaluation.footprint import (  # noqa: F401  (the compression stages' names for them)
    LATENCY_PROMPT,
    in_memory_bytes,
    safetensors_bytes,
    size_on_disk,
    weight_sparsity,
)
from llm_recipes.evaluation.loading import load_model
from llm_recipes.evaluation.protocol import (
    CorpusSpec,
    LatencySpec,
    Protocol,
    ProtocolSpec,
    RewardModelSpec,
    TaskSpec,
    format_measure,
    measure_title,
    protocol_header,
    read_protocol,
)
from llm_recipes.evaluation.report import text_table
from llm_recipes.runs.summary import format_number

# the file each compression stage writes in its output folder (the layout above); the pipeline table reads it
COMPRESSION_REPORT = "compression_report.json"
# the report fields a protocol replaces: set with `protocol`, they would say a second thing about the same figures
REPORT_DATA_FIELDS = ("eval_dataset_path", "reward_model_path", "eval_accuracy")


def protocol_from_fields(args: Any) -> ProtocolSpec:
    """The protocol of a quantize or prune config (`CompressionEvalArguments`): the `protocol` file, or the report
    fields as a protocol -- eval_dataset_path's texts as the corpus; with eval_accuracy or reward_model_path, an
    exact-match task 'eval' on its prompts, scored by the reward model."""
    if args.protocol:
        given = [name for name in REPORT_DATA_FIELDS if getattr(args, name)]
        if given:
            raise UserError(f"set protocol or {given[0]}, not both: the protocol file names the report's data")
        return read_protocol(args.protocol)
    if (args.eval_accuracy or args.reward_model_path) and not args.eval_dataset_path:
        raise UserError("reward_model_path and eval_accuracy answer the eval prompts: set eval_dataset_path")
    spec = ProtocolSpec(
        latency=LatencySpec(max_new_tokens=args.latency_new_tokens, repeats=args.latency_repeats),
        max_new_tokens=args.max_new_tokens,
        device="cpu",  # the report's promise: latency on the CPU, where a smaller model pays off most visibly
    )
    if args.eval_dataset_path:
        spec.corpus = CorpusSpec(
            path=args.eval_dataset_path,
            split=args.eval_dataset_split,
            data_format=args.data_format,
            text_field=args.text_field,
            max_texts=args.max_eval_samples,
        )
        if args.eval_accuracy or args.reward_model_path:
            task = TaskSpec(
                name="eval",
                kind="exact_match",
                path=args.eval_dataset_path,
                split=args.eval_dataset_split,
                data_format=args.data_format,
                max_rows=args.max_eval_samples,
            )
            spec.tasks = [task]
    if args.reward_model_path:
        spec.reward_model = RewardModelSpec(path=args.reward_model_path, task="eval")
    return spec


def compare_on_protocol(
    protocol: Protocol,
    source: Any,
    compressed: Any,
    tokenizer: Any,
    *,
    source_dir: str | os.PathLike[str] | None,
    compressed_dir: str | os.PathLike[str] | None,
    source_name: str | None = None,
    compressed_name: str | None = None,
    compressed_cannot_run: str | None = None,
) -> dict[str, Any]:
    """{"protocol": header, "source": result, "compressed": result}: both models measured on the protocol, in
    this run (latency side by side). Models are measured where they are; `*_dir` are their folders (size on disk)."""

    def name(given: str | None, folder: Any) -> str | None:
        return given or (os.fspath(folder) if folder is not None else None)

    return {
        "protocol": protocol_header(protocol.spec),
        "source": protocol.measure(
            source, tokenizer, model_dir=source_dir, name=name(source_name, source_dir)
        ).as_dict(),
        "compressed": protocol.measure(
            compressed,
            tokenizer,
            model_dir=compressed_dir,
            name=name(compressed_name, compressed_dir),
            cannot_run=compressed_cannot_run,
        ).as_dict(),
    }


def _as_model(model_or_path: Any, device: str) -> tuple[Any, str | None]:
    """(model, its folder): a path is loaded on `device`; a model is used as is."""
    if isinstance(model_or_path, str | os.PathLike):
        path = os.fspath(model_or_path)
        folder = path if os.path.isdir(os.path.expanduser(path)) else None  # a Hub id has no folder to measure
        return load_model(path, device=device), folder
    return model_or_path, None


def compare_models(
    source: Any,
    compressed: Any,
    tokenizer: Any,
    eval_texts: Sequence[str],
    *,
    source_dir: str | os.PathLike[str] | None = None,
    compressed_dir: str | os.PathLike[str] | None = None,
    max_new_tokens: int = 16,
    repeats: int = 3,
    context_length: int | None = None,
    protocol: ProtocolSpec | None = None,
) -> dict[str, Any]:
    """`compare_on_protocol` for Python users: models or saved folders (a folder loads on the CPU and is where its
    size is measured), on `protocol` or, without one, on a protocol of `eval_texts` as the corpus (windows of
    `context_length` tokens; pass the length the compressed model was trained on) and these latency settings."""
    if protocol is None:
        protocol = ProtocolSpec(
            corpus=CorpusSpec(texts=list(eval_texts), label=f"{len(eval_texts)} eval texts", max_texts=None)
            if eval_texts
            else None,
            latency=LatencySpec(max_new_tokens=max_new_tokens, repeats=repeats),
            device="cpu",
        )
        if protocol.corpus is not None:
            protocol.corpus.context_length = context_length
    device = protocol.device or "cpu"
    source_model, source_path = _as_model(source, device)
    compressed_model, compressed_path = _as_model(compressed, device)
    return compare_on_protocol(
        Protocol(protocol),
        source_model,
        compressed_model,
        tokenizer,
        source_dir=source_dir if source_dir is not None else source_path,
        compressed_dir=compressed_dir if compressed_dir is not None else compressed_path,
    )


def comparison_summary(comparison: dict[str, Any], between: tuple[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """The manifest's record of the comparison: {"models": "source -> compressed", <measure>: "a -> b", ...}
    (`between`: (label, result) of a model measured between the two, e.g. a pruned model before recovery)."""
    sides = [comparison["source"], *([between[1]] if between else []), comparison["compressed"]]
    labels = " -> ".join(["source", *([between[0]] if between else []), "compressed"])
    measures = {
        name: " -> ".join(format_measure(name, side["measures"].get(name)) for side in sides)
        for name in comparison["protocol"]["measures"]
    }
    return {"models": labels, **measures}


def _ratio(compressed: Any, source: Any) -> str:
    if not isinstance(compressed, int | float) or not isinstance(source, int | float) or not source:
        return "-"
    return f"{compressed / source:.3g}x"


def format_comparison(
    comparison: dict[str, Any],
    title: str,
    extras: dict[str, tuple[Any, Any]] | None = None,
    between: tuple[str, dict[str, Any]] | None = None,
) -> str:
    """The comparison as an aligned table (measure, source, [between,] compressed, compressed/source),
    stage-specific rows (`extras`: label -> (source, compressed)) after the protocol's, then each measure's
    definition once. `between` is (label, result) of a model measured between the two (pruned, before recovery)."""

    header = comparison["protocol"]
    source, compressed = comparison["source"], comparison["compressed"]
    middle = [between[1]] if between else []
    rows = []
    for name in header["measures"]:
        before, after = source["measures"].get(name), compressed["measures"].get(name)
        cells = [format_measure(name, side["measures"].get(name)) for side in (source, *middle, compressed)]
        rows.append([measure_title(name), *cells, _ratio(after, before)])
    for label, (before, after) in (extras or {}).items():
        rows.append([label, format_number(before), *(["-"] if middle else []), format_number(after), "-"])
    columns = ["", "source", *([between[0]] if between else []), "compressed", "compressed/source"]
    lines = [title, "=" * max(len(title), 20), text_table(columns, rows)]
    named = [("source", source), *([between] if between else []), ("compressed", compressed)]
    devices = {entry["details"].get("latency_device") for _, entry in named} - {None}
    if devices:
        lines.append(f"latency measured on {', '.join(sorted(devices))}")
    for side, entry in named:
        lines += [f"{side}: {note}" for note in entry["details"].get("notes", [])]
    where = f" ({header['source']})" if header.get("source") else ""
    lines.append(f"protocol{where}:")
    lines += [f"  {measure_title(name)}: {text}" for name, text in header["definitions"].items()]
    return "\n".join(lines)
