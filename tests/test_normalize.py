"""Normalizers: each step on a concrete input, presets, config errors, and the batch function (pickled, under map)."""

from __future__ import annotations

import pickle

import pytest

from llm_recipes.corpus.normalize import (
    NORMALIZER_PRESETS,
    NORMALIZERS,
    BoilerplateLines,
    NormalizeBatch,
    Whitespace,
    build_normalizers,
)
from llm_recipes.errors import UserError


def run(name: str, text: str, **options) -> str:
    (step,) = build_normalizers([{name: options}] if options else [name])
    return step(text)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("fix_mojibake", "cafÃ© au lait", "café au lait"),
        ("fix_mojibake", "Itâ€™s the â€œbestâ€\x9d", "It’s the “best”"),  # curly quotes repaired, kept curly
        ("fix_mojibake", "plain ASCII stays", "plain ASCII stays"),
        ("nfc", "cafe\u0301", "café"),
        ("nfc", "ﬁne", "ﬁne"),  # NFC leaves compatibility characters alone
        ("nfkc", "ﬁne ＡＢＣ x²", "fine ABC x2"),
        ("lowercase", "The Cat SAT.", "the cat sat."),
        ("remove_punctuation", "Don't stop: it's well-known!", "Dont stop its well known"),
        ("remove_stopwords", "The cat is on the mat, and it's happy.", "cat mat, happy."),
    ],
)
def test_each_normalizer(name, text, expected):
    assert run(name, text) == expected


def test_whitespace():
    text = "\ufeff  Hello\u00a0\t  world \x07!  \r\nNext\rline\x00  \n\n\n\n\n\nAfter   gap \t\n"
    assert Whitespace()(text) == "Hello world !\nNext\nline\n\n\nAfter gap"
    assert Whitespace()("  indented\n\t\tcode  here") == "indented\ncode here"
    assert Whitespace(max_blank_lines=0)("a\n\n\nb\n c") == "a\nb\nc"
    assert Whitespace(max_blank_lines=1)("a\n\n\n\nb") == "a\n\nb"


def test_strip_html():
    text = (
        "<div class='post'><h1>Title</h1><p>Fish &amp; chips &lt;3</p><script>var x = 1 < 2;</script>"
        "<!-- tracking --><br/>Price: 5 < 7 and 9 > 8</div>"
    )
    assert run("strip_html", text) == "\n\nTitle\n\nFish & chips <3\n\nPrice: 5 < 7 and 9 > 8\n"
    assert run("strip_html", "no markup at all") == "no markup at all"


def test_boilerplate_lines():
    lines = [
        "This website uses cookies to improve your experience.",
        "Real content stays, even when it talks about privacy at length.",
        "Please enable JavaScript to view the comments.",
        "Terms of Use | Privacy Policy | Contact Us",
        "© 2023 Example Media Ltd. All rights reserved.",
        "Share on Facebook",
        "Tweet Share Email",
        "Lorem ipsum dolor sit amet.",
        "Read more",
        "Subscribe now for weekly recipes.",
    ]
    cleaned = run("boilerplate_lines", "\n".join(lines))
    assert (
        cleaned == "Real content stays, even when it talks about privacy at length.\nSubscribe now for weekly recipes."
    )
    custom = BoilerplateLines(extra_patterns=[r"^subscribe now\b"])
    assert custom("\n".join(lines)) == "Real content stays, even when it talks about privacy at length."
    # A long line that merely mentions cookies is prose, not a notice.
    prose = "Our survey asked which sites use cookies and why; " + "the answers varied widely. " * 8
    assert run("boilerplate_lines", prose) == prose
    assert BoilerplateLines(use_default_patterns=False)("Read more") == "Read more"
    with pytest.raises(UserError, match="invalid pattern"):
        BoilerplateLines(extra_patterns=["(unclosed"])


def test_presets_and_defaults():
    assert [type(step).__name__ for step in build_normalizers(["default"])] == ["FixMojibake", "NFC", "Whitespace"]
    web = [step.name for step in build_normalizers("web")]
    assert {"strip_html", "boilerplate_lines"} <= set(web)
    classic = [step.name for step in build_normalizers(["classic_nlp"])]
    assert {"lowercase", "remove_punctuation", "remove_stopwords"} <= set(classic)
    for preset in ("default", "web"):  # nothing that changes the distribution an LM learns
        assert not {"lowercase", "remove_punctuation", "remove_stopwords"} & set(NORMALIZER_PRESETS[preset])
    assert set(NORMALIZERS) == {
        "nfc",
        "nfkc",
        "fix_mojibake",
        "whitespace",
        "strip_html",
        "boilerplate_lines",
        "lowercase",
        "remove_stopwords",
        "remove_punctuation",
    }
    batch = NormalizeBatch(["default"])
    assert batch({"text": ["  cafÃ©\r\n\r\n\r\n\r\n  menu  ", None]}) == {"text": ["café\n\n\nmenu", None]}
    classic_batch = NormalizeBatch(["classic_nlp"])
    assert classic_batch({"text": ["The QUICK brown fox's ﬁne-tuned jump!"]}) == {
        "text": ["quick brown foxs fine tuned jump"]
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["nfcc"], "unknown normalizer 'nfcc'; did you mean nfc?"),
        (["defualt"], "did you mean default?"),
        ([{"whitespace": {"max_blank_line": 1}}], "unknown option 'max_blank_line' for normalizer whitespace; did you"),
        ([{"fix_mojibake": {"uncurl_quote": True}}], "did you mean uncurl_quotes?"),
        ([{"whitespace": {"max_blank_lines": -1}}], "max_blank_lines -1 must be >= 0"),
        ([42], "each normalizer step must be a name or"),
    ],
)
def test_build_normalizers_errors(steps, message):
    with pytest.raises(UserError) as error:
        build_normalizers(steps)
    assert message in str(error.value)


def test_normalize_batch_pickles_and_runs_under_datasets_map():
    from datasets import Dataset

    batch = NormalizeBatch(["web", {"boilerplate_lines": {"extra_patterns": ["^ads?$"]}}, "classic_nlp"])
    restored = pickle.loads(pickle.dumps(batch))
    texts = ["<p>The cafÃ© is OPEN!</p>\nAd\nAll rights reserved.", "Nothing   to\tsee."]
    assert restored({"text": texts}) == batch({"text": texts}) == {"text": ["café open", "nothing see"]}

    dataset = Dataset.from_dict({"content": texts * 4, "id": list(range(8))})
    mapped = dataset.map(NormalizeBatch(["default"], text_field="content"), batched=True, batch_size=3, num_proc=2)
    assert mapped["content"][:2] == ["<p>The café is OPEN!</p>\nAd\nAll rights reserved.", "Nothing to see."]
    assert mapped["id"] == list(range(8))
    with pytest.raises(UserError, match="no column 'text'"):
        NormalizeBatch(["default"])({"content": ["x"]})
