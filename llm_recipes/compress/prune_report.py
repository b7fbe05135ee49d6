"""What a prune run reports: compression_report.json (`PruneReport`), the run's summary (`PruneSummary`) and the
printed tables -- achieved sparsity per layer, and the source, pruned and recovered models on the protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_recipes.compress.config import PruneArguments
from llm_recipes.compress.prune import LayerSparsity, format_layer_sparsity, layer_sparsity, overall_sparsity
from llm_recipes.compress.quantize import format_extras
from llm_recipes.compress.report import comparison_summary, format_comparison
from llm_recipes.evaluation.protocol import Protocol, protocol_header

# the config fields that show what a structured pruning left
SHAPE_FIELDS = ("num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "hidden_size")


def describe(script_args: PruneArguments) -> str:
    """The pruning asked for, in words (the report's `method`)."""
    if script_args.method == "structured":
        parts = []
        if script_args.heads_to_prune:
            unit = "KV groups" if script_args.prune_kv_heads else "query heads in each KV group"
            parts.append(f"{script_args.heads_to_prune} heads/layer ({unit})")
        if script_args.mlp_channels_to_prune:
            parts.append(f"{script_args.mlp_channels_to_prune} MLP channels/layer")
        return "structured: " + ", ".join(parts)
    if script_args.sparsity_pattern != "unstructured":
        return f"{script_args.method} {script_args.sparsity_pattern}"
    group = "" if script_args.sparsity_group == "auto" else f" (compared per {script_args.sparsity_group})"
    return f"{script_args.method} {script_args.sparsity:.0%} unstructured{group}"


@dataclass
class PruneSummary:
    """The prune run's summary: printed, and written to the manifest (`as_summary`)."""

    source: str
    method: str
    seconds: float
    recovery_optimizer_steps: int | None = None  # with a recovery fine-tune
    sparsity_of_pruned_layers: float | None = None  # unstructured and N:M pruning
    config: str | None = None  # structured pruning: the shape left

    def as_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"source": self.source, "method": self.method}
        if self.recovery_optimizer_steps is not None:
            summary["recovery optimizer steps"] = self.recovery_optimizer_steps
        if self.sparsity_of_pruned_layers is not None:
            summary["sparsity of pruned layers"] = self.sparsity_of_pruned_layers
        if self.config is not None:
            summary["config"] = self.config
        summary["seconds"] = self.seconds
        return summary


@dataclass
class PruneReport:
    """compression_report.json of a prune run (`as_dict`)."""

    method: str
    structured: bool
    comparison: dict[str, Any]  # {"protocol", "source", "compressed"}: the final model against the source
    layer_sparsity: list[LayerSparsity]  # of the final model: pruned weights must still be zero after recovery
    config: dict[str, Any]  # the final model's shape (SHAPE_FIELDS)
    pruned_before_recovery: dict[str, Any] | None = None  # the pruned model on the protocol, before recovery
    recovery: dict[str, Any] | None = None  # what the recovery fine-tune did

    @property
    def before_recovery(self) -> tuple[str, dict[str, Any]] | None:
        """(label, measures) of the model measured between the source and the final one, if any."""
        return ("before recovery", self.pruned_before_recovery) if self.recovery is not None else None

    def as_dict(self) -> dict[str, Any]:
        report = {
            "stage": "prune",
            "method": self.method,
            "comparison": self.comparison,
            "layer_sparsity": [
                {"layer": r.name, "weights": r.total, "sparsity": r.sparsity} for r in self.layer_sparsity
            ],
            "config": self.config,
        }
        if self.recovery is not None:
            report["pruned_before_recovery"] = self.pruned_before_recovery
            report["recovery"] = self.recovery
        return report

    def protocol_measures(self) -> dict[str, str]:
        """The manifest's record of the comparison (source -> [before recovery ->] compressed)."""
        return comparison_summary(self.comparison, self.before_recovery)

    def summary(self, source: str, seconds: float) -> PruneSummary:
        return PruneSummary(
            source=source,
            method=self.method,
            seconds=round(seconds, 1),
            recovery_optimizer_steps=self.recovery["optimizer steps"] if self.recovery is not None else None,
            sparsity_of_pruned_layers=None if self.structured else round(overall_sparsity(self.layer_sparsity), 4),
            config=", ".join(f"{key} {value}" for key, value in self.config.items() if value)
            if self.structured
            else None,
        )

    def format(self) -> str:
        """The tables printed after the summary: sparsity per layer (unless structured), the protocol comparison
        with the share of zero weights, and what the recovery did."""
        sparsities = {side: self.comparison[side]["details"]["weight_sparsity"] for side in ("source", "compressed")}
        extras = {"zero weights (share)": (sparsities["source"], sparsities["compressed"])}
        blocks = [] if self.structured else [format_layer_sparsity(self.layer_sparsity)]
        blocks.append(format_comparison(self.comparison, f"{self.method} vs source", extras, self.before_recovery))
        if self.recovery is not None:
            blocks.append(format_extras({"recovery optimizer steps": self.recovery["optimizer steps"]}))
        return "\n".join(blocks)


def prune_report(
    script_args: PruneArguments,
    protocol: Protocol,
    measures: tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None],
    final: Any,
    recovery: dict[str, Any] | None,
) -> PruneReport:
    """The report on the final model; `measures` are the protocol's results for (the source, the pruned model, the
    recovered one -- None without recovery)."""
    source, pruned, recovered = measures
    return PruneReport(
        method=describe(script_args),
        structured=script_args.method == "structured",
        comparison={"protocol": protocol_header(protocol.spec), "source": source, "compressed": recovered or pruned},
        layer_sparsity=layer_sparsity(final),
        config={name: getattr(final.config, name, None) for name in SHAPE_FIELDS},
        pruned_before_recovery=pruned if recovery is not None else None,
        recovery=recovery,
    )
