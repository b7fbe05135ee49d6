"""What a stage prints when it ends: a short, aligned table of what it did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def format_summary(title: str, rows: Mapping[str, Any]) -> str:
    """A titled two-column table; rows without a value (None: e.g. no loss logged in a short run) are left out."""
    rows = {key: value for key, value in rows.items() if value is not None}
    width = max(len(key) for key in rows) if rows else 0
    lines = [title, "-" * max(len(title), 20)]
    lines += [f"{key:<{width}}  {format_number(value)}" for key, value in rows.items()]
    return "\n".join(lines)
