"""`llm-recipes <stage> --config X.yaml [field overrides] [accelerate flags]`.

Each stage is a script under recipes/; the console script checks the config in-process (so a mistake is one
line and exit code 2, before any worker starts) and then runs the script through `accelerate launch`, passing
through accelerate's own flags (--num_processes, --config_file, --cpu, ...). Everything else goes to the recipe.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

from llm_recipes.errors import (
    ERROR_DIR_ENV,
    StageComplete,
    UserError,
    mask_tokens,
    one_line,
    reported_error,
)
from llm_recipes.runs.outputs import abandon_started_outputs

# stage name -> recipe script; the one-line description is the first line of the script's docstring.
# The pipeline first, then the stages in the order it runs them.
STAGES: dict[str, str] = {
    "pipeline": "pipeline.py",
    "clean-corpus": "clean_corpus.py",
    "train-tokenizer": "train_tokenizer.py",
    "init-model": "init_model.py",
    "tokenize": "tokenize_shards.py",  # not tokenize.py: as a script, it would shadow the standard library's
    "pretrain": "pretrain.py",
    "sft": "sft.py",
    "finetune-task": "finetune_task.py",
    "reward": "reward.py",
    "ppo": "ppo.py",
    "grpo": "grpo.py",
    "rloo": "rloo.py",
    "dpo": "dpo.py",
    "kto": "kto.py",
    "distill": "distill.py",
    "quantize": "quantize.py",
    "prune": "prune.py",
    "evaluate": "evaluate_models.py",
    "export": "export.py",
    "serve": "serve.py",
    "feedback-to-data": "feedback_to_data.py",
    "monitor": "monitor.py",
}


# Command-line fields that hold a token, and the environment variables a token may come from
TOKEN_OPTIONS = frozenset({"--hub_token"})
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

# Stages that run here, in this process, rather than under `accelerate launch`: the pipeline (it launches the
# multi-process stages itself), the server (a long-running process whose engine starts its own model processes)
# and feedback-to-data and monitor (a database read into files: no model, nothing to launch)
DRIVERS = frozenset({"pipeline", "serve", "feedback-to-data", "monitor"})


def recipes_dir() -> Path:
    """The recipe scripts: beside the package in a checkout, or installed with it as `llm_recipes.recipes`."""
    checkout = Path(__file__).resolve().parents[1] / "recipes"
    if (checkout / "sft.py").is_file():
        return checkout
    spec = importlib.util.find_spec("llm_recipes.recipes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("cannot find the recipes folder; reinstall llm-recipes")
    return Path(list(spec.submodule_search_locations)[0])


def recipe_path(stage: str) -> Path:
    return recipes_dir() / STAGES[stage]


def describe(stage: str) -> str:
    source = recipe_path(stage).read_text(encoding="utf-8")
    docstring = source.split('"""', 2)[1] if source.startswith('"""') else ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def usage() -> str:
    width = max(len(stage) for stage in STAGES)
    lines = [
        "usage: llm-recipes <stage> --config FILE.yaml [--field value ...] [accelerate flags]",
        "",
        "stages:",
        *(f"  {stage:<{width}}  {describe(stage)}" for stage in STAGES),
        "",
        "Fields of the stage's config can be overridden on the command line (--learning_rate 1e-4).",
        "Accelerate flags are passed to `accelerate launch` (--num_processes 2, --config_file ..., --cpu).",
        "`llm-recipes <stage> --help` lists a stage's fields.",
    ]
    return "\n".join(lines)


@cache
def accelerate_flags() -> dict[str, bool]:
    """accelerate launch's options -> whether each takes a value. Fields the recipes also have stay with them."""
    from accelerate.commands.launch import launch_command_parser  # noqa: PLC0415  cli stays light: it imports torch

    recipe_fields = {"debug", "gradient_accumulation_steps", "config"}
    flags = {}
    for action in launch_command_parser()._actions:
        for option in action.option_strings:
            name = option.lstrip("-").replace("-", "_")
            if option.startswith("--") and name not in recipe_fields:
                flags[option] = action.nargs != 0
    return flags


def split_arguments(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate accelerate's flags from the recipe's arguments."""
    flags = accelerate_flags()
    launcher, recipe = [], []
    index = 0
    while index < len(args):
        token = args[index]
        option = token.split("=", 1)[0]
        if option in flags:
            launcher.append(token)
            if flags[option] and "=" not in token and index + 1 < len(args):
                launcher.append(args[index + 1])
                index += 1
        else:
            recipe.append(token)
        index += 1
    return launcher, recipe


def load_recipe(stage: str) -> ModuleType:
    path = recipe_path(stage)
    spec = importlib.util.spec_from_file_location(f"llm_recipes_recipe_{stage.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_here(stage: str, args: Sequence[str]) -> tuple:
    """A stage's config parsed and checked in this process, as the stage itself would (its dataclasses, in the
    order its main takes them): for scripts that build a stage's trainer from the library."""
    return load_recipe(stage).parse_args(list(args))


def run_here(stage: str, args: Sequence[str]) -> dict:
    """A stage in this process, as `python recipes/<stage>.py ARGS` runs it (the pipeline's in-process stages, the
    benchmarks): its config parsed and checked, then its main; returns the stage's summary."""
    recipe = load_recipe(stage)
    return recipe.main(*recipe.parse_args(list(args)))


