"""The serve stage's config checks, before any model loads: what is served (one model or named versions, each a
folder with weights and a chat template), the traffic split, the engine, the address, the limits, the API key and
the feedback store's URL; with `engine: vllm`, what vLLM cannot serve. Reads JSON files only (no torch)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from llm_recipes.configs import check_model_path, looks_local, mapping_field
from llm_recipes.errors import UserError, did_you_mean
from llm_recipes.export.source import ADAPTER_CONFIG, inspect_source, quantization_of, read_json
from llm_recipes.serving.config import ServeArguments
from llm_recipes.serving.store import database_url

# a version's name goes into URLs, headers and the database: keep it plain
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# vLLM's --max-lora-rank choices (its engine arguments); an adapter's rank is served under the next one up
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
VLLM_MISSING = (
    "engine: vllm needs the vllm package (pip install vllm, on a CUDA machine); "
    "engine: transformers serves on CPU and one GPU"
)


def check_serve_arguments(args: ServeArguments) -> None:
    """The whole config; raises UserError, one line."""
    versions = served_versions(args)
    for name, path in versions.items():
        check_version_folder(name, path)
    traffic_shares(args.traffic, versions)
    check_engine(args.engine)
    if args.engine == "vllm":
        check_vllm_device(args.device)
        for name, path in versions.items():
            check_vllm_version(name, path)
    if args.start_timeout <= 0:
        raise UserError(f"start_timeout: {args.start_timeout} must be > 0 (seconds)")
    if not 0 <= args.port <= 65535:
        raise UserError(f"port: {args.port} is not a port (0 picks a free one, else 1-65535)")
    for name, minimum in (("max_tokens", 1), ("max_request_bytes", 1024), ("max_feedback_chars", 1)):
        if getattr(args, name) < minimum:
            raise UserError(f"{name}: {getattr(args, name)} must be >= {minimum}")
    if args.remember_responses < 0:
        raise UserError(f"remember_responses: {args.remember_responses} must be >= 0")
    if args.retention_days is not None and args.retention_days <= 0:
        raise UserError(f"retention_days: {args.retention_days} must be > 0 (or null to keep everything)")
    if args.api_key_env and not os.environ.get(args.api_key_env):
        raise UserError(f"api_key_env: the environment variable {args.api_key_env} is not set")
    check_database(args.db)


def served_versions(args: ServeArguments) -> dict[str, str]:
    """Version name -> model folder: `versions`, or `model` alone under its folder's name."""
    versions = mapping_field(args.versions, "versions")
    if bool(args.model) == bool(versions):
        raise UserError("set exactly one of model (one model to serve) or versions ({name: folder, ...})")
    if args.model:
        versions = {Path(args.model.rstrip("/")).name or "model": args.model}
    if not VERSION_NAME.match(args.model_name):
        raise UserError(f"model_name: {args.model_name!r} must be letters, digits, '.', '_' or '-'")
    for name, path in versions.items():
        if not VERSION_NAME.match(str(name)):
            raise UserError(f"versions: the name {name!r} must be letters, digits, '.', '_' or '-' (64 at most)")
        if name == args.model_name:
            raise UserError(f"versions: {name!r} is model_name, the name that routes through the traffic split")
        if not isinstance(path, str) or not path:
            raise UserError(f"versions: {name} must name a model folder, got {path!r}")
    return {str(name): path for name, path in versions.items()}


