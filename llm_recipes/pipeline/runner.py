"""Checking and running a pipeline plan, one stage after another.

Before the first stage starts, every stage's resolved config is written to `<run_dir>/configs/<stage>.yaml` and
checked by that stage's own parser, so a typo in the export section fails in a second, not after an hour of
pretraining. A stage runs in this process (one Python start-up for the whole pipeline) unless the pipeline gives it
launch flags, in which case it goes through `llm-recipes <stage>` and `accelerate launch`, as it would alone.
"""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers.training_args as training_args
import yaml

from llm_recipes import cli
from llm_recipes.configs import planned_outputs
from llm_recipes.errors import StageComplete, UserError
from llm_recipes.pipeline.plan import PipelineSettings, StagePlan, planned_paths
from llm_recipes.pipeline.report import StageResult, headline
from llm_recipes.pipeline.state import (
    PipelineState,
    StageStatus,
    fingerprint,
    has_checkpoints,
    output_mark,
    upstream_of,
)
from llm_recipes.runs.secrets import take_secrets


class StageFailed(RuntimeError):
    """A stage stopped with an error; what it finished is kept and a rerun continues from there."""


def write_stage_configs(plan: list[StagePlan], config_dir: Path) -> dict[str, Path]:
    """Each running stage's config as its own file: what the stage reads, and what a user can run alone.

    A token in a section moves to the environment first (`take_secrets`), for every stage of this run, in this
    process or launched from it: it is never in a file, nor in a stage's fingerprint."""
    config_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for step in plan:
        took_secrets = take_secrets(step.config)
        if step.action == "run":
            path = config_dir / f"{step.stage}.yaml"
            header = f"# the {step.stage} stage of a pipeline run; alone: llm-recipes {step.stage} --config {path}\n"
            if took_secrets:
                header += "# its token is not written here: set HF_TOKEN or log in with `hf auth login`\n"
            path.write_text(header + yaml.safe_dump(step.config, sort_keys=False, allow_unicode=True), encoding="utf-8")
            paths[step.stage] = path
    return paths


def check_plan(plan: list[StagePlan], config_paths: dict[str, Path]) -> None:
    """Every stage's own checks, before anything runs; a failure names the stage (the message names the field)."""
    with planned_outputs(planned_paths(plan)):
        for step in plan:
            if step.action != "run":
                continue
            try:
                cli.load_recipe(step.stage).parse_args(["--config", str(config_paths[step.stage])])
            except UserError as err:
                raise UserError(f"stage {step.stage}: {err}") from None


@contextmanager
def checks_as_on_a_gpu_machine() -> Iterator[bool]:
    """Check GPU configs on a machine without one as the GPU machine would (a dry run plans for the cluster from a
    laptop): transformers refuses `bf16: true` where no GPU supports it. Yields whether the check was relaxed."""

    if torch.cuda.is_available():
        yield False
        return
    real_check = training_args.is_torch_bf16_gpu_available
    training_args.is_torch_bf16_gpu_available = lambda: True
    try:
        yield True
    finally:
        training_args.is_torch_bf16_gpu_available = real_check


def stage_statuses(plan: list[StagePlan], state: PipelineState, *, restart: bool, rerun: str | None) -> list:
    """Where each running stage stands, as the run would see it now (later stages assume earlier ones re-ran)."""
    fingerprints: dict[str, str] = {}
    will_run: set[str] = set()
    statuses = []
    for index, step in enumerate(plan):
        if step.action != "run":
            statuses.append(None)
            continue
        upstream = upstream_of(step, plan[:index])
        stage_fingerprint = fingerprint(step, {u.slot: output_mark(u, fingerprints) for u in upstream})
        fingerprints[step.slot] = stage_fingerprint
        status = state.status(step, stage_fingerprint)
        if restart or step.stage == rerun or step.slot == rerun:
            status = StageStatus("changed", "asked to run again")
        elif status.kind in ("done", "resume") and any(u.slot in will_run for u in upstream):
            status = StageStatus("changed", "an input is made again in this run")
        if status.kind != "done":
            will_run.add(step.slot)
        statuses.append(status)
    return statuses