def cpu_data_parallel(launcher_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Make `--cpu --num_processes N` mean N data-parallel CPU processes.

    accelerate 1.15 treats that as MULTI_CPU, which starts one process and expects mpirun to fan out. Launching
    through torchrun (`--multi_gpu`) with ACCELERATE_USE_CPU set gives N processes on gloo without MPI.
    """
    if "--cpu" not in launcher_args:
        return launcher_args, {}
    if any(token.split("=", 1)[0] in ("--config_file", "--config-file") for token in launcher_args):
        # the file says how to distribute (an FSDP file, say); --multi_gpu would replace that with plain DDP
        return [t for t in launcher_args if t != "--cpu"], {"ACCELERATE_USE_CPU": "true"}
    processes = 1
    for index, token in enumerate(launcher_args):
        option, _, value = token.partition("=")
        if option in ("--num_processes", "--num-processes"):
            processes = int(value or launcher_args[index + 1])
    if processes < 2:
        return launcher_args, {}
    return [t if t != "--cpu" else "--multi_gpu" for t in launcher_args], {"ACCELERATE_USE_CPU": "true"}


def launch_command(stage: str, launcher_args: list[str], recipe_args: list[str]) -> list[str]:
    defaults = []
    given = {token.split("=", 1)[0] for token in launcher_args}
    if "--config_file" not in given and "--config-file" not in given:
        # without a config file accelerate warns about every default it assumes; state the plain ones
        if "--num_processes" not in given and "--num-processes" not in given:
            defaults += ["--num_processes", "1"]
        if "--num_machines" not in given and "--num-machines" not in given:
            defaults += ["--num_machines", "1"]
        if "--mixed_precision" not in given and "--mixed-precision" not in given:
            defaults += ["--mixed_precision", "no"]
        if "--dynamo_backend" not in given and "--dynamo-backend" not in given:
            defaults += ["--dynamo_backend", "no"]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *defaults,
        *launcher_args,
        str(recipe_path(stage)),
        *recipe_args,
    ]


def run_driver(stage: str, args: list[str]) -> int:
    recipe = load_recipe(stage)
    recipe.main(*recipe.parse_args(args))
    return 0


def secret_arguments(recipe_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Take `--hub_token X` off the child's command line (where accelerate's error report and `ps` would show it)
    and hand it over in HF_TOKEN, where huggingface_hub and the Trainer look for a token anyway."""
    kept, env = [], {}
    index = 0
    while index < len(recipe_args):
        option, has_value, value = recipe_args[index].partition("=")
        if "--" + option.lstrip("-").replace("-", "_") in TOKEN_OPTIONS:
            if not has_value and index + 1 < len(recipe_args):
                value = recipe_args[index + 1]
                index += 1
            env["HF_TOKEN"] = value
        else:
            kept.append(recipe_args[index])
        index += 1
    return kept, env


def launch_stage(stage: str, rest: list[str]) -> int:
    """Check the stage's config here, then run it through `accelerate launch`; a user error found by any rank
    comes back as a UserError (said once), anything else as the launch's exit code."""
    launcher_args, recipe_args = split_arguments(rest)
    recipe = load_recipe(stage)
    parsed = recipe.parse_args(recipe_args)
    if hasattr(recipe, "check_launch"):  # a stage that runs only under some launches says so before any starts
        recipe.check_launch(launcher_args, parsed)
    launcher_args, extra_env = cpu_data_parallel(launcher_args)
    recipe_args, secret_env = secret_arguments(recipe_args)
    secrets = [value for key in SECRET_ENV for value in [secret_env.get(key) or os.environ.get(key)] if value]
    with tempfile.TemporaryDirectory(prefix="llm_recipes_errors_") as error_dir:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env, **secret_env, ERROR_DIR_ENV: error_dir}
        process = subprocess.Popen(launch_command(stage, launcher_args, recipe_args), env=env, stderr=subprocess.PIPE)
        try:
            forward_stderr(process.stderr, error_dir, secrets)
        finally:
            code = process.wait()
        message = reported_error(error_dir)
    if message:
        raise UserError(message)
    return code


def forward_stderr(stream: BinaryIO, error_dir: str, secrets: list[str]) -> None:
    """Copy the launch's stderr through as it comes (progress bars included), tokens masked, until a rank has
    reported a user error: after that, accelerate's and torchrun's tracebacks about the failed child are noise."""
    out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
    pending = b""
    silenced = False
    while chunk := stream.read1(1 << 16):
        if silenced or os.listdir(error_dir):
            silenced = True
            continue
        pending += chunk
        # cut after the last line end or carriage return, so a token is never split between two writes
        cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
        if cut:
            _write(out, mask_tokens(pending[:cut].decode("utf-8", "replace"), secrets))
            pending = pending[cut:]
    if pending and not silenced:
        _write(out, mask_tokens(pending.decode("utf-8", "replace"), secrets))


def _write(out: BinaryIO | None, text: str) -> None:
    if out is not None:
        out.write(text.encode("utf-8"))
        out.flush()
    else:  # a test's captured stderr
        sys.stderr.write(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        match = difflib.get_close_matches(stage, list(STAGES), n=1)
        hint = f"; did you mean {match[0]}?" if match else ""
        print(f"error: unknown stage '{stage}'{hint} (llm-recipes --help lists them)", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        return subprocess.call([sys.executable, str(recipe_path(stage)), "--help"])
    try:
        return run_driver(stage, rest) if stage in DRIVERS else launch_stage(stage, rest)
    except UserError as err:
        abandon_started_outputs()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except StageComplete as done:
        print(done)
        return 0


if __name__ == "__main__":
    sys.exit(main())
