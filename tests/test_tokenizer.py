"""Tokenizer training: lossless round trips through AutoTokenizer, special tokens, chat template, BOS, retraining,
the fertility report, and the train-tokenizer recipe end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import DEMO_DATA, PROJECT, write_yaml
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llm_recipes.errors import UserError
from llm_recipes.models.chat import IM_END, IM_START
from llm_recipes.runs.manifest import read_manifest
from llm_recipes.tokenizer.training import (
    ALGORITHMS,
    BOS,
    EOS,
    PAD,
    UNK,
    measure_fertility,
    retrain_tokenizer,
    train_bpe_tokenizer,
    train_tokenizer,
)

SAMPLES = {
    "ascii": "Hello, world! The quick brown fox jumps over 13 lazy dogs.",
    "accented": "Crème brûlée à la française, naïve café in Ærøskøbing",
    "emoji": "Ship it 🚀🎉 👩‍💻 done",
    "cjk": "中文分词测试，日本語のテキスト、한국어 문장",
    "whitespace": "  two  spaces\n\ttab and a trailing space ",
}
TOOL = "<|tool_call|>"


def _load_recipe():
    spec = importlib.util.spec_from_file_location("train_tokenizer_recipe", PROJECT / "recipes" / "train_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECIPE = _load_recipe()


@pytest.fixture(scope="module")
def c4(shared_data) -> list[str]:
    with open(shared_data / "c4_demo.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


@pytest.fixture(scope="module")
def trained(c4) -> dict[str, PreTrainedTokenizerFast]:
    """One chat tokenizer per algorithm, trained with an extra special token and BOS."""
    return {
        algorithm: train_tokenizer(
            c4[:80], 800, algorithm=algorithm, chat=True, special_tokens=[TOOL], add_bos=True, model_max_length=256
        )
        for algorithm in ALGORITHMS
    }


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for algorithm, tokenizer in trained.items():
        folders[algorithm] = tmp_path_factory.mktemp(algorithm)
        tokenizer.save_pretrained(folders[algorithm])
    return folders


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_saved_tokenizer_round_trips_any_text_without_unknowns(saved, trained, algorithm):
    reloaded = AutoTokenizer.from_pretrained(saved[algorithm])
    assert len(reloaded) == 800
    assert reloaded.model_max_length == 256
    for name, text in SAMPLES.items():
        ids = reloaded(text)["input_ids"]
        assert ids == trained[algorithm](text)["input_ids"], name  # saving and loading lose nothing
        assert reloaded.unk_token_id not in ids, name
        assert reloaded.decode(ids, skip_special_tokens=True) == text, name


def test_unigram_spells_unseen_characters_as_bytes(saved):
    tokenizer = AutoTokenizer.from_pretrained(saved["unigram"])
    assert json.loads(tokenizer.backend_tokenizer.to_str())["model"]["byte_fallback"] is True
    rocket = tokenizer.tokenize("🚀")
    assert rocket == ["<0xF0>", "<0x9F>", "<0x9A>", "<0x80>"]  # the UTF-8 bytes of U+1F680
    # a literal byte-token spelling in the text stays text
    assert tokenizer.decode(tokenizer("<0x41>", add_special_tokens=False)["input_ids"]) == "<0x41>"
    assert measure_fertility(tokenizer, [SAMPLES["cjk"], SAMPLES["emoji"]]).unknown_rate == 0.0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_special_tokens_have_fixed_ids_and_are_never_split(saved, algorithm):
    tokenizer = AutoTokenizer.from_pretrained(saved[algorithm])
    expected = {EOS: 0, PAD: 1, BOS: 2, UNK: 3, IM_START: 4, IM_END: 5, TOOL: 6}
    assert tokenizer.convert_tokens_to_ids(list(expected)) == list(expected.values())
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        BOS,
        IM_END,
        PAD,
        UNK,
    )
    ids = tokenizer(f"a{IM_START}user{TOOL}b{EOS}", add_special_tokens=False)["input_ids"]
    assert [i for i in ids if i in expected.values()] == [4, 6, 0]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "auserb"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_chat_template_renders_chatml_and_stops_at_im_end(saved, algorithm):
    tokenizer = AutoTokenizer.from_pretrained(saved[algorithm])
    conversation = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert rendered == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(conversation[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == IM_END


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_add_bos_prepends_bos_only_when_asked(saved, algorithm, c4):
    with_bos = AutoTokenizer.from_pretrained(saved[algorithm])
    assert with_bos("hello")["input_ids"][0] == with_bos.bos_token_id == 2
    assert with_bos("hello", add_special_tokens=False)["input_ids"][0] != 2
    plain = train_tokenizer(c4[:30], 600, algorithm=algorithm)
    assert 2 not in plain("hello world")["input_ids"]
    assert plain.eos_token == EOS and plain.chat_template is None


def test_train_bpe_tokenizer_is_the_bpe_case_of_train_tokenizer(c4):
    old = train_bpe_tokenizer(c4[:30], 600, chat=True)
    new = train_tokenizer(c4[:30], 600, algorithm="bpe", chat=True)
    assert old.get_vocab() == new.get_vocab()
    assert old.eos_token == IM_END and old.chat_template == new.chat_template


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_retrain_keeps_special_tokens_template_and_bos_but_learns_a_new_vocabulary(saved, algorithm, shared_data):
    base = AutoTokenizer.from_pretrained(saved[algorithm])
    wiki = (shared_data / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()[:4]
    retrained = retrain_tokenizer(base, wiki, 900)
    assert len(retrained) == 900
    for token in (EOS, PAD, BOS, UNK, IM_START, IM_END, TOOL):
        assert retrained.convert_tokens_to_ids(token) == base.convert_tokens_to_ids(token), token
    assert retrained.chat_template == base.chat_template
    assert retrained.eos_token == IM_END
    assert retrained("x")["input_ids"][0] == base.bos_token_id
    learned = set(retrained.get_vocab()) - set(base.get_vocab())
    assert len(learned) > 100
    for text in SAMPLES.values():
        ids = retrained(text, add_special_tokens=False)["input_ids"]
        assert retrained.unk_token_id not in ids
        assert retrained.decode(ids) == text


def test_fertility_is_sane_and_a_bigger_vocabulary_costs_fewer_tokens(c4):
    train, heldout = c4[:150], c4[250:]
    small = measure_fertility(train_tokenizer(train, 500), heldout)
    large = measure_fertility(train_tokenizer(train, 4000), heldout)
    for fertility in (small, large):
        assert fertility.documents == 50
        assert fertility.tokens_per_word >= 1
        assert fertility.bytes_per_token > 1
        assert fertility.unknown_rate == 0.0
    assert large.tokens_per_word < small.tokens_per_word * 0.85
    assert large.bytes_per_token > small.bytes_per_token


def test_fertility_arithmetic_on_a_word_level_tokenizer():
    backend = Tokenizer(models.WordLevel({UNK: 0, "a": 1, "bb": 2}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK)
    fertility = measure_fertility(tokenizer, ["a bb c", "dé a"], batch_size=1)
    assert fertility.documents == 2
    assert fertility.tokens_per_word == 1.0
    assert fertility.unknown_rate == 2 / 5  # "c" and "dé"
    assert fertility.bytes_per_token == 11 / 5  # "é" is two UTF-8 bytes
    assert fertility.chars_per_token == 10 / 5


def test_train_tokenizer_rejects_what_it_cannot_do(c4):
    with pytest.raises(UserError, match="algorithm: unknown 'wordpiece'"):
        train_tokenizer(c4[:5], 500, algorithm="wordpiece")
    with pytest.raises(UserError, match="too small for a Unigram vocabulary"):
        train_tokenizer(c4[:50], 300, algorithm="unigram")


# ------------------------------------------------------------------------------------------------------------
# The recipe


def run_recipe(*argv: str) -> dict:
    return RECIPE.main(*RECIPE.parse_args(list(argv)))


def test_recipe_demo_config_writes_a_loadable_tokenizer_and_manifest(tmp_path):
    output = tmp_path / "tok"
    # the demo trains on the clean-corpus demo's output; here on the raw pages it is made from
    raw_pages = "configs/demo/data/raw_corpus.jsonl"
    summary = run_recipe(
        "--config",
        str(PROJECT / "configs/demo/train_tokenizer.yaml"),
        "--output_dir",
        str(output),
        "--dataset_path",
        str(PROJECT / raw_pages),
    )
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert summary["vocabulary"] == len(tokenizer) > 300
    assert summary["documents trained on"] + summary["held-out documents"] == 800  # every page
    assert summary["held-out documents"] == 40
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert summary["tokens per word"] >= 1 and summary["bytes per token"] > 1 and summary["unknown rate"] == 0
    manifest = read_manifest(output)
    assert manifest["stage"] == "train-tokenizer" and manifest["complete"]
    assert manifest["metrics"] == summary
    assert manifest["config"]["script"]["dataset_path"] == str(PROJECT / raw_pages)
    text = "What is 12 plus 13?"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no staging folder left behind

    # a second run replaces the first, here with a Unigram tokenizer and a capped, held-out-free sample
    summary = run_recipe(
        "--config",
        str(PROJECT / "configs/demo/train_tokenizer.yaml"),
        "--output_dir",
        str(output),
        "--dataset_path",
        str(PROJECT / raw_pages),
        "--algorithm",
        "unigram",
        "--vocab_size",
        "400",
        "--heldout_size",
        "0",
        "--max_training_documents",
        "100",
    )
    assert summary["documents trained on"] == 100 and summary["tokens per word"] is None
    assert summary["algorithm"] == "unigram + byte fallback"
    assert json.loads((output / "tokenizer.json").read_text())["model"]["type"] == "Unigram"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_recipe_reads_corpus_stage_outputs(tmp_path, c4, layout):
    from datasets import Dataset

    corpus = Dataset.from_dict({"text": c4[:60], "url": [f"u{i}" for i in range(60)]})
    if layout == "save_to_disk":
        source = tmp_path / "corpus"
        corpus.save_to_disk(source)
    else:
        source = tmp_path / "corpus.parquet"
        corpus.to_parquet(source)
    config = write_yaml(
        tmp_path / "config.yaml",
        {"dataset_path": str(source), "output_dir": str(tmp_path / "tok"), "vocab_size": 700, "heldout_size": 10},
    )
    summary = run_recipe("--config", str(config))
    assert summary["documents trained on"] == 50 and summary["held-out documents"] == 10
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").vocab_size == 700


def test_recipe_reads_one_document_per_line_and_retrains_a_base_tokenizer(tmp_path, shared_data, saved):
    wiki = str(shared_data / "wiki_demo.txt")
    summary = run_recipe(
        "--dataset_path", wiki, "--output_dir", str(tmp_path / "tok"), "--vocab_size", "1000",
        "--max_training_documents", "6", "--base_tokenizer", str(saved["bpe"]),
    )  # fmt: skip
    assert summary["documents trained on"] == 6 and summary["held-out documents"] == 2  # 5% of 30, rounded up
    assert summary["chat template"] is True  # kept from the base tokenizer
    retrained = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert retrained.convert_tokens_to_ids(TOOL) == 6 and len(retrained) == 1000


def _config_error(tmp_path, **overrides) -> str:
    config = {"dataset_path": str(DEMO_DATA / "arithmetic_alpaca.jsonl"), "output_dir": str(tmp_path / "out")}
    config.update(overrides)
    config = {key: value for key, value in config.items() if value is not None}
    with pytest.raises(UserError) as caught:
        run_recipe("--config", str(write_yaml(tmp_path / "config.yaml", config)))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_recipe_config_errors_are_one_line_and_leave_nothing_behind(tmp_path):
    assert "invalid choice 'wordpiece'" in _config_error(tmp_path, algorithm="wordpiece")
    assert "dataset_path is required" in _config_error(tmp_path, dataset_path=None)
    assert "file not found" in _config_error(tmp_path, dataset_path=str(tmp_path / "missing.jsonl"))
    assert "vocab_size: 100 must be >= 300" in _config_error(tmp_path, vocab_size=100)
    assert "heldout_size" in _config_error(tmp_path, heldout_size=-1)
    assert "base_tokenizer: folder not found" in _config_error(tmp_path, base_tokenizer=str(tmp_path / "nope"))
    assert "base_tokenizer keeps its own" in _config_error(tmp_path, base_tokenizer=str(tmp_path), chat_template=True)
    assert "would leave none" in _config_error(tmp_path, heldout_size=400)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    assert "not a tokenizer folder" in _config_error(tmp_path, output_dir=str(tmp_path / "precious"))
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "precious"]


def test_a_failed_run_keeps_the_previous_tokenizer(tmp_path):
    output = tmp_path / "tok"
    data = tmp_path / "hanzi.txt"  # 200 distinct characters: more than a 300-token Unigram vocabulary can hold
    data.write_text("\n".join("".join(map(chr, range(0x4E00 + i, 0x4E00 + 200, 7))) for i in range(7)) + "\n")
    run_recipe("--dataset_path", str(data), "--output_dir", str(output), "--vocab_size", "500")
    before = (output / "tokenizer.json").read_text()
    with pytest.raises(UserError, match="too small for a Unigram"):
        run_recipe(
            "--dataset_path", str(data), "--output_dir", str(output), "--algorithm", "unigram", "--vocab_size", "300"
        )  # fmt: skip
    assert (output / "tokenizer.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hanzi.txt", "tok"]
