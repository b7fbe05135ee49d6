"""engine: vllm -- the `vllm serve` command for each model our stages wrote (upstream.py runs them and relays).

    vllm serve FOLDER --host 127.0.0.1 --port P --served-model-name NAME --dtype DTYPE --generation-config auto
        [--tokenizer ADAPTER] [--trust-remote-code] [--quantization bitsandbytes]
        [--enable-lora --max-loras N --max-lora-rank R --lora-modules VERSION=ADAPTER ...]
        [--gpu-memory-utilization F]

One server per distinct weights folder: a full model serves under a name of its own; a LoRA adapter is served by
its base's server as a LoRA module named after its version (vLLM applies it per request, unmerged), so versions
that share a base share one server and its GPU memory. An adapter saved with a tokenizer of its own gets a server
whose `--tokenizer` is the adapter (its chat template). `--generation-config auto` answers with the model's
generation config, as engine: transformers does (for an adapter: its base's). bitsandbytes folders (8-bit,
4-bit; a QLoRA adapter's base) add `--quantization bitsandbytes`; GPTQ folders are read from their config.json.
With several servers on one GPU, each takes an equal share of vLLM's default 0.9 of its memory (vLLM's
`--gpu-memory-utilization` is per instance). `device: cuda:N` sets CUDA_VISIBLE_DEVICES=N for the servers.
What vLLM cannot serve is refused by checks.check_vllm_version before anything starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.configs import looks_local
from llm_recipes.errors import UserError
from llm_recipes.export.source import ADAPTER_CONFIG, inspect_source, read_json
from llm_recipes.serving.checks import LORA_RANKS, VLLM_MISSING, find_vllm, has_tokenizer
from llm_recipes.serving.config import ServeArguments
from llm_recipes.serving.upstream import ChildServer, UpstreamEngine

GPU_MEMORY = 0.9  # vLLM's default --gpu-memory-utilization, shared out when servers share a GPU


@dataclass
class VllmServer:
    """One `vllm serve`: the weights it loads, and the versions it answers."""

    weights: str  # a full model's folder (or Hub id), or an adapter's base
    tokenizer: str | None  # an adapter's own tokenizer folder, when it has one
    served_name: str
    full: list[str] = field(default_factory=list)  # versions served as the weights themselves
    adapters: dict[str, str] = field(default_factory=dict)  # version -> adapter folder (a LoRA module)
    bitsandbytes: bool = False
    lora_rank: int = 0


def local(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if looks_local(path) else path


def is_bitsandbytes(config: dict[str, Any] | None) -> bool:
    quantization = (config or {}).get("quantization_config") or {}
    return quantization.get("quant_method") == "bitsandbytes" or bool(
        quantization.get("load_in_8bit") or quantization.get("load_in_4bit")
    )


def plan_servers(versions: dict[str, str]) -> list[VllmServer]:
    """The servers for the versions: one per (weights, tokenizer), in the order the versions come."""
    servers: dict[tuple[str, str | None], VllmServer] = {}
    for name, path in versions.items():
        source = inspect_source(path) if looks_local(path) else None
        adapter = source is not None and source.kind == "adapter"
        weights = local(source.base_model) if adapter else local(path)
        tokenizer = local(path) if adapter and has_tokenizer(Path(path).expanduser()) else None
        server = servers.setdefault((weights, tokenizer), VllmServer(weights, tokenizer, served_name=""))
        server.bitsandbytes = is_bitsandbytes(source.config if source else None)
        if adapter:
            server.adapters[name] = local(path)
            rank = int(read_json(Path(path).expanduser() / ADAPTER_CONFIG).get("r", 8))
            server.lora_rank = max(server.lora_rank, next(choice for choice in LORA_RANKS if choice >= rank))
        else:
            server.full.append(name)
    for server in servers.values():  # a name no version (a LoRA module's name) has
        server.served_name = server.full[0] if server.full else unused_name("base", versions)
    return list(servers.values())


def unused_name(stem: str, taken: dict[str, str]) -> str:
    return next(name for name in (stem, *(f"{stem}-{i}" for i in range(2, len(taken) + 3))) if name not in taken)


def vllm_argv(server: VllmServer, port: int, args: ServeArguments, executable: str, shared_gpu: int) -> list[str]:
    argv = [executable, "serve", server.weights, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--served-model-name", server.served_name, "--dtype", args.dtype, "--generation-config", "auto"]
    if server.tokenizer:
        argv += ["--tokenizer", server.tokenizer]
    if args.trust_remote_code:
        argv += ["--trust-remote-code"]
    if server.bitsandbytes:
        argv += ["--quantization", "bitsandbytes"]
    if server.adapters:
        argv += ["--enable-lora", "--max-loras", str(len(server.adapters)), "--max-lora-rank", str(server.lora_rank)]
        argv += ["--lora-modules", *(f"{name}={folder}" for name, folder in server.adapters.items())]
    if shared_gpu > 1:
        argv += ["--gpu-memory-utilization", f"{math.floor(GPU_MEMORY / shared_gpu * 100) / 100:.2f}"]
    return argv


def make_vllm_engine(args: ServeArguments, versions: dict[str, str]) -> UpstreamEngine:
    executable = find_vllm()
    if executable is None:
        raise UserError(VLLM_MISSING)
    servers = plan_servers(versions)
    env = {"CUDA_VISIBLE_DEVICES": args.device.split(":")[1]} if args.device.startswith("cuda:") else {}
    children, routes = [], {}
    for index, server in enumerate(servers):

        def command(port: int, server: VllmServer = server) -> list[str]:
            return vllm_argv(server, port, args, executable, len(servers))

        children.append(ChildServer([*server.full, *server.adapters], command, env))
        routes.update({name: (index, server.served_name) for name in server.full})
        routes.update({name: (index, name) for name in server.adapters})
    return UpstreamEngine("vllm", children, routes, args.start_timeout)