def run_plan(
    plan: list[StagePlan],
    settings: PipelineSettings,
    config_paths: dict[str, Path],
    *,
    restart: bool = False,
    rerun: str | None = None,
    log: Callable[[str], None] = print,
) -> list[StageResult]:
    """Run what is not done yet, in order; returns what every stage did (read back from its manifest)."""
    state = PipelineState(settings.run_dir)
    fingerprints: dict[str, str] = {}
    results = []
    for index, step in enumerate(plan):
        if step.action != "run":
            result = StageResult(step.stage, "skipped" if step.action == "skip" else "existing", step.output)
            results.append(result)
            continue
        upstream = upstream_of(step, plan[:index])
        # computed now, after the stages before it ran: their manifests say which writing of each input this reads
        stage_fingerprint = fingerprint(step, {u.slot: output_mark(u, fingerprints) for u in upstream})
        fingerprints[step.slot] = stage_fingerprint
        status = state.status(step, stage_fingerprint)
        if restart or rerun in (step.stage, step.slot):
            status = StageStatus("changed", "asked to run again")
        if status.kind == "done":
            log(f"== {step.stage}: done earlier ({status.reason}); skipping")
            text, metrics = headline(step.stage, step.output)
            seconds = state.stages[step.stage].get("seconds")
            results.append(StageResult(step.stage, "done earlier", step.output, seconds, text, metrics))
            continue
        if status.kind == "new" and step.is_training and has_checkpoints(step):
            raise UserError(
                f"stage {step.stage}: output_dir {step.output} holds checkpoints this pipeline did not write; "
                "remove them, choose another output_dir, or pass --restart to start that stage afresh"
            )
        # a changed stage starts over: what its folder holds came from other settings or other inputs
        start_over = status.kind == "changed"
        how = "starting over: " + status.reason if start_over else "resuming" if status.kind == "resume" else "running"
        log(f"== {step.stage} ({how}): {config_paths[step.stage]}")
        state.mark_started(step, stage_fingerprint)
        started = time.time()
        try:
            run_stage(step, config_paths[step.stage], overwrite=start_over)
        except StageComplete as done:
            log(str(done))
        except UserError as err:
            raise UserError(f"stage {step.stage}: {err}") from None
        except (Exception, KeyboardInterrupt) as err:
            raise StageFailed(
                f"stage {step.stage} stopped after {time.time() - started:.0f}s ({type(err).__name__}: {err}); "
                "finished stages are kept: rerun the same command to continue"
            ) from err
        seconds = time.time() - started
        state.mark_complete(step, seconds)
        text, metrics = headline(step.stage, step.output)
        how = "resumed" if status.kind == "resume" else "ran"
        results.append(StageResult(step.stage, how, step.output, seconds, text, metrics))
    return results


def run_stage(step: StagePlan, config_path: Path, *, overwrite: bool = False) -> None:
    """In this process, or through `accelerate launch` when the pipeline gives the stage launch flags; a user error
    comes back as a UserError either way."""
    args = ["--config", str(config_path)] + (["--overwrite_output_dir", "true"] if overwrite else [])
    if step.launch_args:
        code = cli.launch_stage(step.stage, [*args, *step.launch_args])
        if code != 0:
            raise RuntimeError(f"llm-recipes {step.stage} exited with code {code}")
        return
    cli.run_here(step.stage, args)
    gc.collect()  # the stage's model and data go before the next stage loads its own

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # a later stage may be a multi-process launch that needs this GPU's memory


def temporary_config_dir() -> Path:
    """Where a dry run writes the stage configs it checks (a dry run leaves the run folder alone); removed when the
    process exits, so a dry run leaves nothing behind."""
    path = Path(tempfile.mkdtemp(prefix="llm_recipes_pipeline_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def refuse_multi_process_launch() -> None:
    """The pipeline itself is one process; it starts multi-process stages itself (pipeline.launch)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            "run the pipeline as one process (llm-recipes pipeline --config ...); to train stages on several "
            "processes or GPUs, give them accelerate flags in pipeline.launch"
        )
