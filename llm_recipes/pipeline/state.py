"""What a pipeline run remembers between invocations, so a rerun skips finished work and resumes the rest.

A stage counts as done when its manifest says complete and its fingerprint is the one recorded when it finished.
The fingerprint covers the stage's resolved config, its launch flags and the identity of every earlier output it
reads (that output's fingerprint and the time its manifest was written), so editing a stage reruns it and every
stage downstream of it, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_recipes.pipeline.plan import StagePlan
from llm_recipes.runs.manifest import input_marks, read_manifest, write_json_atomically

STATE_FILE = "state.json"


def _normalized(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def upstream_of(step: StagePlan, earlier: list[StagePlan]) -> list[StagePlan]:
    """The earlier stages whose output this stage's config names (chained by the pipeline or written by hand)."""
    named = set()
    for value in step.config.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                named.add(_normalized(item))
    return [before for before in earlier if before.output and _normalized(before.output) in named]


def output_mark(step: StagePlan, fingerprints: dict[str, str]) -> str:
    """What identifies a finished output: how it was made, and which writing of the folder it is."""
    manifest = read_manifest(step.output) if step.output and os.path.isdir(os.path.expanduser(step.output)) else None
    written = manifest.get("started_at") if manifest else None
    return f"{fingerprints.get(step.slot, step.output)}@{written}"


def fingerprint(step: StagePlan, upstream_marks: dict[str, str]) -> str:
    """Changes with the stage's config and launch, the outputs it reads, and the files it names (a data file, an
    evaluation protocol): editing any of them makes the stage run again."""
    files = {path: mark for path, mark in input_marks(step.config).items() if os.path.isfile(os.path.expanduser(path))}
    payload = {
        "stage": step.stage,
        "config": step.config,
        "launch": step.launch_args,
        "inputs": upstream_marks,
        "files": files,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class StageStatus:
    """Where a stage stands before this invocation runs it."""

    kind: str  # done | resume | changed | new
    reason: str


class PipelineState:
    """state.json in the pipeline's run folder: per stage, the fingerprint it ran with and whether it finished."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / STATE_FILE
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self.stages = json.loads(self.path.read_text(encoding="utf-8")).get("stages", {})

    def save(self) -> None:
        write_json_atomically(self.path, {"stages": self.stages})

    def status(self, step: StagePlan, stage_fingerprint: str) -> StageStatus:
        entry = self.stages.get(step.stage)
        manifest = read_manifest(step.output) if os.path.isdir(os.path.expanduser(step.output)) else None
        if entry is None:
            return StageStatus("new", "not run by this pipeline before")
        if entry["fingerprint"] != stage_fingerprint:
            return StageStatus("changed", "its config or an input changed since it last ran")
        finished = (
            entry.get("status") == "complete"
            and manifest is not None
            and manifest.get("complete")
            and manifest.get("started_at") == entry.get("manifest_started_at")
        )
        if finished:
            return StageStatus("done", "complete, config and inputs unchanged")
        return StageStatus("resume", "interrupted (or its output was replaced): continuing")

    def mark_started(self, step: StagePlan, stage_fingerprint: str) -> None:
        self.stages[step.stage] = {
            "fingerprint": stage_fingerprint,
            "status": "running",
            "output": step.output,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.save()

    def mark_complete(self, step: StagePlan, seconds: float) -> None:
        manifest = read_manifest(step.output) or {}
        entry = self.stages[step.stage]
        entry.update(status="complete", seconds=round(seconds, 1), manifest_started_at=manifest.get("started_at"))
        self.save()


def has_checkpoints(step: StagePlan) -> bool:
    output = Path(step.output).expanduser()
    return output.is_dir() and any(output.glob("checkpoint-*"))
