"""Language-aware quality filters: words per language, per-language thresholds, the language flowing from the
language step to later filters, the calibration warning, and survival per language on our own multilingual pages
(tests/data/multilingual_pages.jsonl: 16 manual and web pages in each of en, de, fr, ja, zh, written for this
test, plus five kinds of spam per language)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import datasets
import pytest
import yaml
from conftest import PROJECT, write_yaml

from llm_recipes.corpus.filters import (
    C4Filter,
    Document,
    FilterBatch,
    FineWebFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    build_filters,
    calibration_warning,
    segmenter_for,
)
from llm_recipes.corpus.steps import build_steps, language_calibration_warning, run_steps
from llm_recipes.errors import UserError

PAGES = PROJECT / "tests" / "data" / "multilingual_pages.jsonl"
LANGUAGES = ["en", "de", "fr", "ja", "zh"]
QUALITY_STEPS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
STAGE_STEPS = [{"language": {"languages": LANGUAGES}}, *QUALITY_STEPS]

ZH = "我们在北京大学学习自然语言处理。"
JA = "東京都に住んでいる外国人について、私は考えた。"


@pytest.fixture(scope="module")
def pages() -> list[dict]:
    return [json.loads(line) for line in PAGES.read_text(encoding="utf-8").splitlines()]


def page_text(pages: list[dict], lang: str, topic: str = "backup") -> str:
    return next(p["text"] for p in pages if p["lang"] == lang and p["topic"] == topic)


def survival(pages: list[dict], kept_ids: set[int]) -> dict[str, float]:
    """Share of each language's prose pages kept (ids are 1-based line numbers, as the JSON lines reader gives)."""
    kept, total = Counter(), Counter()
    for number, page in enumerate(pages, start=1):
        if page["kind"] == "prose":
            total[page["lang"]] += 1
            kept[page["lang"]] += number in kept_ids
    return {lang: kept[lang] / total[lang] for lang in LANGUAGES}


def spam_ids(pages: list[dict]) -> set[int]:
    return {number for number, page in enumerate(pages, start=1) if page["kind"] == "spam"}


# ----------------------------------------------------------------------------------------------------------- words


def test_words_are_cut_by_the_documents_language():
    assert Document(ZH).words == ["我们在北京大学学习自然语言处理"]  # no spaces: one "word" without a language
    assert Document(ZH, {"language": "zh"}).words == ["我们", "在", "北京大学", "学习", "自然语言", "处理"]
    assert Document(ZH, {"language": "zh"}).symbols == 1  # "。" counts against the share of words with a letter
    ja = Document(JA, {"language": "ja"})
    assert ja.words == [
        "東京",
        "都",
        "に",
        "住ん",
        "で",
        "いる",
        "外国",
        "人",
        "に",
        "つい",
        "て",
        "私",
        "は",
        "考え",
        "た",
    ]
    assert ja.symbols == 2
    fr = Document("L'homme qu'on aime est aujourd'hui à l’école.", {"language": "fr"})
    assert fr.words == ["L'", "homme", "qu'", "on", "aime", "est", "aujourd'hui", "à", "l’", "école"]
    # English (and no language) keeps the word runs it always had
    english = ["Don't", "stop", "at", "3.14", "e-mail", "me"]
    assert Document("Don't stop at 3.14, e-mail me!", {"language": "en"}).words == english


def test_language_set_later_recomputes_the_words():
    doc = Document(ZH)
    assert len(doc.words) == 1
    doc.set_language("zh", 0.9)
    assert len(doc.words) == 6 and doc.metadata["language_score"] == 0.9


def test_japanese_longer_than_sudachis_input_limit_is_cut_in_chunks(pages):
    page = page_text(pages, "ja")
    one = len(segmenter_for("ja").words(page))
    long_text = "\n".join([page] * 60)  # ~25,000 characters, ~70 KB: Sudachi alone refuses over 49,149 bytes
    assert len(segmenter_for("ja").words(long_text)) == 60 * one


# ------------------------------------------------------------------------------------------------------ thresholds


def test_published_thresholds_apply_per_language_and_config_options_win():
    gopher = GopherQualityFilter()
    assert gopher.for_language("en") is gopher and gopher.for_language(None) is gopher
    assert gopher.for_language("ko") is gopher  # no published values: the English ones
    zh = gopher.for_language("zh-Hans")
    assert (zh.min_avg_word_length, zh.max_avg_word_length, zh.min_alpha_words_ratio) == (1, 5, 0.735)
    assert "的" in zh.stop_words and zh.min_doc_words == 50
    assert gopher.for_language("zh") is zh  # built once
    assert GopherRepetitionFilter().for_language("ja").top_n_grams == ((2, 0.121), (3, 0.129), (4, 0.145))
    assert FineWebFilter().for_language("de").line_punct_thr == 0.0
    assert C4Filter().for_language("de") is not None and C4Filter().calibrated_languages() == {"en"}

    # an option the config sets holds for every language; language_thresholds sets one language's
    mine = GopherQualityFilter(max_avg_word_length=12, language_thresholds={"zh": {"min_doc_words": 30}})
    assert mine.for_language("de").max_avg_word_length == 12
    assert mine.for_language("de").min_alpha_words_ratio == 0.774
    assert (mine.for_language("zh").min_doc_words, mine.for_language("zh").max_avg_word_length) == (30, 12)
    assert mine.for_language("en").min_doc_words == 50
    assert "ko" in GopherQualityFilter(language_thresholds={"ko": {"min_doc_words": 40}}).calibrated_languages()


