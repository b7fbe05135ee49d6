"""The small manifest every stage leaves in its output folder: what it read, its resolved config, its metrics,
the library versions and the time taken. The pipeline recipe reads it to chain and resume stages."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_NAME = "llm_recipes_manifest.json"
LIBRARIES = ("llm-recipes", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")
SECRET_FIELDS = {"hub_token", "token", "push_to_hub_token", "hf_token"}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def config_as_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data, with secrets removed (also inside mappings such as
    `model_init_kwargs`)."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    for key in raw:
        if key.endswith("_token") and hasattr(config, key):
            # transformers' to_dict masks every *_token field (SFTConfig's eos_token too, set or not): the manifest
            # records the real values and masks the secrets only, when they are set
            raw[key] = getattr(config, key)
    return _redacted(json.loads(json.dumps(raw, default=str)))


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: ("<redacted>" if item else None) if key in SECRET_FIELDS else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


def write_json_atomically(path: str | Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
    os.replace(tmp, path)


class StageRun:
    """Times a stage and writes its manifest when it completes."""

    def __init__(self, stage: str, output_dir: str | Path):
        self.stage = stage
        self.output_dir = Path(output_dir)
        self.started = time.time()
        self.inputs: dict[str, Any] = {}

    @property
    def seconds(self) -> float:
        return time.time() - self.started

    def write(self, configs: dict[str, Any], metrics: dict[str, Any]) -> Path:
        manifest = {
            "stage": self.stage,
            "complete": True,
            "inputs": self.inputs,
            "config": {name: config_as_dict(config) for name, config in configs.items()},
            "metrics": metrics,
            "versions": library_versions(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "seconds": round(self.seconds, 2),
        }
        path = self.output_dir / MANIFEST_NAME
        write_json_atomically(path, manifest)
        return path


def read_manifest(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
