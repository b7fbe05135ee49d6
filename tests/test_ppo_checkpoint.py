"""A PPO checkpoint is data, never code: a pickle planted in any of its files is refused with one line naming the
file, and what it would have run never runs; a checkpoint in the previous format (pickled random state, optimizer
state keyed by parameter number) still resumes to the same weights."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROJECT, write_yaml
from safetensors.torch import load_file
from test_ppo import PPO, colour_model_dir, ppo_config, prompt_files, run_ppo  # noqa: F401  (fixtures)

from llm_recipes.errors import UserError


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, colour_model_dir, prompt_files) -> Path:  # noqa: F811
    """Two PPO steps with a checkpoint after each (checkpoint-1 holds step 1's weights, optimizer and RNG)."""
    folder = tmp_path_factory.mktemp("ppo-finished")
    run_ppo(folder, ppo_config(colour_model_dir, folder / "out", prompt_files, num_ppo_steps=2, save_steps=1))
    return folder / "out"


class Payload:
    """Unpickled without weights_only, this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def planted_checkpoint(finished_run: Path, tmp_path: Path, file: str, bare: bool = False) -> tuple[Path, Path]:
    """A copy of checkpoint-1 whose `file` is a pickle (in torch.save's archive, or `bare`) that creates a marker
    file when loaded unsafely."""
    checkpoint, marker = tmp_path / "checkpoint-1", tmp_path / "MARKER"
    shutil.copytree(finished_run / "checkpoint-1", checkpoint)
    if file == "rng_state_0.pt":  # the previous format's name: a checkpoint written before random states were JSON
        (checkpoint / "rng_state_0.json").unlink(missing_ok=True)
    payload = {"python": Payload(marker), "torch": torch.get_rng_state()}
    if bare:
        (checkpoint / file).write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, checkpoint / file)
    return checkpoint, marker


def resume_config(colour_model_dir: Path, prompt_files, tmp_path: Path, checkpoint: Path) -> Path:  # noqa: F811
    config = ppo_config(
        colour_model_dir, tmp_path / "resumed", prompt_files, num_ppo_steps=2, resume_from_checkpoint=str(checkpoint)
    )
    return write_yaml(tmp_path / "ppo.yaml", config)


@pytest.mark.slow
def test_a_pickle_in_a_checkpoints_random_state_is_refused_and_never_runs(
    finished_run,
    colour_model_dir,  # noqa: F811
    prompt_files,  # noqa: F811
    tmp_path,
):
    checkpoint, marker = planted_checkpoint(finished_run, tmp_path, "rng_state_0.pt")
    config = resume_config(colour_model_dir, prompt_files, tmp_path, checkpoint)
    done = subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", "ppo", "--config", str(config)],
        cwd=PROJECT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(checkpoint / "rng_state_0.pt") in errors[0], done.stderr[-3000:]
    assert "is not plain data (it asks for posix.system)" in errors[0]
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("file", "bare"), [("optimizer.pt", False), ("optimizer.pt", True), ("scheduler.pt", False)])
def test_a_pickle_in_any_checkpoint_file_is_refused(
    finished_run,
    colour_model_dir,  # noqa: F811
    prompt_files,  # noqa: F811
    tmp_path,
    file,
    bare,
):
    checkpoint, marker = planted_checkpoint(finished_run, tmp_path, file, bare)
    config = resume_config(colour_model_dir, prompt_files, tmp_path, checkpoint)
    with pytest.raises(UserError) as error:
        PPO.main(*PPO.parse_args(["--config", str(config)]))
    assert f"{checkpoint / file} is not plain data" in str(error.value)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def write_previous_format(checkpoint: Path) -> None:
    """Rewrite a checkpoint as the previous version wrote it: each process's random state pickled (NumPy's state as
    an array), the optimizer state keyed by parameter number."""
    for path in checkpoint.glob("rng_state_*.json"):
        state = json.loads(path.read_text())
        kind, keys, position, has_gauss, cached = state["numpy"]
        version, internal, gauss = state["python"]
        torch.save(
            {
                "python": (version, tuple(internal), gauss),
                "numpy": (kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached),
                "torch": torch.tensor(state["torch"], dtype=torch.uint8),
            },
            path.with_suffix(".pt"),
        )
        path.unlink()
    by_name = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    (group,) = by_name["param_groups"]
    numbers = {name: number for number, name in enumerate(group["params"])}
    by_number = {
        "state": {numbers[name]: state for name, state in by_name["state"].items()},
        "param_groups": [{**group, "params": list(numbers.values())}],
    }
    torch.save(by_number, checkpoint / "optimizer.pt")


@pytest.mark.slow
def test_a_checkpoint_in_the_previous_format_resumes_to_the_same_weights(
    finished_run,
    colour_model_dir,  # noqa: F811
    prompt_files,  # noqa: F811
    tmp_path,
):
    checkpoint = tmp_path / "checkpoint-1"
    shutil.copytree(finished_run / "checkpoint-1", checkpoint)
    write_previous_format(checkpoint)
    config = resume_config(colour_model_dir, prompt_files, tmp_path, checkpoint)
    summary = PPO.main(*PPO.parse_args(["--config", str(config)]))

    assert summary["PPO steps"] == 2
    straight, resumed = (
        load_file(finished_run / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=name)
