"""Reading raw corpora: every format (plain and compressed), malformed and undecodable records, cache freshness."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from datasets import Dataset, DatasetDict

import llm_recipes.corpus.readers as corpus_io
from llm_recipes.corpus.readers import ReadReport, read_corpus
from llm_recipes.errors import UserError

DOCS = ["First document.", 'Second, with a comma and "quotes".', "Third:\nit spans two lines."]


@pytest.fixture
def read(tmp_path):
    """read_corpus with a cache inside the test's own folder."""

    def read_with_cache(paths, **kwargs):
        return read_corpus(paths, cache_dir=str(tmp_path / "hf-cache"), **kwargs)

    return read_with_cache


def _jsonl(docs, extra=None) -> bytes:
    return "".join(json.dumps({"text": d, **(extra or {})}) + "\n" for d in docs).encode()


def _write(path, data: bytes):
    """Write bytes, compressed the way the file's name says."""
    name = str(path)
    if name.endswith(".gz"):
        data = gzip.compress(data)
    elif name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    elif name.endswith(".bz2"):
        data = bz2.compress(data)
    elif name.endswith(".xz"):
        data = lzma.compress(data)
    path.write_bytes(data)
    return path


def _csv(docs) -> bytes:
    rows = ['"{}",{}'.format(d.replace('"', '""'), i) for i, d in enumerate(docs)]
    return ("text,n\n" + "\n".join(rows) + "\n").encode()


def _parquet(docs) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": docs, "n": list(range(len(docs)))}), sink)
    return sink.getvalue().to_pybytes()


FORMATS = {
    "c.jsonl": _jsonl,
    "c.ndjson": _jsonl,
    "c.json": _jsonl,  # JSON lines under .json
    "array.json": lambda docs: json.dumps([{"text": d} for d in docs], indent=2).encode(),
    "c.csv": _csv,
    "c.parquet": _parquet,
}


@pytest.mark.parametrize("compression", ["", ".gz", ".zst", ".bz2", ".xz"])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_plain_and_compressed(tmp_path, read, name, compression):
    path = _write(tmp_path / (name + compression), FORMATS[name](DOCS))
    dataset, report = read(str(path))
    assert dataset.column_names == ["id", "text", "source"]
    assert dataset["text"] == DOCS
    assert set(dataset["source"]) == {str(path)} and report.sources == [str(path)]
    assert report.documents == 3 and report.malformed == report.empty == report.decode_errors == 0
    ids = [i.removeprefix(f"{path}:") for i in dataset["id"]]
    expected = {"c.csv": ["2", "3", "5"], "c.parquet": ["0", "1", "2"]}.get(name, ["1", "2", "3"])
    assert ids == expected  # csv: the record's last line (a quoted newline spans two); parquet: row index


def test_txt_units(tmp_path, read):
    path = _write(tmp_path / "a.txt.gz", b"one line\r\ntwo line\n\n\n  \npara two, line 1\npara two, line 2\n")
    by_line, report = read(str(path))
    assert by_line["text"] == ["one line", "two line", "para two, line 1", "para two, line 2"]
    assert [i.rsplit(":", 1)[1] for i in by_line["id"]] == ["1", "2", "6", "7"] and report.empty == 3
    by_paragraph, report = read(str(path), txt_unit="paragraph")
    assert by_paragraph["text"] == ["one line\ntwo line", "para two, line 1\npara two, line 2"]
    assert by_paragraph["id"] == [f"{path}:1", f"{path}:2"] and report.empty == 0
    whole, _ = read(str(path), txt_unit="file")
    assert whole["id"] == [str(path)] and whole["text"][0].startswith("one line\r\ntwo line\n\n")


