"""Quality filters: each rule's keep/drop decision with its exact drop reason, presets, config errors, and the batch
function under `datasets.map` (num_proc 1 vs 2) and on real C4 text."""

from __future__ import annotations

import json
import pickle

import pytest

from llm_recipes.corpus.filters import (
    FILTER_PRESETS,
    FILTERS,
    BadWordsFilter,
    C4Filter,
    CallableFilter,
    Document,
    FilterBatch,
    FineWebFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
    LengthFilter,
    RegexFilter,
    build_filters,
    count_drop_reasons,
)
from llm_recipes.errors import UserError

GOOD = """The old lighthouse stood at the edge of the rocky coast for more than a century.
Sailors relied on its steady beam to guide them safely through the dangerous waters at night.
In the early years, a keeper lived in the small cottage beside the tower with his family.
He climbed the spiral stairs every evening to light the lamp and wind the clockwork mechanism.
When electricity finally reached the island, the keeper was no longer needed and the cottage stood empty.
Today the building is a museum that welcomes visitors during the summer months.
Guests can walk to the top of the tower and enjoy a wide view of the sea and the distant mountains.
Local volunteers share stories about storms, shipwrecks and the brave people who kept the light burning."""
GOOD_LINES = GOOD.splitlines()


def unique_words(count: int, prefix: str = "w") -> list[str]:
    """Distinct words with a letter: w0000, w0001, ... (five characters with the default prefix)."""
    return [f"{prefix}{i:04d}" for i in range(count)]


def reason(filter_, text: str) -> str | None:
    return filter_.apply(Document(text))[1]


def has_digit(text: str) -> bool:
    return any(char.isdigit() for char in text)


def test_document_views_are_computed_once_and_shared():
    doc = Document("First line here.\n\n  Second line, with don't and 3.14!  \nFirst line here.")
    assert doc.words == [
        "First",
        "line",
        "here",
        "Second",
        "line",
        "with",
        "don't",
        "and",
        "3.14",
        "First",
        "line",
        "here",
    ]
    assert doc.non_empty_lines == ["First line here.", "Second line, with don't and 3.14!", "First line here."]
    assert doc.paragraphs == ["First line here.", "Second line, with don't and 3.14!  \nFirst line here."]
    assert doc.duplicate_lines == (1, len("First line here."))
    assert doc.words is doc.words  # cached


def test_good_prose_passes_every_web_filter():
    assert [reason(f, GOOD) for f in build_filters(["web"])] == [None, None, None, None]
    assert FilterBatch(["web"])({"text": [GOOD]}) == {"text": [GOOD], "drop_reason": [None]}


# ---------------------------------------------------------------------------------------------------------- length


def test_length_filter_bounds():
    text = "one two three\nfour five"
    assert reason(LengthFilter(), text) is None
    assert reason(LengthFilter(min_chars=100), text) == "length:min_chars"
    assert reason(LengthFilter(max_chars=10), text) == "length:max_chars"
    assert reason(LengthFilter(min_words=6), text) == "length:min_words"
    assert reason(LengthFilter(max_words=4), text) == "length:max_words"
    assert reason(LengthFilter(min_lines=3), text) == "length:min_lines"
    assert reason(LengthFilter(max_lines=1), text) == "length:max_lines"
    assert reason(LengthFilter(min_words=5, max_words=5, min_lines=2, max_lines=2), text) is None


# ---------------------------------------------------------------------------------------------------------- gopher


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Too short to be a document of the web.", "min_doc_words"),
        ("it is so and we do go to the ox " * 10, "mean_word_length"),
        (("the and " + "internationalization " * 8) * 6, "mean_word_length"),
        (GOOD + " #tag" * 20, "hash_ratio"),
        (GOOD + "\nwait... " * 20, "ellipsis_ratio"),
        ("\n".join("• " + line for line in GOOD_LINES), "bullet_lines"),
        ("\n".join(line[:-1] + "…" if i < 3 else line for i, line in enumerate(GOOD_LINES)), "ellipsis_lines"),
        (GOOD + "\n" + " ".join(str(i) for i in range(60)), "alpha_words"),
        (GOOD + "\n" + " | ".join(["Home", "News", "Sport"] * 30), "alpha_words"),
        (" ".join(unique_words(60)) + ".", "stop_words"),
    ],
)
def test_gopher_quality_rules(text, expected):
    assert reason(GopherQualityFilter(), text) == f"gopher_quality:{expected}"


