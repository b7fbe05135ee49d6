"""PPO checkpoints: what a `checkpoint-N/` folder holds, and reading it back as data only.

    policy/, value_model/    save_pretrained folders (full weights, or the adapter of a PEFT model)
    optimizer.pt             AdamW's state as a full state dict keyed by parameter name
                             (torch.distributed.checkpoint's get_optimizer_state_dict): the same file under
                             DDP, FSDP2 or one device, so a run may resume under another of them
    scheduler.pt             the learning-rate scheduler's state dict
    rng_state_<rank>.json    each process's Python, NumPy and torch random state
    trainer_state.json       step, KL coefficient, log history (written last: its presence marks a whole folder)

A checkpoint is data, never code: tensors are read with `torch.load(weights_only=True)` or safetensors and the
random states as JSON. A file that needs more (a pickle that would import and call something) is refused with
one line naming it. Checkpoints of earlier versions load where that is safe: `rng_state_<rank>.pt` through
weights_only with NumPy's array types allowed (as transformers' Trainer reads its own), and an optimizer state
keyed by parameter number on a model that is not sharded.

Under FSDP2 the weights and optimizer state are gathered to full tensors on the main process
(`get_model_state_dict` / `get_optimizer_state_dict`), and loading hands each process its shard.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from transformers.trainer_pt_utils import safe_globals

from llm_recipes.errors import UserError
from llm_recipes.rl.ppo.rollout import is_peft_model

TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """The complete checkpoint-N folders of a run, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found)]


# --------------------------------------------------------------------------------------------------------------
# Reading files as data


def read_tensors(path: Path, **kwargs: Any) -> Any:
    """`torch.load` restricted to tensors and plain containers; anything else is refused with one line."""
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f" (it asks for {found.group(1)})" if found else ""
        raise UserError(
            f"{path} is not plain data{what}: checkpoint files are read as data only -- delete that checkpoint "
            "folder, or resume from one you wrote yourself"
        ) from None
    except RuntimeError as error:  # not a torch.save archive (a bare pickle, a truncated file)
        raise UserError(f"{path} cannot be read as saved tensors: {str(error).splitlines()[0]}") from None


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng_state_{rank}.json"


def rng_state() -> dict[str, Any]:
    """This process's random state as JSON-ready lists."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [device_state.tolist() for device_state in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (lists from JSON, or an earlier version's tuples and tensors)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def write_rng_state(folder: Path, rank: int, state: dict[str, Any]) -> None:
    rng_file(folder, rank).write_text(json.dumps(state), encoding="utf-8")


def read_rng_state(folder: Path, rank: int) -> dict[str, Any] | None:
    """This process's saved random state: the JSON file, or an earlier version's pickle read as data only."""
    path = rng_file(folder, rank)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    legacy = path.with_suffix(".pt")
    if not legacy.is_file():
        return None

    with safe_globals():
        return read_tensors(legacy)


# --------------------------------------------------------------------------------------------------------------
# Weights


def full_state(model: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """`model`'s full weights on the CPU of the main process (gathered from every shard under FSDP2; the other
    processes get {}). All processes must call it."""

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    state = get_model_state_dict(model, options=options)
    # a tied weight (the LM head sharing the embeddings) is gathered under each name; save_pretrained keeps one
    first: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(parameter), name) != name:
            state.pop(name, None)
    return state


def merged_policy(policy: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A PEFT policy holding `state` (its full weights, base and adapter) with the adapter merged in. It is built
    on the meta device and takes `state`'s tensors as they are, so no second copy of the weights is made."""

    base, adapter = policy.get_base_model(), policy.active_adapter
    with torch.device("meta"):
        skeleton = get_peft_model(type(base)(base.config), copy.deepcopy(policy.peft_config[adapter]), adapter)
    skeleton.load_state_dict(state, assign=True, strict=False)
    skeleton.get_base_model().tie_weights()  # `state` names a tied weight once (full_state)
    empty = [name for name, parameter in skeleton.named_parameters() if parameter.is_meta]
    if empty:
        raise RuntimeError(f"the gathered policy weights lack {empty[:3]}")
    return skeleton.merge_and_unload()


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load what `save_pretrained` wrote into an existing model, sharded or not: an adapter into a PEFT model, else
    the full weights (shards included; tied weights follow the tensor they share)."""

    if is_peft_model(model):
        result = set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        unexpected = list(result.unexpected_keys)
    else:
        index = folder / "model.safetensors.index.json"
        files = (
            sorted(set(json.loads(index.read_text())["weight_map"].values()))
            if index.is_file()
            else ["model.safetensors"]
        )
        state = {name: tensor for file in files for name, tensor in load_file(folder / file).items()}
        unexpected = sorted(set(state) - set(model.state_dict()))
        if not unexpected:
            set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    if unexpected:
        raise UserError(f"checkpoint {folder} does not fit the model: unexpected weights {unexpected[:3]}")


# --------------------------------------------------------------------------------------------------------------
# Optimizer


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state keyed by parameter name, on the main process's CPU (all processes call it)."""

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path, sharded: bool) -> None:
    """Restore `optimizer` from `path` on every process (each keeps its shard under FSDP2). An earlier version's
    file, keyed by parameter number, loads into a model that is not sharded."""

    # mapped, not read: every process takes its shard from the one full state, through the page cache
    state = read_tensors(path, map_location="cpu", mmap=zipfile.is_zipfile(path))
    by_number = any(isinstance(p, int) for group in state.get("param_groups", []) for p in group["params"])
    if by_number and sharded:
        raise UserError(
            f"{path} was written by an earlier version for an unsharded model: resume this run without FSDP "
            "(DDP or one device), or start it over"
        )
    if by_number:
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


# --------------------------------------------------------------------------------------------------------------
# Writing a checkpoint


def write_checkpoint(trainer: Any, random_state: dict[str, Any]) -> Path:
    """checkpoint-N/ of a PPOTrainer at its current step, written under a temporary name and renamed when whole.
    Every process calls it: each writes its random state, and gathering sharded weights is collective."""
    accelerator, models = trainer.accelerator, trainer.unwrapped
    name = f"checkpoint-{trainer.global_step}"
    final = Path(trainer.config.output_dir) / name
    partial = final.with_name(f".{name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_rng_state(partial, accelerator.process_index, random_state)
    policy_state = full_state(models.policy, trainable_only=True) if trainer.sharded else None
    value_state = full_state(models.value_model, trainable_only=True) if trainer.sharded else None
    optimizer = optimizer_state(models, trainer.optimizer.optimizer)
    if accelerator.is_main_process:
        models.policy.save_pretrained(partial / "policy", state_dict=policy_state)
        trainer.tokenizer.save_pretrained(partial / "policy")
        models.value_model.save_pretrained(partial / "value_model", state_dict=value_state)
        torch.save(optimizer, partial / OPTIMIZER)
        torch.save(trainer.scheduler.state_dict(), partial / SCHEDULER)
        trainer.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    accelerator.wait_for_everyone()
    return final