def test_malformed_records_are_counted_with_line_numbers(tmp_path, read):
    lines = [
        '{"text": "good one"}',
        '{"text": broken',
        "[1, 2]",
        '{"body": "no text field"}',
        '{"text": 42}',
        "",  # a blank line between records is not a record
        '{"text": null}',
        '{"text": "good two"}',
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    dataset, report = read(str(path))
    assert dataset["text"] == ["good one", "good two"] and dataset["id"] == [f"{path}:1", f"{path}:8"]
    assert report.malformed == 5
    assert report.malformed_examples == [
        f"{path}:2: not valid JSON (Expecting value at column 10)",
        f"{path}:3: expected a JSON object, got list",
        f"{path}:4: no 'text' field",
        f"{path}:5: 'text' is int, not a string",
        f"{path}:7: 'text' is null",
    ]
    many = tmp_path / "many.jsonl"
    many.write_text("not json\n" * 30 + '{"text": "x"}\n')
    _, report = read(str(many))
    assert report.malformed == 30 and len(report.malformed_examples) == 20 and report.documents == 1


def test_fail_policy_names_file_and_line(tmp_path, read):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "fine"}\n{"body": "x"}\n')
    with pytest.raises(UserError) as caught:
        read(str(path), on_malformed="fail")
    assert str(caught.value) == f"{path}:3: no 'text' field"
    bad_item = tmp_path / "array.json"
    bad_item.write_text(json.dumps([{"text": "a"}, {"text": ["not", "a", "string"]}]))
    with pytest.raises(UserError, match=r"array\.json:2: 'text' is list, not a string$"):
        read(str(bad_item), on_malformed="fail")
    assert read(str(path), on_malformed="skip")[1].malformed == 1  # the failed read left no cache behind


@pytest.mark.parametrize("name", ["latin.txt", "latin.jsonl", "latin.txt.gz", "latin.jsonl.zst"])
def test_undecodable_bytes_are_replaced_and_counted(tmp_path, read, name):
    noise = bytes(random.Random(0).randrange(128, 256) for _ in range(64))
    docs = ["café crème".encode("latin-1"), b"clean ascii", noise + b" tail", "déjà vu".encode()]
    if ".jsonl" in name:
        data = b"".join(b'{"text": "' + d + b'"}\n' for d in docs) + b'{"text": "lone \\ud800 surrogate"}\n'
    else:
        data = b"\n".join(docs) + b"\n"
    dataset, report = read(str(_write(tmp_path / name, data)))
    texts = dataset["text"]
    assert texts[0] == "caf\ufffd cr\ufffdme" and texts[1] == "clean ascii" and texts[3] == "déjà vu"
    assert texts[2].endswith(" tail") and "\ufffd" in texts[2]
    assert report.decode_errors == (3 if ".jsonl" in name else 2) and report.malformed == 0
    assert texts[-1] == "lone \ufffd surrogate" if ".jsonl" in name else len(texts) == 4


def test_empty_documents_are_skipped_and_counted(tmp_path, read):
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n{"text": "  \\n\\t "}\n{"text": "kept"}\n')
    dataset, report = read(str(tmp_path / "e.jsonl"))
    assert dataset["text"] == ["kept"] and report.empty == 2 and report.malformed == 0


def test_byte_order_mark_bad_array_and_nothing_left(tmp_path, read):
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + _jsonl(["after a BOM"]))
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + _csv(["csv after a BOM"]))
    dataset, report = read([str(tmp_path / "bom.jsonl"), str(tmp_path / "bom.csv")])
    assert dataset["text"] == ["csv after a BOM", "after a BOM"] and report.malformed == 0
    (tmp_path / "broken.json").write_text('[\n  {"text": "a"},\n  {"text": "b",\n]')
    for _ in range(2):  # the second read comes from the cache, which holds no rows at all
        dataset, report = read(str(tmp_path / "broken.json"))
        assert len(dataset) == 0 and dataset.column_names == ["id", "text", "source"]
        reason = "not valid JSON (Expecting property name enclosed in double quotes at column 1)"
        assert report.documents == 0 and report.malformed_examples == [f"{tmp_path / 'broken.json'}:4: {reason}"]


def test_glob_and_folder_reads_in_sorted_order(tmp_path, read):
    (tmp_path / "corpus" / "b" / "deep").mkdir(parents=True)
    (tmp_path / "corpus" / ".hidden").mkdir()
    (tmp_path / "corpus" / "b" / "deep" / "z.txt").write_text("z1\nz2\n")
    (tmp_path / "corpus" / "b" / "a.jsonl").write_bytes(_jsonl(["b/a"]))
    (tmp_path / "corpus" / "a.txt").write_text("a1\n")
    (tmp_path / "corpus" / ".hidden" / "x.txt").write_text("hidden\n")
    (tmp_path / "corpus" / "README.md").write_text("not a corpus file\n")
    Dataset.from_list([{"text": "saved"}]).save_to_disk(tmp_path / "corpus" / "saved")
    folder, report = read(str(tmp_path / "corpus"))
    assert folder["text"] == ["a1", "b/a", "z1", "z2", "saved"]
    assert report.documents == 5 and len(report.sources) == 4 and report.malformed == 0
    assert report.sources[-1] == str(tmp_path / "corpus" / "saved")
    everywhere, _ = read(str(tmp_path / "corpus" / "**" / "*.txt"))
    assert everywhere["text"] == ["a1", "z1", "z2"]
    listed, _ = read([str(tmp_path / "corpus" / "b" / "deep" / "z.txt"), str(tmp_path / "corpus" / "a.txt")])
    assert listed["text"] == ["a1", "z1", "z2"]  # sorted by path, whatever order they were given in
    capped, report = read(str(tmp_path / "corpus"), max_documents=2)
    assert capped["text"] == ["a1", "b/a"] and len(report.sources) == 2