def test_gopher_quality_defaults_and_overrides():
    gopher = GopherQualityFilter()
    assert reason(gopher, GOOD) is None
    assert reason(gopher, "the and " + "word " * 100_000) == "gopher_quality:max_doc_words"
    assert reason(GopherQualityFilter(max_doc_words=100), GOOD) == "gopher_quality:max_doc_words"
    short = " ".join(GOOD.split()[:30])
    assert reason(gopher, short) == "gopher_quality:min_doc_words"
    assert reason(build_filters([{"gopher_quality": {"min_doc_words": 20}}])[0], short) is None
    # "The" at a sentence start counts as a stop word, as does a capitalised or shouted form.
    assert reason(gopher, "The " + " ".join(unique_words(60)) + " THE end.") is None


def _repetition_text(passage_words: int, filler_words: int) -> str:
    """A passage of distinct five-letter words that occurs twice, with distinct filler around it, on one line."""
    passage = " ".join(unique_words(passage_words, prefix="p"))
    filler = unique_words(filler_words)
    half = filler_words // 2
    return " ".join([*filler[:half], passage, *filler[half:], passage])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "\n\n".join(["First paragraph here.", "Second one.", "First paragraph here.", "First paragraph here."]),
            "dup_para_frac",
        ),
        ("\n\n".join([GOOD_LINES[0] * 3, "Short one.", "Another short one.", GOOD_LINES[0] * 3]), "dup_para_char_frac"),
        ("\n".join(["Same line again."] * 5 + GOOD_LINES[:5]), "dup_line_frac"),
        ("\n".join([GOOD_LINES[4], *GOOD_LINES[:7], GOOD_LINES[4], GOOD_LINES[7]]), "dup_line_char_frac"),
        (" ".join(f"New York {word}." for word in unique_words(20)), "top_2gram_char_frac"),
        # The repeated trigram's bigrams stay under 0.20 (14 of 96 chars) while it is over 0.18 (26 of 96); likewise
        # the 4-gram's trigrams stay under 0.18 (15 of 97) while it is over 0.16 (27 of 97).
        (
            " ".join(f"Massachusetts a Pennsylvania {' '.join(unique_words(10, f'f{i}x'))}" for i in range(10)),
            "top_3gram_char_frac",
        ),
        (
            " ".join(f"Massachusetts a b Pennsylvania {' '.join(unique_words(10, f'f{i}x'))}" for i in range(10)),
            "top_4gram_char_frac",
        ),
        # 50 repeated of 300 word characters = 0.167 > 0.15; 50 of 400 = 0.125: under 0.15/0.14/0.13, over 0.12.
        (_repetition_text(10, 40), "dup_5gram_char_frac"),
        (_repetition_text(10, 60), "dup_8gram_char_frac"),
    ],
)
def test_gopher_repetition_rules(text, expected):
    assert reason(GopherRepetitionFilter(), text) == f"gopher_repetition:{expected}"


def test_gopher_repetition_keeps_prose_and_blank_line_paragraphs():
    repetition = GopherRepetitionFilter()
    assert reason(repetition, GOOD) is None
    # Blank lines between paragraphs are not "duplicate lines" (datatrove's version counts them).
    assert reason(repetition, "\n\n\n".join(GOOD_LINES)) is None
    assert reason(repetition, _repetition_text(10, 90)) is None  # 50 / 550 = 0.09, under every threshold
    assert reason(GopherRepetitionFilter(dup_n_grams={5: 0.05}), _repetition_text(10, 90)) == (
        "gopher_repetition:dup_5gram_char_frac"
    )


# -------------------------------------------------------------------------------------------------------------- c4


