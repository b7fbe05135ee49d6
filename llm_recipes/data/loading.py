"""From the datasets a config names to a train/eval pair in TRL's standard columns, with a report per source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.formats import FormatReport, naming_dataset, to_standard_columns
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.mixture import hold_out, mix_datasets
from llm_recipes.data.tools import with_tool_columns
from llm_recipes.errors import UserError


@dataclass
class TrainingData:
    train: Dataset
    eval: Dataset | None
    reports: list[tuple[str, FormatReport]] = field(default_factory=list)

    @property
    def shape(self) -> str:
        """Which TRL standard shape the data has: messages, prompt_completion or text."""
        return standard_shape(self.train.column_names)


def standard_shape(columns: Sequence[str]) -> str:
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    return "text"


def load_standard(spec: DatasetSpec, num_proc: int | None = None) -> tuple[Dataset, FormatReport]:
    dataset = load_dataset_source(spec.path, split=spec.split, name=spec.name)
    if len(dataset) == 0:
        raise UserError(f"dataset '{spec.path}' is empty")
    with naming_dataset(spec.path):
        return to_standard_columns(dataset, spec.format, text_field=spec.text_field, num_proc=num_proc)


def load_training_data(
    specs: Sequence[DatasetSpec],
    *,
    eval_spec: DatasetSpec | None = None,
    eval_size: float = 0.0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    num_proc: int | None = None,
) -> TrainingData:
    """Load every dataset, convert it to standard columns, mix by weight and hold out an eval split.

    All sources of a mixture must land on the same standard shape (you cannot mix plain text with chats).
    """
    reports = []
    parts = []
    for spec in specs:
        dataset, report = load_standard(spec, num_proc)
        if len(dataset) == 0:
            raise UserError(f"dataset '{spec.path}': no usable rows after conversion ({report.dropped})")
        reports.append((spec.path, report))
        parts.append((dataset, spec.weight))
    shapes = {standard_shape(d.column_names) for d, _ in parts}
    if len(shapes) > 1:
        raise UserError(f"a mixture must share one shape, but these datasets become {', '.join(sorted(shapes))}")
    if any("tools" in d.column_names for d, _ in parts):  # plain chats mixed with tool calls take the tool shape
        parts = [(with_tool_columns(d), w) for d, w in parts]
    # messages from different sources may differ in Arrow schema details; concatenation needs them identical
    first_features = parts[0][0].features
    parts = [(d.cast(first_features) if d.features != first_features else d, w) for d, w in parts]
    train = mix_datasets(parts, seed=seed)

    eval_dataset = None
    if eval_spec is not None:
        eval_dataset, report = load_standard(eval_spec, num_proc)
        reports.append((eval_spec.path, report))
        if standard_shape(eval_dataset.column_names) != standard_shape(train.column_names):
            raise UserError(f"eval dataset '{eval_spec.path}' has a different shape from the training data")
    elif eval_size:
        train, eval_dataset = hold_out(train, eval_size, seed=seed)

    if max_train_samples is not None:
        train = train.select(range(min(max_train_samples, len(train))))
    if eval_dataset is not None and max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(max_eval_samples, len(eval_dataset))))
    return TrainingData(train=train, eval=eval_dataset, reports=reports)
