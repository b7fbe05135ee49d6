"""Step checkpoints for dataset pipelines: an interrupted run resumes after its last finished step.

Each finished step is saved with `save_to_disk` under `<output_dir>.partial/NN-name/`, written to a temporary
folder and renamed, with a `step.json` naming the key it was made from. The key chains the previous step's key
with this step's spec, so changing a step (or the input) recomputes it and everything after it, never serving a
stale result. The finished dataset is assembled in the same folder and renamed onto `output_dir` at the very end,
so `output_dir` either holds a complete dataset or nothing new.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from glob import glob
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from llm_recipes.runs.manifest import write_json_atomically

STEP_INFO = "step.json"


def chain_key(previous: str, spec: Any) -> str:
    payload = json.dumps([previous, spec], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def files_fingerprint(paths: list[str]) -> list[tuple[str, int, int]]:
    """Path, size and modification time of each local input file: a changed file means a changed key."""
    found = []
    for pattern in paths:
        for path in sorted(glob(os.path.expanduser(pattern), recursive=True)) or [pattern]:
            candidates = [path]
            if os.path.isdir(path):
                candidates = sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
            for candidate in candidates:
                if os.path.isfile(candidate):
                    stat = os.stat(candidate)
                    found.append((os.path.abspath(candidate), stat.st_size, stat.st_mtime_ns))
    return found


class StepCheckpoints:
    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.root = self.output_dir.with_name(self.output_dir.name + ".partial")

    def _folder(self, index: int, name: str) -> Path:
        return self.root / f"{index:02d}-{name}"

    def load(self, index: int, name: str, key: str) -> tuple[Dataset, dict[str, Any]] | None:
        """The saved output of step `index`, if it was made from the same key."""
        folder = self._folder(index, name)
        info_path = folder / STEP_INFO
        if not info_path.is_file():
            return None
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("key") != key:
            return None
        return load_from_disk(str(folder / "data")), info["stats"]

    def save(self, index: int, name: str, key: str, ds: Dataset, stats: dict[str, Any]) -> Dataset:
        """Save a step's output and return it re-opened from disk (memory-mapped, no indices left to apply)."""
        self.discard_from(index)
        folder = self._folder(index, name)
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        ds.save_to_disk(str(staging / "data"))
        os.replace(staging, folder)
        write_json_atomically(folder / STEP_INFO, {"key": key, "stats": stats})
        return load_from_disk(str(folder / "data"))

    def discard_from(self, index: int) -> None:
        """Drop the checkpoints of step `index` and later: they were made from an input that no longer holds."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            prefix = folder.name.split("-", 1)[0]
            if prefix.isdigit() and int(prefix) >= index:
                shutil.rmtree(folder, ignore_errors=True)

    def staging_output(self) -> Path:
        """Where the finished dataset is assembled before `publish` renames it onto output_dir."""
        staging = self.root / "output"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def publish(self, keep_intermediate: bool = False) -> None:
        staging = self.root / "output"
        if self.output_dir.exists():
            # the old output moves aside first, so a crash between the two renames leaves one complete copy
            previous = self.root / "previous"
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(self.output_dir, previous)
            shutil.rmtree(previous, ignore_errors=True)
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, self.output_dir)
        if not keep_intermediate:
            shutil.rmtree(self.root, ignore_errors=True)
