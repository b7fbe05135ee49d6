"""Reading datasets from wherever users keep them: data files, `save_to_disk` folders, or the Hub.

Everything comes back as a `datasets.Dataset`, so the rest of a recipe never cares where the data came from.
A local file that cannot be read whole is a one-line error naming the file and, where there is one, the line:
`datasets` reports broken JSON as a position in a block, reads a cut-short .zst as no rows, and passes bytes that
are not UTF-8 through pyarrow's JSON reader to fail later, deep in a conversion; so when a load fails (or its text
is not valid UTF-8) the file is read again here, line by line, to say where.
"""

from __future__ import annotations

import glob
import json
import lzma
import os
import re
import zlib
from collections.abc import Iterator

import datasets
import fsspec
import pyarrow as pa
import zstandard
from datasets import Dataset, DatasetDict

from llm_recipes.configs import looks_local
from llm_recipes.errors import UserError

# file suffix -> the `datasets` builder that reads it
BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
}
COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")
# what a load of a broken local file raises from inside `datasets`, pyarrow or a decompressor
READ_ERRORS = (datasets.exceptions.DatasetGenerationError, ValueError, OSError, EOFError, StopIteration)


def builder_for(path: str) -> str:
    name = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    for suffix, builder in BUILDERS.items():
        if name.endswith(suffix):
            return builder
    raise UserError(f"cannot tell the format of '{path}' from its name; use one of {', '.join(BUILDERS)}")


def is_saved_dataset(path: str) -> bool:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return os.path.isfile(os.path.join(path, "dataset_info.json")) or os.path.isfile(
        os.path.join(path, "dataset_dict.json")
    )


def load_dataset_source(path: str, split: str = "train", name: str | None = None) -> Dataset:
    """Load one dataset: a file or glob, a `save_to_disk` folder, a folder of data files, or a Hub id."""
    try:
        if looks_local(path):
            return _load_local(os.path.expanduser(path), split)
        return datasets.load_dataset(path, name=name, split=split)
    except UserError:
        raise
    except READ_ERRORS as err:
        cause = err.__cause__ or err
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"could not read dataset '{path}': {first_line}") from None


def load_saved_split(path: str, split: str) -> Dataset:
    """A `save_to_disk` folder: the dataset itself, or the named split of a saved DatasetDict."""
    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise UserError(f"'{path}' has splits {list(loaded)}, not '{split}'")
        return loaded[split]
    return loaded


def _load_local(path: str, split: str) -> Dataset:
    if os.path.isdir(path):
        if is_saved_dataset(path):
            return load_saved_split(path, split)
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(f))
        data_files = [f for f in files if _has_known_suffix(f)]
        if not data_files:
            raise UserError(f"'{path}' holds no data files ({', '.join(BUILDERS)}) and no saved dataset")
        data_files = _split_shards(path, data_files, split) or data_files
    else:
        data_files = sorted(glob.glob(path)) if "*" in path else [path]
        if not data_files:
            raise UserError(f"'{path}' matches no file")
        if not os.path.isfile(data_files[0]):
            raise UserError(f"data file not found: {path}")
    empty = [f for f in data_files if os.path.getsize(f) == 0]
    if empty:
        raise UserError(f"dataset file '{empty[0]}' is empty")
    builders = {builder_for(f) for f in data_files}
    if len(builders) > 1:
        raise UserError(f"'{path}' mixes file formats ({', '.join(sorted(builders))}); point at one kind")
    builder = builders.pop()
    for data_file in data_files:
        _check_whole_stream(data_file)
        if builder == "json":
            _check_not_one_object(data_file)
    try:
        dataset = datasets.load_dataset(builder, data_files=data_files, split="train")
    except READ_ERRORS as err:
        raise UserError(_read_error(path, data_files, builder, err)) from None
    if builder == "json":
        _check_utf8(dataset, data_files)
    return dataset


# The Hub's shard names, which the corpus stage also writes: data/train-00000-of-00004.parquet
SPLIT_SHARD = re.compile(r"^(?P<split>\w+?)-\d{5}-of-\d{5}\.")


def _split_shards(folder: str, data_files: list[str], split: str) -> list[str]:
    """In a folder of split-named shards, the shards of `split` (and nothing else, not even a report file)."""
    by_split: dict[str, list[str]] = {}
    for path in data_files:
        match = SPLIT_SHARD.match(os.path.basename(path))
        if match:
            by_split.setdefault(match["split"], []).append(path)
    if by_split and split not in by_split:
        raise UserError(f"'{folder}' has splits {sorted(by_split)}, not '{split}'")
    return by_split.get(split, [])


def _has_known_suffix(path: str) -> bool:
    try:
        builder_for(path)
    except UserError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Saying what is wrong with a file that did not load


def _read_error(path: str, data_files: list[str], builder: str, err: BaseException) -> str:
    for data_file in data_files:
        problem = _file_problem(data_file, check_json=builder == "json")
        if problem:
            return problem
    cause = err.__cause__ or err
    if isinstance(cause, EOFError) and len(data_files) == 1:
        return _cut_short(data_files[0])
    text = str(cause).strip()
    return f"could not read dataset '{path}': {text.splitlines()[0] if text else type(cause).__name__}"


