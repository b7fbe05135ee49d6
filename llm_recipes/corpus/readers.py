"""Reading raw text corpora (files, globs, folders, `save_to_disk` folders, Hub ids) into `id`/`text`/`source` rows.

Why our own reader rather than `datasets.load_dataset("json", ...)`: raw corpora are messy, and the builders fail a
whole file on one bad line or one undecodable byte. Here each record is judged on its own: a malformed one is
counted and named as `path:line: reason` (or, with `on_malformed="fail"`, raised as a `UserError`), bad bytes are
replaced and counted, empty documents are skipped and counted. Rows are still written by `Dataset.from_generator`,
so a large corpus streams to Arrow on disk instead of piling up in Python lists.

Caching: the fingerprint is ours, made from each input's path, size and mtime_ns, the options and this module's
source, so a changed file is never served stale. The generator writes its `ReadReport` into the cache folder under
that fingerprint, so a read served from cache reports exactly what the first read found.

Ids: `path:line` for .txt lines, JSON lines and .csv (a record's last line); `path:n` (1-based) for the nth .txt
paragraph or JSON array item; `path` for whole .txt/.html files; `path:row` (0-based) for parquet, saved datasets
and Hub datasets.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, NamedTuple

import datasets
import lxml.etree
import lxml.html
import pyarrow.parquet as pq
import trafilatura
import zstandard
from datasets import Dataset, Features, Value

from llm_recipes.configs import looks_local
from llm_recipes.data.io import COMPRESSION_SUFFIXES, is_saved_dataset, load_saved_split
from llm_recipes.errors import UserError

TXT_UNITS = ("line", "file", "paragraph")
MALFORMED_POLICIES = ("skip", "fail")
HTML_MODES = ("extract", "raw")
SUFFIX_KINDS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
SUFFIX_KINDS.update({".csv": "csv", ".html": "html", ".htm": "html"})
MAX_MALFORMED_EXAMPLES = 20
FEATURES = Features({"id": Value("string"), "text": Value("string"), "source": Value("string")})
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
_BLOCK_TAGS = ("p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "title", "pre")
_BOM = b"\xef\xbb\xbf"
_NOT_ESCAPED_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")  # surrogates that surrogateescape never makes


@dataclass
class ReadReport:
    sources: list[str] = field(default_factory=list)
    documents: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    empty: int = 0
    decode_errors: int = 0
    html_fallbacks: int = 0  # pages where trafilatura found no main text, so all tags were stripped instead

    def as_dict(self) -> dict:
        return asdict(self)


class Record(NamedTuple):
    where: str  # line, row or item number; "" for a whole-file document
    value: Any  # the text, or whatever the record holds in its place
    problem: str | None = None  # why the record is malformed
    replaced: bool = False  # the reader already replaced undecodable bytes


def read_corpus(
    paths: str | Sequence[str],
    *,
    text_field: str = "text",
    txt_unit: str = "line",
    on_malformed: str = "skip",
    split: str = "train",
    hub_config: str | None = None,
    streaming: bool = False,
    max_documents: int | None = None,
    html: str = "extract",
    cache_dir: str | None = None,
) -> tuple[Dataset, ReadReport]:
    """Read raw text sources into a Dataset with columns `id`, `text`, `source`, and report what was dropped."""
    choices_of = {"txt_unit": (txt_unit, TXT_UNITS), "on_malformed": (on_malformed, MALFORMED_POLICIES)}
    for name, (value, choices) in {**choices_of, "html": (html, HTML_MODES)}.items():
        if value not in choices:
            raise UserError(f"{name}: invalid choice {value!r} (choose from {', '.join(choices)})")
    if max_documents is not None and max_documents < 1:
        raise UserError(f"max_documents: {max_documents!r} must be >= 1")
    options = dict(text_field=text_field, txt_unit=txt_unit, on_malformed=on_malformed, split=split, html=html)
    options.update(hub_config=hub_config, streaming=streaming, max_documents=max_documents)
    sources = plan_sources([paths] if isinstance(paths, str) else list(paths), options)

    fingerprint = hashlib.sha256(json.dumps([_code_hash(), sources, options], sort_keys=True).encode()).hexdigest()
    report_path = os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE, "corpus_reports", fingerprint + ".json")
    # one dict argument: `from_generator` would call the generator once per item of a list argument
    plan = {"plan": {"sources": sources, "options": options, "report_path": report_path}}
    dataset = _build(plan, fingerprint, cache_dir)
    if not os.path.isfile(report_path):  # served from cache, but its report was deleted: read everything again
        dataset = _build(plan, f"{fingerprint}-{os.urandom(4).hex()}", cache_dir)
    with open(report_path, encoding="utf-8") as f:
        report = ReadReport(**json.load(f))
    if dataset is None:
        dataset = Dataset.from_dict({column: [] for column in FEATURES}, features=FEATURES)
    return dataset, report


def _build(plan: dict, fingerprint: str, cache_dir: str | None) -> Dataset | None:
    """The documents, or None when there were none (`datasets` cannot build an empty split)."""
    try:
        return Dataset.from_generator(
            generate_documents, features=FEATURES, cache_dir=cache_dir, gen_kwargs=plan, fingerprint=fingerprint
        )
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise
    except ValueError:  # "Instruction 'train' corresponds to no data!"
        report_path = plan["plan"]["report_path"]
        if os.path.isfile(report_path):
            with open(report_path, encoding="utf-8") as f:
                if json.load(f)["documents"] == 0:
                    return None
        raise


# --------------------------------------------------------------------------------------------------------------
# Which sources the paths name, and what identifies their content for the cache fingerprint


def plan_sources(paths: list[str], options: dict) -> list[dict]:
    """Local files and saved datasets in sorted path order, then Hub ids in the order given."""
    local: dict[str, dict] = {}
    hub = []
    for path in paths:
        if looks_local(path) or _kind_of(path):  # looks_local does not know .html, .ndjson, .bz2, .xz
            for source in _local_sources(os.path.expanduser(path)):
                local.setdefault(os.path.normpath(source["path"]), source)
        elif _HUB_ID.match(path):
            hub.append(_hub_source(path, options))
        else:
            raise UserError(f"'{path}' is neither an existing path nor a Hub dataset id (owner/name)")
    for source in local.values():
        files = [source["path"]]
        if source["kind"] == "saved":
            dataset = load_saved_split(source["path"], options["split"])
            _check_column(source["path"], options["text_field"], dataset.column_names)
            files = sorted(os.path.join(root, f) for root, _, names in os.walk(source["path"]) for f in names)
        source["stat"] = [(os.path.abspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    return sorted(local.values(), key=lambda source: source["path"]) + hub


def _local_sources(path: str) -> list[dict]:
    known = ", ".join(SUFFIX_KINDS)
    if any(char in path for char in "*?["):
        sources = []
        for match in sorted(glob.glob(path, recursive=True)):
            if os.path.isdir(match):
                sources += _folder_sources(match)
            elif _kind_of(match) and not _inside_saved_dataset(match):
                sources.append({"kind": _kind_of(match), "path": match})
        if not sources:
            raise UserError(f"'{path}' matches no file of a known kind ({known})")
        return sources
    if os.path.isdir(path):
        sources = _folder_sources(path)
        if not sources:
            raise UserError(f"folder '{path}' holds no corpus files ({known}) and is no saved dataset")
        return sources
    if not os.path.isfile(path):
        raise UserError(f"corpus file not found: {path}")
    if not _kind_of(path):
        raise UserError(f"cannot tell the format of '{path}' from its name; use one of {known}")
    return [{"kind": _kind_of(path), "path": path}]


def _folder_sources(folder: str) -> list[dict]:
    """Known files anywhere under a folder, a saved dataset as one source; hidden files and folders left out."""
    if is_saved_dataset(folder):
        return [{"kind": "saved", "path": folder}]
    sources = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for saved in [d for d in dirs if is_saved_dataset(os.path.join(root, d))]:
            sources.append({"kind": "saved", "path": os.path.join(root, saved)})
            dirs.remove(saved)
        sources += [{"kind": _kind_of(f), "path": os.path.join(root, f)} for f in files if _kind_of(f)]
    return sources


def _kind_of(path: str) -> str | None:
    name = os.path.basename(path).lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    if name.startswith("."):
        return None
    return next((kind for suffix, kind in SUFFIX_KINDS.items() if name.endswith(suffix)), None)


def _inside_saved_dataset(path: str) -> bool:
    """The metadata .json of a saved dataset (or of one of its splits), which a glob may match."""
    folders = (os.path.dirname(path), os.path.dirname(os.path.dirname(path)))
    return os.path.basename(path) in _SAVED_DATASET_FILES and any(map(is_saved_dataset, folders))


def _hub_source(hub_id: str, options: dict) -> dict:
    source = {"kind": "hub", "path": hub_id}
    if not options["streaming"]:  # a streamed read is cached on (id, config, split, max_documents) alone
        dataset = _load_hub(hub_id, options)
        _check_column(hub_id, options["text_field"], dataset.column_names)
        source["fingerprint"] = dataset._fingerprint
    return source


def _load_hub(hub_id: str, options: dict) -> Dataset | datasets.IterableDataset:
    try:
        return datasets.load_dataset(
            hub_id, options["hub_config"], split=options["split"], streaming=options["streaming"]
        )
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
        cause = err.__cause__ or err
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"could not load Hub dataset '{hub_id}': {first_line}") from None


def _check_column(where: str, column: str, columns: Sequence[str]) -> None:
    if column not in columns:
        raise UserError(f"'{where}' has no column '{column}' (columns: {', '.join(columns)}); set text_field")


@cache
def _code_hash() -> str:
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# The generator: records from every source, judged the same way whatever their format


def generate_documents(plan: dict) -> Iterator[dict]:
    report, options, limit = ReadReport(), plan["options"], plan["options"]["max_documents"]
    for source in plan["sources"]:
        if limit is not None and report.documents >= limit:
            break
        yield from read_source(source, options, report, None if limit is None else limit - report.documents)
    os.makedirs(os.path.dirname(plan["report_path"]), exist_ok=True)
    partial = f"{plan['report_path']}.{os.getpid()}.tmp"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(report.as_dict(), f)
    os.replace(partial, plan["report_path"])  # whole or absent, even with several processes reading


def read_source(source: dict, options: dict, report: ReadReport, limit: int | None = None) -> Iterator[dict]:
    """The `id`/`text`/`source` documents of one planned source, each record judged by `_judge` and counted in
    `report`, at most `limit` of them. The one reading path of both engines: `generate_documents` runs it source
    after source, the Ray engine one source per task."""
    name, start = source["path"], report.documents
    report.sources.append(name)
    try:
        for record in READERS[source["kind"]](name, options, report):
            text = _judge(name, record, options, report)
            if text is not None:
                yield {"id": f"{name}:{record.where}" if record.where else name, "text": text, "source": name}
                if limit is not None and report.documents - start >= limit:
                    break
    except UserError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        lzma.LZMAError,
        zstandard.ZstdError,
    ) as err:  # a truncated or corrupt file
        raise UserError(f"{name}: cannot read it ({type(err).__name__}: {err})") from err


def _judge(name: str, record: Record, options: dict, report: ReadReport) -> str | None:
    """The record's text if it makes a document; counts (or raises for) everything that does not."""
    problem, value, column = record.problem, record.value, options["text_field"]
    if problem is None and not isinstance(value, str):
        problem = f"'{column}' is null" if value is None else f"'{column}' is {type(value).__name__}, not a string"
    if problem is not None:
        where = f"{name}:{record.where or 1}: {problem}"
        if options["on_malformed"] == "fail":
            raise UserError(where)
        report.malformed += 1
        if len(report.malformed_examples) < MAX_MALFORMED_EXAMPLES:
            report.malformed_examples.append(where)
        return None
    text, replaced = repair_text(value)
    if not text.strip():
        report.empty += 1
        return None
    report.documents += 1
    report.decode_errors += replaced or record.replaced
    return text


