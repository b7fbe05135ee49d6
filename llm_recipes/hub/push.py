"""Pushing a stage's output to the Hub: `HfApi.create_repo` (private by default) + `create_branch` + `upload_folder`,
once per stage, at its end (the Trainer's own pushing is turned off), with the model card written for the final repo
id. The token comes from `HF_TOKEN` (where a stage moves a config's `hub_token` before anything is saved,
llm_recipes.runs.secrets) or the `hf auth login` store, and is never printed or written: Hub errors are turned into
one-line `UserError`s with any token text removed. Without a network the push stops with a message saying the folder
is complete and the exact command that uploads it later."""

from __future__ import annotations

import fnmatch
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

from llm_recipes.errors import UserError
from llm_recipes.hub.card import CardOptions, build_model_card, write_model_card
from llm_recipes.runs.secrets import take_token

# Never uploaded: training checkpoints and logs, pickled training arguments (safetensors only), temporary files
PUSH_IGNORE = ["checkpoint-*", "runs/*", "*.tmp", ".*", "training_args.bin"]


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now; huggingface_hub reads it once, at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the Hub could not be reached, from whichever HTTP clients are installed."""
    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
    ):
        try:
            imported = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        errors += [getattr(imported, name) for name in names if hasattr(imported, name)]
    return tuple(dict.fromkeys(errors))


def upload_command(folder: Path, repo_id: str, private: bool, revision: str | None) -> str:
    """The `hf` command that uploads the folder later, with the same settings."""
    parts = ["hf", "upload", repo_id, shlex.quote(str(folder)), ".", "--private" if private else "--no-private"]
    if revision:
        parts += ["--revision", shlex.quote(revision)]
    files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    # only the exclusions this folder needs (huggingface_hub matches them with fnmatch, as we do here)
    parts += [f"--exclude {shlex.quote(p)}" for p in PUSH_IGNORE if any(fnmatch.fnmatch(f, p) for f in files)]
    return " ".join(parts)


@dataclass
class PushResult:
    repo_id: str
    revision: str | None
    commit_url: str
    private: bool


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    before_upload: Callable[[str], None] | None = None,
    what: str = "output",
) -> PushResult:
    """Create the repo (private unless told otherwise; an existing one is kept as it is), create the branch
    `revision` if given, and upload the folder in one commit.

    `before_upload(full_repo_id)` runs once the repo id is known with its namespace (the card's usage snippet
    needs it). `token`: None takes HF_TOKEN or the `hf auth login` token.
    """
    folder = Path(folder)
    later = upload_command(folder, repo_id, private, revision)
    if hub_offline():
        raise _offline_error(folder, what, later, "HF_HUB_OFFLINE is set")
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        if before_upload is not None:
            before_upload(repo_id)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} with llm-recipes",
            ignore_patterns=PUSH_IGNORE,
        )
    except connection_errors() as err:
        raise _offline_error(folder, what, later, _redact(type(err).__name__, token)) from None
    except Exception as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(
                f"the Hub refused the push to {repo_id} (HTTP {status}): log in with `hf auth login` or set HF_TOKEN "
                f"to a token with write access; the {what} in {folder} is complete and can be pushed later with: "
                f"{later}"
            ) from None
        if status is None and not _is_hub_error(err):
            raise
        message = _redact(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, token)
        raise UserError(f"the push to {repo_id} failed: {message}; the {what} in {folder} is complete") from None
    return PushResult(repo_id=repo_id, revision=revision, commit_url=str(commit.commit_url), private=private)


def push_stage_output(
    output_dir: str | Path,
    repo_id: str | None = None,
    *,
    private: bool = True,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    card: CardOptions | None = None,
    evaluated_model: str | Path | None = None,
    what: str = "output",
) -> PushResult:
    """What a stage's `push_to_hub: true` does: write the model card for the final repo id, then push the folder.

    `repo_id` defaults to the output folder's name in your namespace (as transformers' Trainer does).
    """
    folder = Path(output_dir)
    repo_id = repo_id or folder.resolve().name
    options = card or CardOptions()
    if hub_offline():  # before the folder is touched: offline, it stays exactly as the stage left it
        raise _offline_error(folder, what, upload_command(folder, repo_id, private, revision), "HF_HUB_OFFLINE is set")
    build_model_card(folder, repo_id, options, evaluated_model=evaluated_model)  # checked before anything is sent

    def write(full_id: str) -> None:  # the card's usage snippet names the repo with its namespace
        write_model_card(folder, full_id, options, evaluated_model=evaluated_model)

    return push_folder(
        folder,
        repo_id,
        private=private,
        revision=revision,
        commit_message=commit_message,
        token=token,
        before_upload=write,
        what=what,
    )


def _offline_error(folder: Path, what: str, later: str, reason: str) -> UserError:
    return UserError(
        f"could not reach the Hub (offline? {reason}); the {what} in {folder} is complete and can be pushed later "
        f"with: {later}"
    )


def _is_hub_error(err: BaseException) -> bool:
    return isinstance(err, (HfHubHTTPError, HFValidationError))


def _redact(text: str, token: str | None) -> str:
    for secret in {token, os.environ.get("HF_TOKEN"), _quiet(get_token)}:
        if secret:
            text = text.replace(secret, "<token>")
    return text


def _quiet(function: Callable[[], Any]) -> Any:
    try:
        return function()
    except Exception:  # a broken token store must not turn an error message into another error
        return None


def take_over_trainer_push(training_args: Any) -> bool:
    """Take the Trainer's hub settings over, before the Trainer is built: turn off its own pushing (it creates the
    repo at start-up, public unless told otherwise, and pushes at every save with its own card), move a `hub_token`
    to HF_TOKEN (the Trainer pickles its arguments into training_args.bin, token included), and return whether the
    user asked for a push, which `push_trained_output` then does once, at the end."""
    take_token(training_args)
    wanted = bool(training_args.push_to_hub)
    training_args.push_to_hub = False
    return wanted


def push_trained_output(training_args: Any, stage: str) -> PushResult:
    """Push a training stage's output folder with our model card, using the Trainer's hub_* settings."""
    result = push_stage_output(
        training_args.output_dir,
        training_args.hub_model_id,
        private=training_args.hub_private_repo is not False,
        revision=getattr(training_args, "hub_revision", None),
        commit_message=f"llm-recipes {stage}",
    )
    print(f"pushed to {result.repo_id}: {result.commit_url}")
    return result