def traffic_shares(traffic: dict[str, Any] | str | None, versions: dict[str, str]) -> dict[str, float]:
    """Each version's share of the routed requests, summing to 1 (even when `traffic` is unset)."""
    weights = mapping_field(traffic, "traffic")
    if not weights:
        return {name: 1 / len(versions) for name in versions}
    for name, weight in weights.items():
        if name not in versions:
            raise UserError(f"traffic: {name!r} is not a served version{did_you_mean(str(name), versions)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise UserError(f"traffic: {name}'s share must be a number >= 0, got {weight!r}")
    total = sum(weights.values())
    if total <= 0:
        raise UserError("traffic: the shares add up to 0; give at least one version a share")
    return {name: weights.get(name, 0) / total for name in versions}


def check_version_folder(name: str, path: str) -> None:
    """A local folder holds weights and a tokenizer with a chat template (an adapter: its base's, unless its own)."""
    what = f"versions: {name}" if name else "model"
    check_model_path(path, what)
    if not looks_local(path):
        return  # a Hub id: read when it loads
    source = inspect_source(path)
    tokenizer_folders = [Path(path).expanduser()]
    if source.kind == "adapter":
        check_model_path(source.base_model, f"{what}'s base model")
        if looks_local(source.base_model):
            tokenizer_folders.append(Path(source.base_model).expanduser())
    tokenizer = next((folder for folder in tokenizer_folders if has_tokenizer(folder)), None)
    if tokenizer is None:
        raise UserError(f"{what}: {path} has no tokenizer (nor has its base model)")
    if not has_chat_template(tokenizer):
        raise UserError(f"{what}: {tokenizer} has no chat template; serve a chat model (an sft, dpo or export output)")


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()


def has_chat_template(folder: Path) -> bool:
    """transformers 5 saves the template beside the tokenizer (chat_template.jinja); older saves inline it."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


def find_vllm() -> str | None:
    """The `vllm` executable: on PATH, else beside this Python (a virtual environment that is not activated)."""
    beside = Path(sys.executable).with_name("vllm")
    return shutil.which("vllm") or (str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None)


def check_engine(engine: str) -> None:
    if engine == "vllm" and find_vllm() is None:
        raise UserError(VLLM_MISSING)


def check_vllm_device(device: str) -> None:
    if device == "cpu" or not (device == "auto" or re.fullmatch(r"cuda(:\d+)?", device)):
        raise UserError(f"device: engine: vllm runs on a CUDA GPU (auto, cuda or cuda:N), not {device!r}")


def check_vllm_version(name: str, path: str) -> None:
    """What vLLM's loader would refuse minutes into its start, refused now: vLLM serves LoRA adapters (not DoRA,
    nor adapters that save whole modules: its PEFT reader refuses both) over a full or bitsandbytes/GPTQ base.
    torchao folders are refused too: our torchao methods are the CPU deployment choice, and vLLM reading
    transformers' torchao checkpoints of them has never been tried."""
    what = f"versions: {name}"
    if not looks_local(path):
        return  # a Hub id: vLLM reads it as it loads
    source = inspect_source(path)
    quantization = source.quantization
    if source.kind == "adapter":
        adapter = read_json(Path(path).expanduser() / ADAPTER_CONFIG)
        remedy = "merge it with `llm-recipes export` first, or use engine: transformers"
        if adapter.get("peft_type", "LORA") != "LORA":
            raise UserError(f"{what}: vLLM serves LoRA adapters only, not {adapter.get('peft_type')}; {remedy}")
        if adapter.get("use_dora"):
            raise UserError(f"{what}: vLLM does not serve DoRA adapters; {remedy}")
        if adapter.get("modules_to_save"):
            saved = ", ".join(adapter["modules_to_save"])
            raise UserError(f"{what}: vLLM does not serve an adapter that saves whole modules ({saved}); {remedy}")
        if int(adapter.get("r", 8)) > LORA_RANKS[-1]:
            raise UserError(f"{what}: LoRA rank {adapter['r']} is over vLLM's largest, {LORA_RANKS[-1]}; {remedy}")
        quantization = quantization_of(source.config or {})
    if quantization and quantization.startswith("torchao"):
        raise UserError(
            f"{what}: {path} is torchao-quantized, our CPU format, not served through vLLM; serve it with engine: "
            "transformers, or quantize for vLLM with bitsandbytes or GPTQ"
        )


def check_database(url: str) -> None:
    """The feedback store's URL: a backend we support, its driver installed, a SQLite file's folder there."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "postgresql" and importlib.util.find_spec("psycopg") is None:
        raise UserError("db: PostgreSQL needs psycopg: pip install 'llm-recipes[serve]'")
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        if not Path(parsed.database).expanduser().resolve().parent.is_dir():
            raise UserError(f"db: the folder of {parsed.database} does not exist")
