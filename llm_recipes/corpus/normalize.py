"""Text normalizers for the corpus stage: small picklable `str -> str` steps, named in a config and run as a batch.

A config lists steps by name, with options or as a preset:

    normalize: [default]                                   # fix_mojibake, nfc, whitespace
    normalize: [fix_mojibake, strip_html, {boilerplate_lines: {extra_patterns: ["^Advertisement$"]}}, whitespace]

`NormalizeBatch` applies them to a text column as a pure batch function (`dict[str, list] -> dict[str, list]`),
so the same steps run under `datasets.Dataset.map(batched=True, num_proc=N)` or Ray/Spark.

Why `lowercase`, `remove_stopwords` and `remove_punctuation` exist but are off by default (and in every preset
except `classic_nlp`): a language model learns to *produce* text like its training data. Lowercased,
punctuation-free, stop-word-free text is a different distribution -- the model would learn to write without
capitals, commas, full stops or "the", and lose the very cues (sentence boundaries, names, function words) that
make text fluent and readable. Those steps came from bag-of-words NLP, where they shrink the vocabulary and are
harmless because word order and form are thrown away anyway: use them for TF-IDF features, keyword search, topic
models or a quick linear classifier (the `classic_nlp` preset), never for pretraining or fine-tuning data.

We write these small steps ourselves (on top of `unicodedata`, `html` and ftfy) because no upstream library
offers them as named, configurable, picklable batch steps; `build_steps` is shared with `filters/`.
"""

from __future__ import annotations

import html
import inspect
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ftfy
from ftfy import TextFixerConfig

from llm_recipes.errors import UserError, did_you_mean

Normalizer = Callable[[str], str]


class TextStep:
    """Base of the built-in normalizers: a picklable callable `str -> str` with a readable repr."""

    name = ""

    def __call__(self, text: str) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({options})"


# --------------------------------------------------------------------------------------------------------------
# Encoding and Unicode


class NFC(TextStep):
    """Unicode canonical composition: "e" + combining acute -> "é". Changes no visible character."""

    name = "nfc"
    form = "NFC"

    def __call__(self, text: str) -> str:
        return unicodedata.normalize(self.form, text)


class NFKC(NFC):
    """Compatibility composition: also folds look-alikes ("ﬁ" -> "fi", full-width "Ａ" -> "A", "²" -> "2")."""

    name = "nfkc"
    form = "NFKC"


# ftfy's defaults also straighten curly quotes, expand ligatures, narrow full-width characters and unescape HTML;
# those change legitimate text, and the separate nfkc / strip_html steps do them when wanted.
FTFY_DEFAULTS = {
    "unescape_html": False,
    "uncurl_quotes": False,
    "fix_latin_ligatures": False,
    "fix_character_width": False,
    "normalization": None,
    "explain": False,
}


class FixMojibake(TextStep):
    """Repairs text decoded with the wrong codec ("cafÃ©" -> "café") with ftfy; options are `ftfy.TextFixerConfig`
    fields."""

    name = "fix_mojibake"

    def __init__(self, **options: Any):
        unknown = [key for key in options if key not in TextFixerConfig._fields]
        if unknown:
            raise UserError(
                f"unknown option {unknown[0]!r} for normalizer fix_mojibake"
                f"{did_you_mean(unknown[0], TextFixerConfig._fields)}"
            )
        self.options = {**FTFY_DEFAULTS, **options}
        self._config = TextFixerConfig(**self.options)

    def __call__(self, text: str) -> str:
        # Pure ASCII cannot hold mojibake; skipping it saves most of ftfy's cost on English web text.
        if text.isascii() and "\x1b" not in text:
            return text
        return ftfy.fix_text(text, self._config)


# --------------------------------------------------------------------------------------------------------------
# Whitespace and markup

CONTROL_CHARS_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
HORIZONTAL_SPACE_RE = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
SPACE_AROUND_NEWLINE_RE = re.compile(r" *\n *")


