"""Label sets of classification and tagging tasks: names <-> ids (saved in the model config as id2label/label2id,
which the pipelines read), checks of the data's labels against them, and class weights for imbalanced data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from llm_recipes.errors import UserError

OUTSIDE = "O"
TAG_PREFIXES = ("B", "I", "E", "S", "L", "U")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def infer_label_names(values: Iterable[Any], feature_names: Sequence[str] | None, field: str, tags: bool) -> list[str]:
    """The label set when the config names none: the dataset's ClassLabel names, else the distinct names in the
    data (sorted; tags: O first, then by entity type). Integer ids need names from somewhere: an error for tags
    (entity types come from the names), LABEL_<id> for classes (transformers' own default)."""
    if feature_names:
        return [str(name) for name in feature_names]
    distinct = set(values)
    if not distinct:
        raise UserError(f"{field}: the data has no labels")
    if all(_is_id(value) for value in distinct):
        if tags:
            raise UserError(
                f"{field}: tags are integer ids; set labels to their names in id order (e.g. [O, B-PER, I-PER])"
            )
        return [f"LABEL_{index}" for index in range(max(distinct) + 1)]
    if not all(isinstance(value, str) for value in distinct):
        kinds = sorted({type(value).__name__ for value in distinct})
        raise UserError(f"{field}: labels must be names or integer ids, found {', '.join(kinds)}")
    if tags:
        return sorted(distinct, key=_tag_order)
    return sorted(distinct)


def _tag_order(tag: str) -> tuple:
    if tag == OUTSIDE:
        return (0, "", 0)
    prefix, _, entity_type = tag.partition("-")
    if prefix in TAG_PREFIXES and entity_type:
        return (1, entity_type, TAG_PREFIXES.index(prefix))
    return (1, tag, -1)


def label_to_id(names: Sequence[str]) -> dict[str, int]:
    return {name: index for index, name in enumerate(names)}


def to_label_id(value: Any, names: Sequence[str], lookup: dict[str, int], field: str, where: str = "") -> int:
    """A name or an id from the data as an id of `names`; anything else is a UserError naming the field."""
    if _is_id(value):
        if not 0 <= value < len(names):
            raise UserError(f"{field}: label id {value}{where} is out of range for {len(names)} labels")
        return value
    if isinstance(value, str) and value in lookup:
        return lookup[value]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise UserError(f"{field}: label {value!r}{where} is not one of the labels ({shown}); add it to labels")


def check_label_values(values: Iterable[Any], names: Sequence[str], field: str) -> None:
    lookup = label_to_id(names)
    for index, value in enumerate(values):
        to_label_id(value, names, lookup, field, f" (row {index})")


def continuation_ids(names: Sequence[str]) -> list[int]:
    """For each tag id, the tag a word's later sub-word tokens get when all tokens are labelled: B-X -> I-X (when
    I-X is a label, as transformers' run_ner does), every other tag itself."""
    lookup = label_to_id(names)
    continued = []
    for index, name in enumerate(names):
        prefix, dash, entity_type = name.partition("-")
        inside = f"I-{entity_type}"
        continued.append(lookup[inside] if dash and prefix == "B" and inside in lookup else index)
    return continued


def class_weights(spec: Any, names: Sequence[str], label_ids: Iterable[int]) -> list[float] | None:
    """Loss weights per label id from `class_weights`: "balanced" (n_rows / (n_labels * count), scikit-learn's
    formula, from the training labels), a list in label order, or a mapping name -> weight (others 1.0)."""
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)) and len(spec) == 1 and str(spec[0]) == "balanced":
        spec = "balanced"
    if spec == "balanced":
        counts = Counter(label_ids)
        total = sum(counts.values())
        return [total / (len(names) * counts[index]) if counts[index] else 1.0 for index in range(len(names))]
    if isinstance(spec, dict):
        unknown = [key for key in spec if str(key) not in names]
        if unknown:
            raise UserError(f"class_weights: {unknown[0]!r} is not one of the labels ({', '.join(names)})")
        weights = [_weight(spec.get(name, 1.0)) for name in names]
    elif isinstance(spec, (list, tuple)):
        if len(spec) != len(names):
            raise UserError(f"class_weights: {len(spec)} weights for {len(names)} labels ({', '.join(names)})")
        weights = [_weight(value) for value in spec]
    else:
        raise UserError(f"class_weights: expected balanced, a list of weights or a mapping label: weight, got {spec!r}")
    return weights


def _weight(value: Any) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise UserError(f"class_weights: {value!r} is not a number") from None
    if weight < 0:
        raise UserError(f"class_weights: {weight} must be >= 0")
    return weight