def test_save_to_disk_dataset_and_dataset_dict(tmp_path, read):
    Dataset.from_list([{"text": "a", "n": 1}, {"text": None, "n": 2}, {"text": "c", "n": 3}]).save_to_disk(
        tmp_path / "single"
    )
    dataset, report = read(str(tmp_path / "single"))
    assert dataset["text"] == ["a", "c"] and dataset["id"][1] == f"{tmp_path / 'single'}:2"
    assert report.malformed_examples == [f"{tmp_path / 'single'}:1: 'text' is null"]
    splits = DatasetDict({"train": Dataset.from_list([{"body": "t"}]), "test": Dataset.from_list([{"body": "e"}])})
    splits.save_to_disk(tmp_path / "dd")
    dataset, _ = read(str(tmp_path / "dd"), split="test", text_field="body")
    assert dataset["text"] == ["e"]
    with pytest.raises(UserError, match=r"has splits \['train', 'test'\], not 'validation'"):
        read(str(tmp_path / "dd"), split="validation", text_field="body")
    with pytest.raises(UserError, match="has no column 'text' .columns: body.; set text_field"):
        read(str(tmp_path / "dd"))


def test_columnar_files_check_the_text_column(tmp_path, read):
    (tmp_path / "bad.csv").write_text('text,n\n"fine",1\n,2\n"short"\n')
    (tmp_path / "bad.csv").write_text('n,text\n1,"fine"\n2,\n3\n')
    dataset, report = read(str(tmp_path / "bad.csv"))
    assert dataset["text"] == ["fine"] and report.empty == 1
    assert report.malformed_examples == [f"{tmp_path / 'bad.csv'}:4: 1 fields, the header has 2"]
    pq.write_table(pa.table({"text": ["ok", None, "also ok"]}), tmp_path / "nulls.parquet")
    dataset, report = read(str(tmp_path / "nulls.parquet"))
    assert dataset["text"] == ["ok", "also ok"] and report.malformed == 1
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    assert read(str(tmp_path / "ints.parquet"))[1].malformed == 2
    for name in ("bad.csv", "nulls.parquet"):
        with pytest.raises(UserError, match=f"{name}' has no column 'body'"):
            read(str(tmp_path / name), text_field="body")


def test_user_errors_are_one_line(tmp_path, read):
    (tmp_path / "notes.docx").write_text("x")
    (tmp_path / "no_corpus").mkdir()
    (tmp_path / "no_corpus" / "notes.md").write_text("x")
    cases = {
        str(tmp_path / "missing.jsonl"): "corpus file not found",
        str(tmp_path / "*.jsonl"): "matches no file of a known kind",
        str(tmp_path / "no_corpus"): "holds no corpus files",
        str(tmp_path / "notes.docx"): "cannot tell the format",
    }
    for path, message in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            read(path)
        assert "\n" not in str(caught.value)
    whole = gzip.compress(_jsonl(DOCS))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"cut\.jsonl\.gz: cannot read it \(EOFError: "):
        read(str(tmp_path / "cut.jsonl.gz"))
    (tmp_path / "ok.txt").write_text("x\n")
    with pytest.raises(UserError, match="txt_unit: invalid choice 'sentence'"):
        read(str(tmp_path / "ok.txt"), txt_unit="sentence")
    with pytest.raises(UserError, match="on_malformed: invalid choice"):
        read(str(tmp_path / "ok.txt"), on_malformed="ignore")
    with pytest.raises(UserError, match="max_documents: 0 must be >= 1"):
        read(str(tmp_path / "ok.txt"), max_documents=0)