def test_language_thresholds_errors_are_config_errors():
    with pytest.raises(UserError, match="gopher_quality thresholds for zh: .*min_doc_wrds"):
        GopherQualityFilter(language_thresholds={"zh": {"min_doc_wrds": 30}})
    with pytest.raises(UserError, match="must be between 0 and 1"):
        FineWebFilter(language_thresholds={"ja": {"line_punct_thr": 3}})
    with pytest.raises(UserError, match=r"language_thresholds\[zh\]: expected"):
        build_filters([{"c4": {"language_thresholds": {"zh": 5}}}])


def test_stop_words_match_elided_forms_with_either_apostrophe():
    text = " ".join(["L’arbre", "d’olivier"] + [f"mot{i}x" for i in range(60)]) + "."
    gopher = GopherQualityFilter(min_avg_word_length=None, max_avg_word_length=None)
    assert gopher.check(Document(text, {"language": "fr"})) is None
    assert gopher.check(Document(text)) == "gopher_quality:stop_words"


# ------------------------------------------------------------------------------------------- language flow, batch


def test_later_filter_steps_read_the_language_column(pages):
    text = page_text(pages, "zh")
    assert FilterBatch(["gopher_quality"])({"text": [text]})["drop_reason"] == ["gopher_quality:min_doc_words"]
    out = FilterBatch(["gopher_quality"])({"text": [text], "language": ["zh"]})
    assert out == {"text": [text], "drop_reason": [None]}  # the language column passes through untouched


def test_language_filter_in_the_same_step_sets_the_words_for_the_filters_after_it(pages):
    texts = [page_text(pages, lang) for lang in LANGUAGES]
    batch = FilterBatch([{"length": {"min_words": 5}}, {"language": {"languages": LANGUAGES}}, "gopher"])
    out = batch({"text": texts})
    assert out["drop_reason"] == [None] * 5
    assert out["language"] == LANGUAGES


def test_calibration_warning_names_each_filter_and_its_uncalibrated_languages():
    steps = [{"language": {"languages": ["en", "de", "ko"]}}, "gopher", "c4", {"length": {"min_words": 5}}]
    assert calibration_warning(build_filters(steps)) == (
        "warning: no per-language thresholds for gopher_quality (ko); gopher_repetition (ko); c4 (de, ko): the "
        "English ones apply to those languages (a filter's language_thresholds sets them)"
    )
    # English only, filters before the language step, or thresholds the config gives: nothing to say
    assert calibration_warning(build_filters([{"language": {"languages": ["en"]}}, "gopher", "c4"])) is None
    assert calibration_warning(build_filters(["c4", {"language": {"languages": ["de"]}}])) is None
    given = {"c4": {"language_thresholds": {"de": {"min_num_sentences": 3}}}}
    assert calibration_warning(build_filters([{"language": {"languages": ["de"]}}, given])) is None
    # a language step that keeps everything lets all its candidates through
    keep_all = build_filters([{"language": {"languages": None, "candidates": ["en", "ja", "ko"]}}, "fineweb"])
    assert calibration_warning(keep_all).startswith("warning: no per-language thresholds for fineweb (ko):")
    # the demo pipeline (English only) stays quiet
    demo = yaml.safe_load((PROJECT / "configs" / "demo" / "clean_corpus.yaml").read_text(encoding="utf-8"))
    assert language_calibration_warning(build_steps(demo["steps"])) is None


# ------------------------------------------------------------------------------------ survival on the fixture pages


def test_every_kept_language_survives_like_english_and_spam_is_still_dropped(pages):
    """The stage's own path (steps over a Dataset, the language column flowing between steps)."""
    ds = datasets.Dataset.from_list([{"id": str(n), "text": p["text"]} for n, p in enumerate(pages, start=1)])
    kept, stats = run_steps(ds, build_steps(STAGE_STEPS), batch_size=16)
    kept_ids = {int(i) for i in kept["id"]}
    rates = survival(pages, kept_ids)
    assert rates["en"] >= 0.9, rates
    for lang in LANGUAGES:
        assert abs(rates[lang] - rates["en"]) <= 0.2, rates
    assert not kept_ids & spam_ids(pages)
    # the spam that language id passes is dropped by the quality rules, in every language
    language_drops = sum(stats[0].drop_reasons.values())
    assert language_drops <= 1  # the English price table, with too few words to tell its language
    # the same quality steps without the language step: Chinese and Japanese pages are all lost, as before
    without, _ = run_steps(ds, build_steps(QUALITY_STEPS), batch_size=16)
    before = survival(pages, {int(i) for i in without["id"]})
    assert before["zh"] == before["ja"] == 0.0 and before["en"] == rates["en"]


@pytest.mark.slow
def test_clean_corpus_console_script_on_multilingual_pages(tmp_path, pages):
    out = tmp_path / "corpus"
    config = write_yaml(
        tmp_path / "clean.yaml", {"input_paths": [str(PAGES)], "output_dir": str(out), "steps": STAGE_STEPS}
    )
    result = subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "llm-recipes"), "clean-corpus", "--config", str(config)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "warning: no per-language" in line]
    assert warnings == [
        "warning: no per-language thresholds for c4 (de, fr, ja, zh): the English ones apply to those languages "
        "(a filter's language_thresholds sets them)"
    ]
    train = datasets.load_from_disk(str(out))["train"]
    kept_ids = {int(row_id.rsplit(":", 1)[1]) for row_id in train["id"]}  # "<file>:<line>"
    rates = survival(pages, kept_ids)
    for lang in LANGUAGES:
        assert abs(rates[lang] - rates["en"]) <= 0.2, rates
    assert rates["en"] >= 0.9 and not kept_ids & spam_ids(pages)
    assert Counter(train["language"]) == Counter(p["lang"] for p in pages if p["kind"] == "prose")