def repair_text(text: str) -> tuple[str, bool]:
    """Undecodable bytes (kept as surrogate escapes) and lone surrogates (JSON "\\ud800") become U+FFFD."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        text = _NOT_ESCAPED_BYTE.sub("\ufffd", text)
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), True


def _decode(raw: bytes) -> str:
    # surrogateescape keeps bad bytes as they are until repair_text replaces and counts them, per document
    return raw.decode("utf-8", "surrogateescape")


@contextmanager
def open_binary(path: str) -> Iterator[io.BufferedIOBase]:
    """A file's bytes, decompressed as a stream when its name ends in .gz, .zst, .bz2 or .xz."""
    name = path.lower()
    if name.endswith(".zst"):
        reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True)  # noqa: SIM115
        with io.BufferedReader(reader) as stream:  # closing it closes the reader and the file
            yield stream
        return
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(os.path.splitext(name)[1], open)
    with opener(path, "rb") as stream:
        yield stream


def _lines(stream: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its ending); a UTF-8 byte-order mark is dropped."""
    for number, line in enumerate(stream, start=1):
        if number == 1:
            line = line.removeprefix(_BOM)
        yield number, line.removesuffix(b"\n").removesuffix(b"\r")


def read_txt(path: str, options: dict, report: ReadReport) -> Iterator[Record]:
    with open_binary(path) as stream:
        if options["txt_unit"] == "file":
            yield Record("", _decode(stream.read().removeprefix(_BOM)))
        elif options["txt_unit"] == "line":
            for number, line in _lines(stream):
                yield Record(str(number), _decode(line))
        else:
            paragraph: list[bytes] = []
            count = 0
            for _, line in itertools.chain(_lines(stream), [(0, b"")]):  # the blank line at the end flushes
                if line.strip():
                    paragraph.append(line)
                elif paragraph:
                    count += 1
                    yield Record(str(count), _decode(b"\n".join(paragraph)))
                    paragraph = []


def read_json_lines(path: str, options: dict, report: ReadReport) -> Iterator[Record]:
    with open_binary(path) as stream:
        for number, line in _lines(stream):
            if line.strip():  # blank lines between records are not records
                try:
                    parsed = json.loads(_decode(line))
                except json.JSONDecodeError as err:
                    yield Record(str(number), None, f"not valid JSON ({err.msg} at column {err.colno})")
                    continue
                yield _object_record(str(number), parsed, options["text_field"])


def _object_record(where: str, item: Any, column: str) -> Record:
    if not isinstance(item, dict):
        return Record(where, None, f"expected a JSON object, got {type(item).__name__}")
    if column not in item:
        return Record(where, None, f"no '{column}' field")
    return Record(where, item[column])


def read_json(path: str, options: dict, report: ReadReport) -> Iterator[Record]:
    """A .json file holding one array of objects (read whole: arrays are for small files), or JSON lines."""
    with open_binary(path) as stream:
        head = stream.read(4096).removeprefix(_BOM).lstrip()
        is_array = head.startswith(b"[")
        if is_array:
            raw = head + stream.read()
    if not is_array:
        yield from read_json_lines(path, options, report)
        return
    try:
        items = json.loads(_decode(raw))
    except json.JSONDecodeError as err:
        yield Record(str(err.lineno), None, f"not valid JSON ({err.msg} at column {err.colno})")
        return
    for number, item in enumerate(items, start=1):
        yield _object_record(str(number), item, options["text_field"])


def read_csv(path: str, options: dict, report: ReadReport) -> Iterator[Record]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # documents outgrow csv's 128 KiB default
    with open_binary(path) as stream:
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline=""))
        header = next(reader, None) or []
        _check_column(path, options["text_field"], header)
        at = header.index(options["text_field"])
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield Record(str(reader.line_num), None, f"bad CSV ({err})")
                continue
            if len(row) > at:
                yield Record(str(reader.line_num), row[at])
            elif row:  # csv gives [] for a blank line
                yield Record(str(reader.line_num), None, f"{len(row)} fields, the header has {len(header)}")


def read_parquet(path: str, options: dict, report: ReadReport) -> Iterator[Record]:
    with open_binary(path) as stream:
        # parquet must seek, which a decompressing stream cannot: a compressed file is read into memory
        parquet = pq.ParquetFile(io.BytesIO(stream.read()) if path.lower().endswith(COMPRESSION_SUFFIXES) else stream)
        _check_column(path, options["text_field"], parquet.schema_arrow.names)
        batches = parquet.iter_batches(columns=[options["text_field"]])
        yield from _column_records(batch.column(0).to_pylist() for batch in batches)


def _column_records(batches: Iterable[list]) -> Iterator[Record]:
    rows = itertools.count()
    for values in batches:
        for value in values:
            yield Record(str(next(rows)), value)


def read_html(path: str, options: dict, report: ReadReport) -> Iterator[Record]:
    with open_binary(path) as stream:
        page, replaced = repair_text(_decode(stream.read().removeprefix(_BOM)))
    text = page
    if options["html"] == "extract" and page.strip():
        text = trafilatura.extract(page, include_comments=False, include_tables=True, favor_recall=True)
        if not text or not text.strip():
            report.html_fallbacks += 1
            text = strip_tags(page)
    yield Record("", text, replaced=replaced)


def strip_tags(page: str) -> str:
    """All visible text of a page (no scripts or styles), one line per non-blank line."""
    try:
        tree = lxml.html.fromstring(page)
    except (lxml.etree.ParserError, ValueError):
        return ""
    for element in tree.xpath("//script|//style|//noscript"):
        element.drop_tree()
    for element in tree.iter(*_BLOCK_TAGS):  # so "<li>one</li><li>two</li>" stays two lines, not "onetwo"
        element.tail = "\n" + (element.tail or "")
    lines = (" ".join(line.split()) for line in tree.text_content().splitlines())
    return "\n".join(line for line in lines if line)


def read_saved(path: str, options: dict, report: ReadReport) -> Iterator[Record]:
    dataset = load_saved_split(path, options["split"]).select_columns([options["text_field"]])
    yield from _column_records(batch[options["text_field"]] for batch in dataset.iter(batch_size=1000))


def read_hub(hub_id: str, options: dict, report: ReadReport) -> Iterator[Record]:
    column, dataset = options["text_field"], _load_hub(hub_id, options)
    if not options["streaming"]:
        yield from _column_records(batch[column] for batch in dataset.select_columns([column]).iter(batch_size=1000))
        return
    for row, example in enumerate(dataset):
        _check_column(hub_id, column, list(example))
        yield Record(str(row), example[column])


READERS = {"txt": read_txt, "jsonl": read_json_lines, "json": read_json, "csv": read_csv, "parquet": read_parquet}
READERS.update({"html": read_html, "saved": read_saved, "hub": read_hub})
