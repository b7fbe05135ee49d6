"""The inference engine behind the API. Not ours: transformers' own serving code (`transformers serve`), or
vLLM's OpenAI server (`vllm serve`) for production GPUs. Our layer (app.py) only routes, tags, limits, records and
stores feedback around what the engine answers, so the engine is one config field and the API stays the same.

engine: transformers
    transformers' `ModelManager` runs each model in a process of its own (generate, or continuous batching with
    paged attention), and its `ChatCompletionHandler` turns OpenAI chat requests into prompts through the model's
    chat template and generates with the model's generation config. What we add is `StageModelLoader`, which loads
    what our stages write, as transformers' loader cannot: a LoRA/DoRA adapter folder has no config.json, so its
    base is loaded and the adapter merged into it at load time (one model to run, no adapter overhead per token);
    an adapter over quantized weights stays unmerged, as merging would round its update away. Full and quantized
    (bitsandbytes, torchao) folders load as the evaluation stage loads them.

engine: vllm
    A `vllm serve` server per distinct weights folder, each a child process on 127.0.0.1, behind our API
    (upstream.py relays to them; vllm_command.py builds their commands): LoRA adapters are served by their base's
    server as LoRA modules, bitsandbytes folders with `--quantization bitsandbytes`, and answers use the model's
    generation config (`--generation-config auto`). What vLLM cannot serve (DoRA, adapters saving whole modules,
    torchao folders, device: cpu) is refused by checks.py before anything starts. Tested here with a stand-in for
    the `vllm` executable (tests/test_serve_vllm.py: it checks the command it is given, then runs engine:
    transformers on that port), not with vLLM on a GPU: none is installed where these tests run.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, GenerationConfig
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.model_manager import ModelLoader, ModelManager
from transformers.cli.serving.utils import GenerationState, canonical_model_id, parse_model_id

from llm_recipes.configs import looks_local
from llm_recipes.errors import UserError, one_line
from llm_recipes.evaluation.loading import is_adapter, load_model, load_tokenizer_for
from llm_recipes.export.source import inspect_source, quantization_of
from llm_recipes.serving.checks import check_engine
from llm_recipes.serving.config import ServeArguments
from llm_recipes.serving.upstream import UpstreamEngine
from llm_recipes.serving.vllm_command import make_vllm_engine


class StageModelLoader(ModelLoader):
    """transformers' model loader, reading our stage outputs (see the module docstring). It is pickled into each
    model's process, so it holds plain settings only."""

    def __init__(self, device: str, dtype: str, trust_remote_code: bool, continuous_batching: bool):
        super().__init__(device="cpu", trust_remote_code=trust_remote_code, continuous_batching=continuous_batching)
        self.serve_device = None if device == "auto" else device
        self.serve_dtype = None if dtype == "auto" else dtype

    def load_model_and_processor(self, model_id: str, on_progress: Any = None) -> tuple[Any, Any]:
        """In the model's process. A model that cannot load is reported by the server as one line with its reason
        (TransformersEngine.start): transformers' own traceback of it, logged as the process ends, is muted."""
        try:
            return super().load_model_and_processor(model_id, on_progress)
        except Exception:
            logging.getLogger("transformers.cli.serving.model_manager").setLevel(logging.CRITICAL)
            raise

    def load_config(self, model_id: str) -> tuple[Any, GenerationConfig]:
        path = parse_model_id(model_id)[0]
        if not is_adapter(path):
            return super().load_config(model_id)
        base = inspect_source(path).base_model
        config = AutoConfig.from_pretrained(base, trust_remote_code=self.trust_remote_code)
        for source in (path, base):  # the adapter's own generation config, else its base's
            try:
                return config, GenerationConfig.from_pretrained(source)
            except OSError:
                continue
        return config, GenerationConfig.from_model_config(config)

    def load_processor(self, model_id: str) -> Any:
        """The tokenizer (an adapter saved without one: its base's), whose chat template renders the prompts."""
        return load_tokenizer_for(parse_model_id(model_id)[0], trust_remote_code=self.trust_remote_code)

    def _load_model(self, model_id: str, tqdm_class: Any = None, progress_callback: Any = None) -> Any:
        path = parse_model_id(model_id)[0]
        model = load_model(
            path, device=self.serve_device, dtype=self.serve_dtype, trust_remote_code=self.trust_remote_code
        )
        if is_adapter(path) and not quantization_of(model.config):
            model = model.merge_and_unload()
        # this runs in the model's own process: bitsandbytes' int8 layers would log a float16 cast on every token
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        return model


def use_continuous_batching(setting: str, device: str) -> bool:
    """auto: on with a GPU. On CPU a tiny model's process took ~40 s to start with it against ~6 s without."""
    if setting != "auto":
        return setting == "true"
    return torch.cuda.is_available() and not device.startswith("cpu")


class TransformersEngine:
    """transformers' serving: one model process per distinct folder, chat requests through its handler."""

    name = "transformers"

    def __init__(self, versions: dict[str, str], args: ServeArguments):
        batching = use_continuous_batching(args.continuous_batching, args.device)
        self.loader = StageModelLoader(args.device, args.dtype, args.trust_remote_code, batching)
        self.generation = GenerationState(continuous_batching=batching)
        # model_timeout -1: a served version never unloads for being idle (its next request would wait for a load)
        self.manager = ModelManager(self.loader, self.generation, model_timeout=-1)
        self.chat_handler = ChatCompletionHandler(model_manager=self.manager, generation_state=self.generation)
        self.model_ids = {
            name: canonical_model_id(str(Path(path).expanduser().resolve()) if looks_local(path) else path)
            for name, path in versions.items()
        }
        self.continuous_batching = batching

    def start(self) -> None:
        """Load every version now, side by side: a folder that cannot load fails the start, not a first request."""
        model_ids = sorted(set(self.model_ids.values()))
        with ThreadPoolExecutor(max_workers=len(model_ids)) as pool:
            for model_id, error in zip(model_ids, pool.map(self._start_one, model_ids), strict=True):
                if error is not None:
                    self.shutdown()
                    names = ", ".join(name for name, other in self.model_ids.items() if other == model_id)
                    raise UserError(f"{names}: the model did not load: {one_line(error)}")

    def _start_one(self, model_id: str) -> Exception | None:
        try:
            self.manager.preload_engine(model_id, None)
        except Exception as error:  # the model's process reports why it stopped; said once, by start
            return error
        return None

    async def chat(self, version: str, body: dict[str, Any], response_id: str) -> Any:
        """The engine's answer to an OpenAI chat body: a JSONResponse, or a streaming response of SSE events."""
        return await self.chat_handler.handle_request({**body, "model": self.model_ids[version]}, response_id)

    def shutdown(self) -> None:
        self.manager.shutdown()


def make_engine(args: ServeArguments, versions: dict[str, str]) -> TransformersEngine | UpstreamEngine:
    check_engine(args.engine)
    if args.engine == "vllm":
        return make_vllm_engine(args, versions)
    return TransformersEngine(versions, args)