def test_cache_reuses_reports_and_never_serves_stale_data(tmp_path, read):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl(["one", "", "two"]) + b"broken\n")
    first, first_report = read(str(path))
    second, second_report = read(str(path))
    assert second.cache_files == first.cache_files  # the second read came from the cache
    assert (
        second_report
        == first_report
        == ReadReport([str(path)], 2, 1, [f"{path}:4: not valid JSON (Expecting value at column 1)"], 1, 0)
    )
    path.write_bytes(_jsonl(["one", "changed", "three"]))
    third, third_report = read(str(path))
    assert third["text"] == ["one", "changed", "three"] and third_report.malformed == third_report.empty == 0
    for report_file in (tmp_path / "hf-cache" / "corpus_reports").iterdir():
        report_file.unlink()  # a cache without its reports is read again, not trusted
    fourth, fourth_report = read(str(path))
    assert fourth["text"] == third["text"] and fourth_report == third_report


HTML = """<!doctype html><html><head><title>Bees</title><style>body {color: red}</style></head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop navigation link</a></li></ul></nav>
<article><h1>How honey bees keep warm</h1>
<p>In winter a honey bee colony forms a tight cluster inside the hive. The bees in the middle shiver their
flight muscles without moving their wings, which produces heat that keeps the cluster near thirty degrees.</p>
<p>Bees on the outside of the cluster act as insulation, and they slowly rotate with the bees in the warm
centre so that no single bee gets too cold. The colony eats stored honey to fuel all of this shivering.</p>
<p>A strong colony can survive weeks of freezing weather this way, provided it stored enough honey in autumn.</p>
</article>
<footer>Copyright 2024 Example Bee Shop. All rights reserved. Privacy policy. Cookie settings.</footer>
</body></html>"""


def test_html_main_text_extraction(tmp_path, read):
    _write(tmp_path / "page.html.gz", HTML.encode())
    dataset, report = read(str(tmp_path / "page.html.gz"))
    text = dataset["text"][0]
    assert "tight cluster inside the hive" in text and "stored enough honey in autumn" in text
    assert "Shop navigation link" not in text and "Cookie settings" not in text
    assert report.documents == 1 and report.html_fallbacks == 0 and dataset["id"] == [str(tmp_path / "page.html.gz")]
    raw, _ = read(str(tmp_path / "page.html.gz"), html="raw")
    assert raw["text"] == [HTML]
    # a page its script would fill: trafilatura finds no main text, so the tags are stripped instead
    app = "<html><head><title>Loading the app</title><style>p {}</style></head><body><script>render();</script>"
    (tmp_path / "app.htm").write_text(app + "</body></html>")
    fallback, report = read(str(tmp_path / "app.htm"))
    assert fallback["text"] == ["Loading the app"] and report.html_fallbacks == 1
    assert (
        corpus_io.strip_tags("<ul><li>one <b>two</b></li><li>three</li></ul><script>x()</script>") == "one two\nthree"
    )


def test_shared_demo_corpora(shared_data, read):
    c4, report = read(str(shared_data / "c4_demo.jsonl"))
    assert len(c4) == 300 and report.documents == 300 and report.malformed == 0
    assert c4["id"][0] == f"{shared_data / 'c4_demo.jsonl'}:1" and len(c4["text"][0]) > 100
    wiki, report = read(str(shared_data / "wiki_demo.txt"))
    assert len(wiki) == 30 and report.sources == [str(shared_data / "wiki_demo.txt")]
    assert min(len(t) for t in wiki["text"]) > 200


def test_hub_ids_go_to_load_dataset(tmp_path, read, monkeypatch):
    calls = []
    hub_rows = Dataset.from_list([{"content": "hub one"}, {"content": None}, {"content": "hub three"}])

    def fake_load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        # streamed rows as plain dicts: iterating a real IterableDataset would import torch, seconds for nothing
        return iter(hub_rows.to_list()) if streaming else hub_rows

    monkeypatch.setattr(corpus_io.datasets, "load_dataset", fake_load_dataset)
    dataset, report = read("someone/corpus", text_field="content", hub_config="en", split="validation")
    assert calls[0] == ("someone/corpus", "en", "validation", False)
    assert dataset["id"] == ["someone/corpus:0", "someone/corpus:2"] and dataset["source"][0] == "someone/corpus"
    assert report.sources == ["someone/corpus"] and report.malformed_examples == ["someone/corpus:1: 'content' is null"]
    streamed, report = read("corpus", text_field="content", streaming=True, max_documents=1)
    assert calls[-1] == ("corpus", None, "train", True) and streamed["text"] == ["hub one"]
    with pytest.raises(UserError, match="'someone/corpus' has no column 'text'"):
        read("someone/corpus")