def test_c4_removes_lines_and_rewrites_the_text():
    text = "\n".join(
        [
            "Home About Contact",
            GOOD_LINES[0],
            "Thanks!",
            "Please enable JavaScript in your browser to see this.",
            GOOD_LINES[1] + "[1]",
            "Read our privacy policy for all the details.",
            "This site uses cookies, as most sites do.",
            GOOD_LINES[2],
            "   " + GOOD_LINES[3] + "   ",
            "x" * 1001 + " is a very long word indeed.",
            "It ends with an ellipsis...",
            GOOD_LINES[4],
        ]
    )
    new_text, drop = C4Filter().apply(Document(text))
    assert drop is None
    assert new_text == "\n".join([GOOD_LINES[0], GOOD_LINES[1], *GOOD_LINES[2:5]])
    batch = FilterBatch(["c4"])({"text": [text]})
    assert batch == {"text": [new_text], "drop_reason": [None]}


def test_c4_document_rules():
    c4 = C4Filter()
    assert reason(c4, GOOD) is None
    assert c4.apply(Document(GOOD))[0] is None  # nothing removed: text unchanged
    assert reason(c4, GOOD + "\nLorem ipsum dolor sit amet, consectetur.") == "c4:lorem_ipsum"
    assert reason(c4, GOOD + "\nThe function returns {a: 1} to the caller.") == "c4:curly_bracket"
    assert reason(c4, "\n".join(GOOD_LINES[:2] + ["no punctuation here at all"] * 5)) == "c4:too_few_sentences"
    # Several sentences on one line count separately: 5 sentences on 2 lines is enough.
    assert reason(c4, "One is here. Two is here. Three is here.\nFour is here! Is five here?") is None


def test_c4_without_terminal_punctuation_rule_keeps_unpunctuated_lines():
    text = GOOD + "\nA caption without a full stop"
    assert C4Filter().apply(Document(text)) == (GOOD, None)
    assert C4Filter(filter_no_terminal_punct=False).apply(Document(text)) == (None, None)


# --------------------------------------------------------------------------------------------------------- fineweb


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n".join(line.rstrip(".") for line in GOOD_LINES), "line_punct_ratio"),
        ("\n".join(f"Short line number {chr(97 + i)}." for i in range(10)), "short_line_ratio"),
        ("\n".join([*GOOD_LINES, GOOD_LINES[4]]), "char_dup_ratio"),
        ("\n".join(f"Extraordinarily incomprehensibilities{chr(97 + i)}." for i in range(10)), "list_ratio"),
    ],
)
def test_fineweb_rules(text, expected):
    assert reason(FineWebFilter(), text) == f"fineweb:{expected}"


def test_fineweb_thresholds():
    fineweb = FineWebFilter()
    assert reason(fineweb, GOOD) is None
    # 1 of 8 lines punctuated = 0.125 > 0.12 passes; 0 of 8 fails unless zero is excluded.
    one_punctuated = "\n".join([GOOD_LINES[0]] + [line.rstrip(".") for line in GOOD_LINES[1:]])
    assert reason(fineweb, one_punctuated) is None
    unpunctuated = "\n".join(line.rstrip(".") for line in GOOD_LINES)
    assert reason(FineWebFilter(line_punct_exclude_zero=True), unpunctuated) is None
    assert reason(FineWebFilter(char_duplicates_ratio=None, line_punct_thr=None), GOOD + "\n" + GOOD) is None


# -------------------------------------------------------------------------------------------------------- language

GERMAN = (
    "Der alte Leuchtturm stand mehr als ein Jahrhundert lang am Rand der felsigen Küste. Die Seeleute verließen "
    "sich auf seinen ruhigen Strahl, der sie nachts sicher durch die gefährlichen Gewässer führte."
)
FRENCH = (
    "Le vieux phare se dressait au bord de la côte rocheuse depuis plus d'un siècle. Les marins comptaient sur "
    "son faisceau régulier pour les guider la nuit à travers les eaux dangereuses."
)


def test_language_filter_keeps_english_and_drops_german_and_french():
    batch = FilterBatch([{"language": {"languages": ["en"]}}])
    out = batch({"text": [GOOD, GERMAN, FRENCH, "12345 67890"]})
    assert out["drop_reason"] == [None, "language:de", "language:fr", "language:unknown"]
    assert out["language"][:3] == ["en", "de", "fr"]
    assert out["language_score"][0] > 0.65
    assert out["language_score"][3] == 0.0