class Whitespace(TextStep):
    """Removes control characters (keeping newlines and tabs until the collapse), turns \\r\\n and \\r into \\n,
    collapses runs of spaces/tabs to one space, strips spaces at both ends of every line (a collapsed indent
    carries no information), keeps at most `max_blank_lines` blank lines in a row, and strips the text."""

    name = "whitespace"

    def __init__(self, max_blank_lines: int = 2):
        if max_blank_lines < 0:
            raise UserError(f"whitespace: max_blank_lines {max_blank_lines} must be >= 0")
        self.max_blank_lines = max_blank_lines
        self._blank_run_re = re.compile(rf"\n{{{max_blank_lines + 2},}}")
        self._blank_run = "\n" * (max_blank_lines + 1)

    def __call__(self, text: str) -> str:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
        text = CONTROL_CHARS_RE.sub("", text)
        text = HORIZONTAL_SPACE_RE.sub(" ", text)
        text = SPACE_AROUND_NEWLINE_RE.sub("\n", text)
        text = self._blank_run_re.sub(self._blank_run, text)
        return text.strip()


INVISIBLE_BLOCK_RE = re.compile(r"<(script|style|noscript|template)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
BLOCK_TAG_RE = re.compile(
    r"</?(?:p|div|br|hr|li|ul|ol|dl|dt|dd|h[1-6]|tr|table|thead|tbody|section|article|header|footer|nav|aside"
    r"|blockquote|pre|figure|figcaption|form|main)\b[^<>]*>",
    re.IGNORECASE,
)
# A tag needs a name right after "<", so "a < b and c > d" in prose survives.
TAG_RE = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>")


class StripHTML(TextStep):
    """Removes stray markup from text that is mostly text: script/style blocks, comments and tags (block-level
    tags become line breaks), then unescapes entities (&amp; -> &). For whole HTML pages use trafilatura."""

    name = "strip_html"

    def __call__(self, text: str) -> str:
        if "<" not in text and "&" not in text:
            return text
        if "<" in text:
            text = INVISIBLE_BLOCK_RE.sub("", text)
            text = HTML_COMMENT_RE.sub("", text)
            text = BLOCK_TAG_RE.sub("\n", text)
            text = TAG_RE.sub("", text)
        return html.unescape(text) if "&" in text else text


# --------------------------------------------------------------------------------------------------------------
# Boilerplate lines

# Each pattern is searched case-insensitively in a line of at most `max_line_chars` characters; a longer line is
# prose that merely mentions the phrase and is kept.
BOILERPLATE_PATTERNS: dict[str, str] = {
    # "This website uses cookies ...", "Accept all cookies", "Cookie settings"
    "cookie_notice": r"\b(?:uses? cookies|use of cookies|accept (?:all )?cookies|cookie (?:policy|settings|preferences"
    r"|consent|notice))\b",
    # "Please enable JavaScript to view the comments", "JavaScript is disabled in your browser"
    "enable_javascript": r"\b(?:enable|activate|turn on|requires?)\b.{0,40}\bjavascript\b|\bjavascript\b.{0,30}"
    r"\b(?:disabled|required|must be enabled|is off)\b",
    "lorem_ipsum": r"\blorem ipsum\b",
    # "© 2023 Example Inc. All rights reserved." / "Copyright 2019"
    "rights_reserved": r"\ball rights reserved\b|^\W*(?:©|\(c\)|copyright)\s*(?:\d{4}|©)",
    # A navigation line made only of legal links: "Terms of Use | Privacy Policy | Contact"
    "legal_navigation": r"^(?=.*\b(?:terms|privacy|cookie|imprint|legal)\b)\W*(?:(?:terms (?:of (?:use|service)"
    r"|and conditions)|privacy(?: policy| notice| statement)?|cookie (?:policy|settings)|legal(?: notice)?|imprint"
    r"|sitemap|site map|contact(?: us)?|about(?: us)?|accessibility|disclaimer|help|faq|careers|advertise)\W*)+$",
    # "Share on Facebook", "Share this: Twitter Facebook", "Tweet | Pin it | Email"
    "share_buttons": r"\bshare (?:this|on|via|to)\b.{0,40}\b(?:facebook|twitter|linkedin|pinterest|whatsapp|reddit"
    r"|email|x)\b|^\W*(?:(?:share|tweet|pin it|like|email|print|facebook|twitter|linkedin|pinterest|whatsapp"
    r"|reddit)\W*){2,}$",
    # "Read more", "Click here to subscribe", "Skip to main content", "Back to top"
    "navigation_prompts": r"^\W*(?:read more|continue reading|click here|skip to (?:main )?content|back to top"
    r"|sign up for our newsletter|subscribe to our newsletter|log ?in to (?:reply|comment)|leave a (?:reply|comment)"
    r")\b.{0,60}$",
}


class BoilerplateLines(TextStep):
    """Drops lines that are web boilerplate: cookie notices, "enable JavaScript", lorem ipsum, copyright lines,
    legal navigation, share buttons, "read more" prompts (`BOILERPLATE_PATTERNS`), plus your `extra_patterns`."""

    name = "boilerplate_lines"

    def __init__(
        self,
        extra_patterns: Sequence[str] = (),
        use_default_patterns: bool = True,
        max_line_chars: int = 200,
    ):
        if isinstance(extra_patterns, str):
            extra_patterns = [extra_patterns]
        self.extra_patterns = tuple(extra_patterns)
        self.use_default_patterns = use_default_patterns
        self.max_line_chars = max_line_chars
        patterns = [*(BOILERPLATE_PATTERNS.values() if use_default_patterns else ()), *self.extra_patterns]
        for pattern in self.extra_patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise UserError(f"boilerplate_lines: invalid pattern {pattern!r}: {error}") from None
        self._line_re = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None

    def __call__(self, text: str) -> str:
        if self._line_re is None:
            return text
        search, limit = self._line_re.search, self.max_line_chars
        lines = text.split("\n")
        kept = [line for line in lines if len(line) > limit or not search(line)]
        return text if len(kept) == len(lines) else "\n".join(kept)


# --------------------------------------------------------------------------------------------------------------
# Classic NLP steps (off by default: see the module docstring)

# Common English function words (the usual NLTK-style list).
ENGLISH_STOP_WORDS = frozenset(
    """
    a about above after again against ain all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't d did didn't do does doesn't doing don't down during each
    few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
    him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just ll let's m ma me
    might mightn't more most must mustn't my myself needn't no nor not now o of off on once only or other ought our
    ours ourselves out over own re s same shan't she she'd she'll she's should should've shouldn't so some such t
    than that that's the their theirs them themselves then there there's these they they'd they'll they're
    they've this those through to too under until up ve very was wasn't we we'd we'll we're we've were weren't
    what what's when when's where where's which while who who's whom why why's will with won't would wouldn't y
    you you'd you'll you're you've your yours yourself yourselves
    """.split()
)
WORD_TOKEN_RE = re.compile(r"\w+(?:['’]\w+)*")
SPACE_RUN_RE = re.compile(r"[ \t]+")


def _tidy_spaces(text: str) -> str:
    return SPACE_AROUND_NEWLINE_RE.sub("\n", SPACE_RUN_RE.sub(" ", text)).strip()


class Lowercase(TextStep):
    name = "lowercase"

    def __call__(self, text: str) -> str:
        return text.lower()


class RemoveStopwords(TextStep):
    """Removes English stop words (`ENGLISH_STOP_WORDS`, case-insensitive), or your own `stop_words`, plus
    `extra_stop_words`."""

    name = "remove_stopwords"

    def __init__(self, stop_words: Sequence[str] | None = None, extra_stop_words: Sequence[str] = ()):
        self.stop_words = None if stop_words is None else tuple(stop_words)
        self.extra_stop_words = tuple(extra_stop_words)
        base = ENGLISH_STOP_WORDS if stop_words is None else stop_words
        self._stop = frozenset(word.lower().replace("’", "'") for word in (*base, *self.extra_stop_words))

    def _replace(self, match: re.Match) -> str:
        word = match.group()
        return "" if word.lower().replace("’", "'") in self._stop else word

    def __call__(self, text: str) -> str:
        return _tidy_spaces(WORD_TOKEN_RE.sub(self._replace, text))


INNER_APOSTROPHE_RE = re.compile(r"(?<=\w)['’](?=\w)")
PUNCTUATION_RE = re.compile(r"[^\w\s]+")


class RemovePunctuation(TextStep):
    """Removes punctuation and symbols: apostrophes inside words vanish ("don't" -> "dont"), anything else becomes a
    space ("well-known" -> "well known"), then spaces are tidied."""

    name = "remove_punctuation"

    def __call__(self, text: str) -> str:
        return _tidy_spaces(PUNCTUATION_RE.sub(" ", INNER_APOSTROPHE_RE.sub("", text)))


# --------------------------------------------------------------------------------------------------------------
# Registry, presets and the batch function

NORMALIZERS: dict[str, type[TextStep]] = {
    step.name: step
    for step in (
        NFC,
        NFKC,
        FixMojibake,
        Whitespace,
        StripHTML,
        BoilerplateLines,
        Lowercase,
        RemoveStopwords,
        RemovePunctuation,
    )
}

NORMALIZER_PRESETS: dict[str, list[str | dict]] = {
    "default": ["fix_mojibake", "nfc", "whitespace"],
    "web": ["fix_mojibake", "strip_html", "nfc", "boilerplate_lines", "whitespace"],
    # Bag-of-words features only (TF-IDF, keyword search, linear classifiers) -- never for LM training data.
    "classic_nlp": ["fix_mojibake", "nfkc", "lowercase", "remove_stopwords", "remove_punctuation", "whitespace"],
}


def _check_options(factory: Callable, options: Mapping[str, Any], name: str, kind: str) -> None:
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the step validates its own options
    accepted = [key for key, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in accepted:
            raise UserError(f"unknown option {key!r} for {kind} {name}{did_you_mean(key, accepted)}")
    for key, parameter in parameters.items():
        if parameter.default is inspect.Parameter.empty and key not in options and key in accepted:
            raise UserError(f"{kind} {name}: missing required option {key!r}")


def build_steps(
    steps: Sequence[Any] | str | dict,
    registry: Mapping[str, Callable],
    presets: Mapping[str, Sequence[Any]],
    kind: str,
    base: type | None = None,
) -> list:
    """Turn a config list into step objects. An entry is a preset name, a step name, `{name: {options}}`, or an
    already built step (an instance of `base`, or any callable when `base` is None)."""
    if isinstance(steps, (str, dict)):
        steps = [steps]
    if not isinstance(steps, Sequence):
        raise UserError(f"{kind} steps: expected a list such as [name, {{name: {{option: value}}}}], got {steps!r}")
    built: list = []
    for step in steps:
        if base is not None and isinstance(step, base):
            built.append(step)
            continue
        if base is None and callable(step) and not isinstance(step, type):
            built.append(step)
            continue
        if isinstance(step, str):
            name, options = step, {}
        elif isinstance(step, dict) and len(step) == 1:
            ((name, options),) = step.items()
            options = {} if options is None else options
            if not isinstance(options, dict):
                raise UserError(f"{kind} {name}: options must be a mapping of option: value, got {options!r}")
        else:
            raise UserError(f"each {kind} step must be a name or {{name: {{option: value}}}}, got {step!r}")
        if name in presets and name not in registry:
            if options:
                raise UserError(f"{kind} preset {name!r} takes no options; list its steps to configure them")
            built += build_steps(presets[name], registry, presets, kind, base)
            continue
        if name not in registry:
            known = [*registry, *presets]
            raise UserError(f"unknown {kind} {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})")
        factory = registry[name]
        _check_options(factory, options, name, kind)
        try:
            built.append(factory(**options))
        except TypeError as error:
            raise UserError(f"{kind} {name}: {error}") from None
    return built


def build_normalizers(steps: Sequence[str | dict | Normalizer] | str) -> list[Normalizer]:
    """Normalizers from a config list: "name", {"name": {options}}, a preset name, or a ready callable."""
    return build_steps(steps, NORMALIZERS, NORMALIZER_PRESETS, kind="normalizer")


class NormalizeBatch:
    """The batch function: `{text_field: [...]} -> {text_field: [normalized ...]}` (None stays None).

    Picklable as long as every normalizer is (all built-in ones are), so `Dataset.map(batched=True, num_proc=N)`
    works.
    """

    def __init__(self, normalizers: Sequence[str | dict | Normalizer] | str, text_field: str = "text"):
        self.normalizers = build_normalizers(normalizers)
        self.text_field = text_field

    def normalize(self, text: str) -> str:
        for step in self.normalizers:
            text = step(text)
        return text

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.text_field not in batch:
            raise UserError(f"no column {self.text_field!r} to normalize; columns are {sorted(batch)}")
        return {self.text_field: [None if text is None else self.normalize(text) for text in batch[self.text_field]]}

    def __repr__(self) -> str:
        return f"NormalizeBatch({self.normalizers!r}, text_field={self.text_field!r})"
