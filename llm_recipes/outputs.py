"""Stage output folders that appear whole or not at all.

A stage writes into a staging folder beside its output and renames it into place when everything is written, so a
crash never leaves a half-written model or tokenizer that looks complete, and a rerun replaces an earlier output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
