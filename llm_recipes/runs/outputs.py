"""Stage output folders that appear whole or not at all.

A stage writes into a staging folder beside its output and renames it into place when everything is written, so a
crash never leaves a half-written model or tokenizer that looks complete, and a rerun replaces an earlier output.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from llm_recipes.errors import UserError

P = ParamSpec("P")
T = TypeVar("T")


@contextmanager
def written_in_place(output_dir: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `output_dir`, on any failure it is removed."""
    output = Path(output_dir).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output should get the usual permissions
    try:
        yield staging
        replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(staging: Path, output: Path) -> None:
    """Move a finished folder into place; an earlier output there is moved aside first, then deleted."""
    previous = None
    if output.exists():
        previous = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old.", suffix=".tmp"))
        os.replace(output, previous / output.name)
    os.replace(staging, output)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------------------------
# Claiming an output folder: checked, locked, cleaned of a dead run's temporaries, forgotten on a user error

# staging folders and atomic-write files: ".<name>.<8 random chars>.tmp" (and ".<name>.old.<...>.tmp")
_TEMPORARY = r"\.{name}\.(?:old\.)?[a-z0-9_]{{8}}\.tmp"


@dataclass
class OutputClaim:
    """An output folder this process is writing: whether it existed before, and the lock held on it."""

    path: Path
    existed: bool
    lock: IO[str] | None = None


# this process's unfinished outputs, by resolved path: a second claim of one of them in the same process (a test
# rerunning a stage in-process, the pipeline) is the same claim, not another run
_CLAIMS: dict[Path, OutputClaim] = {}


def check_output_path(output_dir: str | Path) -> Path:
    """The output must be a folder we can write: an existing file there is the user's data, never ours to replace."""
    output = Path(output_dir).expanduser()
    if output.is_file() or (output.exists() and not output.is_dir()):
        raise UserError(f"output_dir: {output_dir} is an existing file, not a folder; choose another output_dir")
    probe_in = output if output.is_dir() else _nearest_existing_parent(output)
    if probe_in is None or not _can_write_in(probe_in):
        raise UserError(f"output_dir: cannot write to {output_dir} ({probe_in or output} is not writable)")
    return output


def claim_output(output_dir: str | Path, *, lock: bool = True) -> OutputClaim:
    """Check the folder, lock it against a second run (on the first process of a launch), and remove the staging
    folders and half-written files a killed run left: with the lock held, none of them can be a live run's."""
    output = check_output_path(output_dir)
    key = output.resolve()
    if key in _CLAIMS:
        return _CLAIMS[key]
    claim = OutputClaim(path=output, existed=output.exists())
    if lock and os.environ.get("RANK", "0") == "0":
        claim.lock = _take_lock(output)
        _remove_stale_temporaries(output)
    _CLAIMS[key] = claim
    return claim


def settle(claim: OutputClaim) -> None:
    """The output is complete: other runs may use the folder, and a later error in this process leaves it alone."""
    _CLAIMS.pop(claim.path.resolve(), None)
    if claim.lock is not None:
        lock_path(claim.path).unlink(missing_ok=True)  # safe while held: a waiting run re-checks the file it locked
        claim.lock.close()
        claim.lock = None


def release_claims() -> None:
    """Let other runs write the folders this process claimed (the locks also go when the process ends)."""
    for claim in list(_CLAIMS.values()):
        settle(claim)


def abandon_started_outputs() -> None:
    """After a user error: a folder this run created that holds no checkpoint is removed, so nothing half-made is
    left looking like an output (a folder with checkpoints stays: a rerun resumes from them)."""
    for claim in _CLAIMS.values():
        if os.environ.get("RANK", "0") != "0" or claim.existed or not claim.path.is_dir():
            continue
        if not any(claim.path.glob("checkpoint-*")):
            shutil.rmtree(claim.path, ignore_errors=True)
    release_claims()


def stage_main(main: Callable[P, T]) -> Callable[P, T]:
    """Decorates a recipe's `main`: when it fails, however it was called (console script, pipeline, a user's
    script), the outputs it claimed are given up -- after a user error a folder it created without checkpoints is
    removed; after anything else, or when the stage was already complete, only the lock goes."""

    @functools.wraps(main)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return main(*args, **kwargs)
        except UserError:
            abandon_started_outputs()
            raise
        except BaseException:
            release_claims()
            raise

    return run


def lock_path(output: Path) -> Path:
    """Beside the folder, not in it: a stage that writes its output in place replaces the whole folder."""
    return output.parent / f".{output.name}.lock"


def _take_lock(output: Path) -> IO[str]:
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open while the run lasts)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"output_dir: {output} is in use by another run ({owner}); wait for it to finish or choose another "
                "output_dir"
            ) from None
        # the holder removes the file when it finishes; a lock on a removed file guards nothing, so take a new one
        if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    return handle


def _remove_stale_temporaries(output: Path) -> None:
    beside = re.compile(_TEMPORARY.format(name=re.escape(output.name)))
    places = [(output.parent, beside)]
    if output.is_dir():
        places.append((output, re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")))
    for folder, pattern in places:
        for entry in folder.iterdir():
            if pattern.fullmatch(entry.name):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _nearest_existing_parent(path: Path) -> Path | None:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent if parent.is_dir() else None
    return None


def _can_write_in(folder: Path) -> bool:
    """Try it: permission bits say nothing to root, and a read-only mount says nothing in its bits."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".llm_recipes_write_probe.")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True