def test_language_filter_annotates_only_after_earlier_filters_and_can_keep_all():
    out = FilterBatch([{"length": {"min_words": 20}}, {"language": {"languages": None}}])(
        {"text": ["too short", GERMAN]}
    )
    assert out["drop_reason"] == ["length:min_words", None]
    assert out["language"] == [None, "de"]


def test_language_filter_config_errors():
    with pytest.raises(UserError, match="unknown ISO 639-1 language code 'xx'"):
        LanguageFilter(languages=["xx"])
    with pytest.raises(UserError, match="min_confidence"):
        LanguageFilter(min_confidence=1.5)


# ------------------------------------------------------------------------------------------------ bad words, custom


def test_bad_words_filter(tmp_path):
    default = BadWordsFilter()
    assert reason(default, GOOD) is None
    assert reason(default, GOOD + " Watch XXX videos.") == "bad_words:ratio"
    assert reason(default, GOOD + " Size XXXL shirts.") is None  # whole words only

    word_list = tmp_path / "words.txt"
    word_list.write_text("# my list\nlighthouse\nclockwork mechanism\n", encoding="utf-8")
    from_file = BadWordsFilter(path=str(word_list))
    assert from_file.words == ("clockwork mechanism", "lighthouse")
    assert reason(from_file, "A Lighthouse.") == "bad_words:ratio"
    assert reason(from_file, "The clockwork\n mechanism ticks.") == "bad_words:ratio"
    # 1 listed word in 17 = 0.06: dropped at the default (any), kept when up to 10% is tolerated.
    assert reason(from_file, GOOD_LINES[0]) == "bad_words:ratio"
    assert reason(BadWordsFilter(path=str(word_list), max_ratio=0.1), GOOD_LINES[0]) is None
    with pytest.raises(UserError, match="word list not found"):
        BadWordsFilter(path=str(tmp_path / "missing.txt"))


def test_regex_filter():
    assert reason(RegexFilter(r"\bbuy now\b", ignore_case=True), "BUY NOW and save!") == "regex:match"
    assert reason(RegexFilter(r"\bbuy now\b"), GOOD) is None
    assert reason(RegexFilter(r"lighthouse", drop_if="no_match", name="topic"), "A cat.") == "topic:no_match"
    assert reason(RegexFilter(r"lighthouse", drop_if="no_match", name="topic"), GOOD) is None
    with pytest.raises(UserError, match="invalid pattern"):
        RegexFilter("(unclosed")
    with pytest.raises(UserError, match="drop_if"):
        RegexFilter("x", drop_if="matches")


def test_callable_filter_from_function_and_import_path():
    assert reason(CallableFilter(has_digit), "no digits") == "has_digit:rejected"
    assert reason(CallableFilter(has_digit), "3 digits") is None
    from_config = build_filters([{"callable": {"fn": f"{__name__}:has_digit", "name": "digits"}}])[0]
    assert reason(from_config, "none") == "digits:rejected"
    assert reason(pickle.loads(pickle.dumps(from_config)), "4 of them") is None
    with pytest.raises(UserError, match="module level"):
        CallableFilter(lambda text: True)
    with pytest.raises(UserError, match="cannot import"):
        CallableFilter("llm_recipes.corpus.filters:no_such_function")


# ---------------------------------------------------------------------------------------------- building, batching