def _file_problem(data_file: str, check_json: bool = False) -> str | None:
    """The first thing that stops `data_file` from being read whole, as one line naming the file (and line)."""
    if not _zstd_complete(data_file):
        return _cut_short(data_file)
    try:
        return _line_problem(data_file, check_json)
    except EOFError:
        return _cut_short(data_file)
    except (OSError, lzma.LZMAError, zlib.error) as err:
        return f"dataset file '{data_file}' cannot be read ({err})"


def _line_problem(data_file: str, check_json: bool) -> str | None:
    json_list = check_json and _first_byte(data_file) == b"["
    for number, raw in _numbered_lines(data_file):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return (
                f"dataset file '{data_file}' line {number} is not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                f"column {err.start + 1}); save the file as UTF-8"
            )
        if check_json and not json_list and line.strip():
            problem = _json_line_problem(line)
            if problem:
                return f"dataset file '{data_file}' line {number} {problem}"
    if json_list:  # one JSON document: the parser knows the line
        with fsspec.open(data_file, "rt", compression="infer", encoding="utf-8-sig") as handle:
            try:
                json.load(handle)
            except json.JSONDecodeError as err:
                return f"dataset file '{data_file}' line {err.lineno} {_invalid_json(err)}"
    return None


def _numbered_lines(data_file: str) -> Iterator[tuple[int, bytes]]:
    with fsspec.open(data_file, "rb", compression="infer") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw


def _first_byte(data_file: str) -> bytes:
    with fsspec.open(data_file, "rb", compression="infer") as handle:
        return handle.read(4096).lstrip().removeprefix(b"\xef\xbb\xbf")[:1]


def _json_line_problem(line: str) -> str | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return _invalid_json(err)
    if not isinstance(row, dict):
        return f"is a JSON {type(row).__name__}, not an object (one row)"
    return None


def _invalid_json(err: json.JSONDecodeError) -> str:
    reason = err.msg[:1].lower() + err.msg[1:]  # "Unterminated string starting at", "Expecting ',' delimiter"
    return f"is not valid JSON: {reason.removesuffix(' at')} at column {err.colno}"


def _cut_short(data_file: str) -> str:
    return f"dataset file '{data_file}' is cut short: its compressed data ends early (an interrupted download or copy?)"


def _zstd_complete(data_file: str) -> bool:
    """Whether every zstd frame in the file ends. A truncated .zst decompresses without complaint to less data (or to
    nothing, which `datasets` reports as a bare StopIteration), so it is checked before loading."""
    if not data_file.lower().endswith(".zst"):
        return True

    in_frame = False
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    with open(data_file, "rb") as handle:
        while chunk := handle.read(1 << 20):
            while chunk:
                in_frame = True
                try:
                    decompressor.decompress(chunk)
                except zstandard.ZstdError:
                    return False
                if not decompressor.eof:
                    break
                in_frame = False  # a frame ended; what is left over starts the next one
                chunk = decompressor.unused_data
                decompressor = zstandard.ZstdDecompressor().decompressobj()
    return not in_frame


def _check_whole_stream(data_file: str) -> None:
    if not _zstd_complete(data_file):
        raise UserError(_cut_short(data_file))


def _check_not_one_object(data_file: str) -> None:
    """A `.json` file holding one object, not a list: `datasets` would read it as a single row (one preference pair,
    one chat) and train on that. JSON Lines files named `.json` (one object per line) are fine."""
    name = data_file.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    try:
        if not name.endswith(".json") or _first_byte(data_file) != b"{":
            return
    except (EOFError, OSError, lzma.LZMAError, zlib.error):
        return  # unreadable: the load says why
    with fsspec.open(data_file, "rt", compression="infer", encoding="utf-8-sig", errors="replace") as handle:
        first_line = handle.readline()
        try:
            json.loads(first_line)
        except ValueError:
            whole = first_line + handle.read()  # an object spread over lines, or broken JSON (the load says where)
        else:
            if any(line.strip() for line in handle):
                return  # JSON Lines
            whole = first_line
    try:
        value = json.loads(whole)
    except ValueError:
        return
    if isinstance(value, dict):
        lists = [key for key, item in value.items() if isinstance(item, list) and item and isinstance(item[0], dict)]
        lengths = {len(item) if isinstance(item, list) else -1 for item in value.values()}
        hint = ""
        if lists:
            hint = f" (are the rows the list under '{lists[0]}'? save that list alone)"
        elif len(lengths) == 1 and lengths != {-1}:  # {"text": [...], "label": [...]}: `datasets` reads one row
            hint = " (it holds columns, not rows)"
        raise UserError(
            f"dataset file '{data_file}' holds one JSON object, not a list of rows{hint}; write a list "
            "([{...}, {...}]) or one object per line (.jsonl)"
        )


def _check_utf8(dataset: Dataset, data_files: list[str]) -> None:
    """pyarrow's JSON reader keeps bytes that are not UTF-8 inside its strings; they fail only when a row is read.
    A full validation of the loaded table finds them now (one pass in C++), and the file is read to say where."""
    try:
        dataset.data.table.validate(full=True)
    except pa.ArrowInvalid:
        for data_file in data_files:
            problem = _file_problem(data_file)
            if problem:
                raise UserError(problem) from None
        raise UserError(f"dataset files {data_files} hold text that is not UTF-8; save them as UTF-8") from None
