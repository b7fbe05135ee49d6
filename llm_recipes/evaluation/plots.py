"""Training curves of any trainer stage: loss and eval loss, learning rate, reward and KL, as PNG files.

They are read from the `trainer_state.json` a `transformers.Trainer` writes (at the top of the output folder when
the stage calls `trainer.save_state()`, and in every `checkpoint-*` folder), so SFT, pretraining, reward modelling
and the RL stages all plot the same way. Figures are drawn on matplotlib's Agg canvas without pyplot: no display
is needed and no global backend state is touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from llm_recipes.errors import UserError

TRAINER_STATE = "trainer_state.json"
# figure name -> which log keys it draws
CURVES: dict[str, Callable[[str], bool]] = {
    "loss": lambda key: key in ("loss", "eval_loss", "train_loss"),
    "learning_rate": lambda key: key == "learning_rate",
    # TRL names rewards rewards/chosen, rewards/margins, objective/scores, env/reward_mean, ...
    # ... and our PPO logs score / eval_score (the reward before the KL penalty)
    "reward": lambda key: bool(re.search(r"reward|objective/scores|^(eval_)?score$", key)) and "accurac" not in key,
    "kl": lambda key: bool(re.search(r"(^|[/_])kl($|[/_])", key)),
}
SKIPPED_KEYS = ("step", "epoch", "total_flos")


def find_trainer_state(run_dir: str | Path) -> Path | None:
    """`trainer_state.json` of a stage's output: at its top, else in its latest `checkpoint-N` folder."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name.endswith(".json"):
        return run_dir
    if (run_dir / TRAINER_STATE).is_file():
        return run_dir / TRAINER_STATE
    checkpoints = [
        (int(match.group(1)), folder)
        for folder in run_dir.glob("checkpoint-*")
        if (match := re.fullmatch(r"checkpoint-(\d+)", folder.name)) and (folder / TRAINER_STATE).is_file()
    ]
    return max(checkpoints)[1] / TRAINER_STATE if checkpoints else None


def read_log_history(source: str | Path) -> list[dict[str, Any]]:
    """The Trainer's log history from a run folder or a trainer_state.json path ([] when there is none)."""
    path = find_trainer_state(source)
    if path is None:
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON") from None


def curve_series(log_history: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """figure -> log key -> (steps, values), for every figure with at least one numeric value."""
    figures: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if key in SKIPPED_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            for figure, wanted in CURVES.items():
                if wanted(key):
                    steps, values = figures.setdefault(figure, {}).setdefault(key, ([], []))
                    steps.append(step)
                    values.append(float(value))
    return figures


def plot_training_curves(source: str | Path, output_dir: str | Path, *, title: str | None = None) -> list[Path]:
    """Write loss.png, learning_rate.png, reward.png and kl.png (those the run logged) to `output_dir`."""
    figures = curve_series(read_log_history(source))
    output_dir = Path(output_dir)
    written = []
    for name, series in figures.items():
        figure = Figure(figsize=(6, 3.5), dpi=100)
        axes = figure.add_subplot()
        for key, (steps, values) in sorted(series.items()):
            axes.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=key)
        axes.set_xlabel("step")
        axes.set_ylabel(name.replace("_", " "))
        axes.set_title(f"{title}: {name.replace('_', ' ')}" if title else name.replace("_", " "))
        axes.grid(alpha=0.3)
        if name == "learning_rate":
            axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        axes.legend(fontsize=8)
        figure.tight_layout()
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / f"{name}.png"
        figure.savefig(path)
        written.append(path)
    return written