def test_presets_expand_in_fineweb_order():
    web = build_filters(["web"])
    assert [type(f) for f in web] == [GopherRepetitionFilter, GopherQualityFilter, C4Filter, FineWebFilter]
    assert web[2].filter_no_terminal_punct is False
    assert [type(f) for f in build_filters(["gopher"])] == [GopherQualityFilter, GopherRepetitionFilter]
    assert set(FILTER_PRESETS) == {"gopher", "c4", "fineweb", "web"}
    assert set(FILTERS) == {
        "length",
        "gopher_quality",
        "gopher_repetition",
        "c4",
        "fineweb",
        "language",
        "bad_words",
        "regex",
        "callable",
    }
    built = build_filters([{"length": {"min_words": 20}}, "c4", {"gopher_repetition": {"top_n_grams": {2: 0.5}}}])
    assert built[0].min_words == 20 and built[1].filter_no_terminal_punct is True
    assert built[2].top_n_grams == ((2, 0.5),)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["gopher_qualty"], "unknown filter 'gopher_qualty'; did you mean gopher_quality?"),
        (
            [{"gopher_quality": {"min_doc_word": 20}}],
            "unknown option 'min_doc_word' for filter gopher_quality; did you mean min_doc_words?",
        ),
        ([{"regex": {}}], "filter regex: missing required option 'pattern'"),
        ([{"c4": 5}], "filter c4: options must be a mapping"),
        ([{"c4": {}, "fineweb": {}}], "each filter step must be a name or"),
        ([{"fineweb": {"short_line_thr": 2}}], "short_line_thr: 2 must be between 0 and 1"),
        ([{"web": {"x": 1}}], "preset 'web' takes no options"),
    ],
)
def test_build_filters_errors(steps, message):
    with pytest.raises(UserError) as error:
        build_filters(steps)
    assert message in str(error.value)


def test_first_failing_filter_decides_and_dropped_text_is_left_as_is():
    text = GOOD + "\nNo terminal punctuation"
    out = FilterBatch([{"length": {"min_words": 1000}}, "c4"])({"text": [text, None]})
    assert out == {"text": [text, None], "drop_reason": ["length:min_words", "length:min_words"]}
    out = FilterBatch(["c4", {"length": {"min_words": 1000}}])({"text": [text]})
    assert out["text"] == [text]  # C4 had rewritten it, but the document was dropped after
    assert FilterBatch(["c4", "fineweb"])({"text": [text]})["text"] == [GOOD]
    with pytest.raises(UserError, match="no column 'content'"):
        FilterBatch(["c4"], text_field="content")({"text": [GOOD]})


def test_count_drop_reasons():
    counts = count_drop_reasons([None, "c4:lorem_ipsum", "fineweb:list_ratio", "c4:lorem_ipsum", None])
    assert counts == {"c4:lorem_ipsum": 2, "fineweb:list_ratio": 1}
    assert list(counts) == ["c4:lorem_ipsum", "fineweb:list_ratio"]


def test_filter_batch_pickles_with_its_state():
    batch = FilterBatch(["web", {"language": {"languages": ["en"]}}, {"bad_words": {"words": ["lighthouse"]}}])
    batch({"text": [GOOD]})  # builds the lingua detector, which must not travel
    restored = pickle.loads(pickle.dumps(batch))
    texts = [GOOD, GERMAN, "short"]
    assert restored({"text": texts}) == batch({"text": texts})
    assert restored.filters[4]._detector is not None  # rebuilt lazily on first use after unpickling


def test_filter_batch_under_datasets_map_is_the_same_for_one_and_two_processes(shared_data):
    from datasets import Dataset

    rows = [json.loads(line) for line in (shared_data / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list(rows[:120])
    batch = FilterBatch(["web"])
    one = dataset.map(batch, batched=True, batch_size=32, num_proc=1)
    two = dataset.map(batch, batched=True, batch_size=32, num_proc=2)
    assert one["drop_reason"] == two["drop_reason"]
    assert one["text"] == two["text"]
    assert one["drop_reason"] == batch({"text": dataset["text"]})["drop_reason"]


def test_web_preset_on_real_c4_text(shared_data):
    texts = [json.loads(line)["text"] for line in (shared_data / "c4_demo.jsonl").read_text().splitlines()]
    out = FilterBatch(["web"])({"text": texts})
    kept = [text for text, drop in zip(out["text"], out["drop_reason"], strict=True) if drop is None]
    counts = count_drop_reasons(out["drop_reason"])
    assert 0 < len(kept) < len(texts)
    assert sum(counts.values()) == len(texts) - len(kept)
    assert {reason.split(":")[0] for reason in counts} <= {"gopher_repetition", "gopher_quality", "c4", "fineweb"}
    assert counts.get("gopher_quality:min_doc_words", 0) > 0  # C4 keeps short pages that Gopher does not
    assert all(text.strip() for text in kept)
