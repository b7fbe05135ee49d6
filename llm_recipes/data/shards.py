"""Tokenized pretraining shards: packed blocks written once as Parquet files with a `shards.json` manifest, then
read as a stream by the pretrain stage (`pretrain/streaming.py`), so a run never tokenizes its corpus at start-up.

Writing is batch by batch: a batch of documents is tokenized (`packing.tokenize_batch`) and packed
(`packing.pack_table`) exactly as the in-memory path does with its 2000-document map batches, so a shard folder
holds the same blocks in the same order as `pack_documents(tokenize_documents(texts))`. `tokenize_and_pack` is the
two as one pure batch function, for a cluster engine (Ray Data `map_batches`) to run over the corpus. Each shard holds
`blocks_per_shard` blocks (the last one fewer) in row groups of at most `ROW_GROUP_BLOCKS`, so a reader holds one
row group at a time and can seek to any block from the Parquet footer alone.

The manifest is written last: a folder with `shards.json` is complete. It records the block size, the packing,
the tokenizer's fingerprint (a reader refuses shards cut by another tokenizer), per-shard block and token counts
and the sources' sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from llm_recipes.data.packing import pack_table, separator_token_id, tokenize_batch
from llm_recipes.errors import UserError

MANIFEST_NAME = "shards.json"
SHARD_FORMAT = "llm-recipes token shards"
SHARD_VERSION = 1
ROW_GROUP_BLOCKS = 256
# Documents tokenized and packed together: the in-memory path's map batch size (`pack_documents`), so both cut the
# same blocks (each batch's last, shorter block is kept, not carried over).
PACK_BATCH_DOCUMENTS = 2000


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what turns text into ids: the fast tokenizer's full definition (vocabulary, merges, normalizer,
    added tokens), or the vocabulary of a slow one, plus the special tokens that begin and end documents."""
    if getattr(tokenizer, "is_fast", False):
        definition = tokenizer.backend_tokenizer.to_str()
    else:
        definition = json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]
    digest = hashlib.sha256(definition.encode("utf-8"))
    digest.update(json.dumps(specials).encode("utf-8"))
    return "sha256:" + digest.hexdigest()


@dataclass
class ShardInfo:
    file: str
    blocks: int
    tokens: int


@dataclass
class ShardManifest:
    """What `shards.json` records about a shard folder."""

    block_size: int
    packing: bool
    separate_documents: bool
    tokenizer: str  # where it was loaded from, as given
    tokenizer_fingerprint: str
    separator_id: int
    documents: int
    shards: list[ShardInfo] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    format: str = SHARD_FORMAT
    version: int = SHARD_VERSION

    @property
    def blocks(self) -> int:
        return sum(shard.blocks for shard in self.shards)

    @property
    def tokens(self) -> int:
        return sum(shard.tokens for shard in self.shards)

    @property
    def columns(self) -> list[str]:
        return ["input_ids", "position_ids"] if self.separate_documents else ["input_ids"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(blocks=self.blocks, tokens=self.tokens, columns=self.columns)
        return data


def is_shard_folder(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(os.path.expanduser(path), MANIFEST_NAME))


def source_facts(path: str) -> dict[str, Any]:
    """A source's identity as far as it is cheap to know: its path and, for local files, size and mtime."""
    expanded = os.path.expanduser(path)
    if os.path.isfile(expanded):
        stat = os.stat(expanded)
        return {"path": path, "bytes": stat.st_size, "modified": int(stat.st_mtime)}
    return {"path": path}


def tokenize_and_pack(
    batch: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    *,
    block_size: int,
    pack: bool = True,
    separate_documents: bool = False,
    text_column: str = "text",
) -> pa.Table:
    """One batch of documents -> its blocks (`input_ids`, and `position_ids` with separate documents): the pure
    batch function of the write, as a cluster engine's `map_batches` would run it."""
    tokenized = tokenize_batch(batch, tokenizer, separator_token_id(tokenizer), text_column)
    documents = pa.table({"input_ids": pa.array(tokenized["input_ids"], type=pa.list_(pa.int32()))})
    return pack_table(documents, block_size, pack=pack, separate_documents=separate_documents)


def _as_written(table: pa.Table) -> pa.Table:
    """Token ids as int32 lists (half of int64; no vocabulary comes near 2**31)."""
    return pa.table({name: table.column(name).cast(pa.list_(pa.int32())) for name in table.column_names})


def new_manifest(
    tokenizer: PreTrainedTokenizerBase,
    *,
    block_size: int,
    pack: bool = True,
    separate_documents: bool = False,
    tokenizer_source: str = "",
    sources: list[dict[str, Any]] | None = None,
) -> ShardManifest:
    """The manifest of a shard folder about to be written: no shards and no documents yet."""
    return ShardManifest(
        block_size=block_size,
        packing=pack,
        separate_documents=separate_documents,
        tokenizer=tokenizer_source,
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        separator_id=separator_token_id(tokenizer),
        documents=0,
        sources=list(sources or []),
    )


class ShardWriter:
    """Blocks, in stream order -> `shard-NNNNN.parquet` files of `blocks_per_shard` blocks each (the last one fewer),
    then `shards.json`. Holds at most one shard's blocks and the last table added; both engines write through it, so
    their folders differ only in the blocks they are given."""

    def __init__(self, output_dir: str | Path, manifest: ShardManifest, blocks_per_shard: int):
        self.output, self.manifest, self.blocks_per_shard = Path(output_dir), manifest, blocks_per_shard
        self.output.mkdir(parents=True, exist_ok=True)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, blocks: pa.Table, documents: int) -> None:
        """The blocks cut from the next `documents` documents."""
        self.manifest.documents += documents
        if blocks.num_rows:
            self.pending.append(blocks)
            self.pending_rows += blocks.num_rows
        while self.pending_rows >= self.blocks_per_shard:
            self._flush(self.blocks_per_shard)

    def finish(self) -> ShardManifest:
        """The last, shorter shard and the manifest (written last: a folder with `shards.json` is complete)."""
        if self.pending_rows:
            self._flush(self.pending_rows)
        if not self.manifest.shards:
            raise UserError("the dataset has no text to tokenize")
        text = json.dumps(self.manifest.to_json(), indent=2) + "\n"
        (self.output / MANIFEST_NAME).write_text(text, encoding="utf-8")
        return self.manifest

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending).combine_chunks()
        shard, rest = table.slice(0, rows), table.slice(rows)
        name = shard_name(len(self.manifest.shards))
        pq.write_table(_as_written(shard), self.output / name, row_group_size=ROW_GROUP_BLOCKS)
        tokens = int(pa.compute.sum(pa.compute.list_value_length(shard.column("input_ids"))).as_py() or 0)
        self.manifest.shards.append(ShardInfo(file=name, blocks=shard.num_rows, tokens=tokens))
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows


def write_token_shards(
    batches: Iterable[dict[str, list]],
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | Path,
    *,
    block_size: int,
    blocks_per_shard: int,
    pack: bool = True,
    separate_documents: bool = False,
    tokenizer_source: str = "",
    sources: list[dict[str, Any]] | None = None,
) -> ShardManifest:
    """Tokenize and pack `batches` of documents (`{"text": [...]}`, `PACK_BATCH_DOCUMENTS` each for blocks equal to
    the in-memory path's) into Parquet shards of `blocks_per_shard` blocks under `output_dir`, manifest last.
    Memory holds one batch and at most one shard's blocks."""
    manifest = new_manifest(
        tokenizer,
        block_size=block_size,
        pack=pack,
        separate_documents=separate_documents,
        tokenizer_source=tokenizer_source,
        sources=sources,
    )
    writer = ShardWriter(output_dir, manifest, blocks_per_shard)
    for batch in batches:
        blocks = tokenize_and_pack(
            batch, tokenizer, block_size=block_size, pack=pack, separate_documents=separate_documents
        )
        writer.add(blocks, len(batch["text"]))
    return writer.finish()


def read_shard_manifest(folder: str | Path) -> ShardManifest:
    """The manifest of a shard folder, checked: the format, and every shard it lists present."""
    folder = Path(folder).expanduser()
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"dataset_path: {folder} has no readable {MANIFEST_NAME} ({type(err).__name__})") from None
    if data.get("format") != SHARD_FORMAT or data.get("version") != SHARD_VERSION:
        raise UserError(
            f"dataset_path: {folder / MANIFEST_NAME} is not a version-{SHARD_VERSION} shard manifest; rerun tokenize"
        )
    try:
        shards = [ShardInfo(**shard) for shard in data["shards"]]
        fields = {name: data[name] for name in ShardManifest.__dataclass_fields__ if name != "shards"}
    except (KeyError, TypeError) as err:
        raise UserError(f"dataset_path: {folder / MANIFEST_NAME} is incomplete ({err}); rerun tokenize") from None
    missing = [shard.file for shard in shards if not (folder / shard.file).is_file()]
    if missing:
        raise UserError(f"dataset_path: {folder} lacks {len(missing)} of its shards ({missing[0]}...); rerun tokenize")
    return ShardManifest(**{**fields, "shards": shards})


def check_shards_match(
    manifest: ShardManifest,
    tokenizer: PreTrainedTokenizerBase | None = None,
    block_size: int | None = None,
    where: str = "dataset_path",
) -> None:
    """Refuse shards the run would misread: cut by another tokenizer (compare it as loaded), or into other blocks
    than it trains on."""
    if tokenizer is not None and manifest.tokenizer_fingerprint != tokenizer_fingerprint(tokenizer):
        raise UserError(
            f"{where}: the shards were tokenized with another tokenizer ({manifest.tokenizer or 'unknown'}) than "
            "this run's; rerun tokenize with this tokenizer"
        )
    if block_size is not None and manifest.block_size != block_size:
        raise UserError(
            f"{where}: the shards hold blocks of {manifest.block_size} tokens but block_size is {block_size}; set "
            f"block_size: {manifest.block_size} or rerun tokenize"
        )


def check_packing_matches(manifest: ShardManifest, packing: bool, separate_documents: bool) -> None:
    if manifest.packing != packing or manifest.separate_documents != separate_documents:
        cut = "unpacked" if not manifest.packing else "separate" if manifest.separate_documents else "cross"
        raise UserError(
            f"dataset_path: the shards were cut with packing {cut} (packing, packing_boundaries); set them as "
            "tokenize did or rerun tokenize"
        )


def read_blocks(path: str | Path, columns: list[str], skip: int = 0) -> Iterator[dict[str, list[int]]]:
    """The blocks of one shard from block `skip` on, one row group in memory at a time; row groups wholly before
    `skip` are never read (their sizes come from the footer)."""
    shard = pq.ParquetFile(path)
    for group in range(shard.metadata.num_row_groups):
        rows = shard.metadata.row_group(group).num_rows
        if skip >= rows:
            skip -= rows
            continue
        table = shard.read_row_group(group, columns=columns).slice(skip)
        skip = 0
        lists = {name: table.column(name).to_pylist() for name in columns}
        for values in zip(*lists.values(), strict=True):
            yield dict(zip(columns, values, strict=True))
