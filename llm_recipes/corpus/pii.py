"""Redacting personal data from a text corpus: e-mail addresses, phone numbers and IP addresses.

Regexes plus a validation step per match, like the PII pass of BigScience/StarCoder data pipelines, rather than
an NER model (Presidio, spaCy): those need a model download, are orders of magnitude slower, and these three kinds
are defined by their shape. Most of the work is in what must *not* be redacted -- years, prices, dates, times,
version numbers, ISBNs, thousands-grouped amounts -- so each candidate phone or IP match is checked before
it is replaced.

`RedactPIIBatch` is the batch function (`dict[str, list] -> dict[str, list]`) for `Dataset.map(batched=True)`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

from llm_recipes.errors import UserError, did_you_mean

PII_KINDS = ("email", "phone", "ip_address")
DEFAULT_PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip_address": "<IP_ADDRESS>"}

EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Four octets, not glued to more digits or dots (so 1.2.3.4.5 and 10.0.0.1.2 are not addresses).
IPV4_RE = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\.?\d|\w)")
# Anything shaped like IPv6 (hex groups with at least two colons, optionally an IPv4 tail); `ipaddress` decides.
IPV6_CANDIDATE_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
VERSION_CONTEXT_RE = re.compile(r"(?:\bv|\bversion|\bver\.?|\brelease|\bbuild)\s*$", re.IGNORECASE)

# A phone-shaped run: optional +country code, optional (area code), then digit groups joined by one space, dot or
# hyphen; needs a separator, parentheses or a leading "+" so bare numbers (IDs, amounts) are never candidates.
PHONE_CANDIDATE_RE = re.compile(
    r"""
    (?<![\w+.\-/$€£¥])
    (?:
        \+\d{1,3}(?:[ .\-]?\(\d{1,5}\))?(?:[ .\-]?\d{1,5}){1,5}       # +44 20 7946 0958, +1 (555) 123-4567
      | \(\d{2,5}\)[ .\-]?\d{2,8}(?:[ .\-]\d{2,8}){0,3}              # (555) 123-4567
      | \d{1,5}(?:[ .\-]\d{1,8}){1,5}                              # 555-123-4567, 030 12345678
    )
    (?![\w]|[.\-/,]\d|\s?(?:%|€|\$|£|¥|usd|eur|gbp|kg|km|mg|ml|cm|mm|m²|percent)\b)
    """,
    re.VERBOSE | re.IGNORECASE,
)
# Shapes that look like phone numbers but are dates, US ZIP+4 codes, amounts or lists of years.
DATE_RE = re.compile(r"\d{4}[.\-]\d{1,2}[.\-]\d{1,2}|\d{1,2}[.\-]\d{1,2}[.\-]\d{2,4}")
ZIP_PLUS_4_RE = re.compile(r"\d{5}-\d{4}")
DOTTED_RE = re.compile(r"\d+(?:\.\d+)+")
THOUSANDS_RE = re.compile(r"\d{1,3}(?:[ .]\d{3})+")
YEAR_LIST_RE = re.compile(r"(?:1[89]\d\d|20\d\d)(?:[ .\-]+(?:1[89]\d\d|20\d\d))*")
CURRENCY_BEFORE_RE = re.compile(r"(?:[$€£¥]|\b(?:usd|eur|gbp|rs|inr)\.?)\s?$", re.IGNORECASE)
NUMBER_CONTEXT_RE = re.compile(r"\b(?:isbn(?:-1[03])?|issn|doi|patent|order|invoice|ref|page|pp|no)\.?:?\s*$", re.I)


def _is_phone(match: re.Match, text: str) -> bool:
    candidate = match.group()
    digits = sum(char.isdigit() for char in candidate)
    if not 7 <= digits <= 15:
        return False
    if candidate.startswith("+"):
        return digits >= 8
    before = text[max(0, match.start() - 12) : match.start()]
    if CURRENCY_BEFORE_RE.search(before) or NUMBER_CONTEXT_RE.search(before) or VERSION_CONTEXT_RE.search(before):
        return False
    # Dots alone join phone groups of 2-4 digits (555.123.4567); 10.0.19041.1 or 127.0.0.1.2 are versions or junk.
    if DOTTED_RE.fullmatch(candidate) and not all(2 <= len(group) <= 4 for group in candidate.split(".")):
        return False
    for shape in (DATE_RE, ZIP_PLUS_4_RE, YEAR_LIST_RE, IPV4_RE):
        if shape.fullmatch(candidate):
            return False
    # 1 234 567 / 1.234.567 are amounts -- unless written like a trunk-prefixed number (0...).
    return not (THOUSANDS_RE.fullmatch(candidate) and not candidate.startswith("0"))


def _is_ip_address(match: re.Match, text: str) -> bool:
    if VERSION_CONTEXT_RE.search(text[max(0, match.start() - 10) : match.start()]):
        return False
    candidate = match.group()
    if ":" not in candidate:
        return True
    if candidate.count(":") < 2 or sum(char in "0123456789abcdefABCDEF" for char in candidate) < 2:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _redact(pattern: re.Pattern, text: str, placeholder: str, accept=None) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        if accept is not None and not accept(match, text):
            return match.group()
        count += 1
        return placeholder

    return pattern.sub(replace, text), count


def _check_kinds(kinds: Sequence[str], placeholders: Mapping[str, str] | None) -> dict[str, str]:
    for kind in [*kinds, *(placeholders or {})]:
        if kind not in PII_KINDS:
            raise UserError(f"unknown PII kind {kind!r}{did_you_mean(kind, PII_KINDS)} (known: {', '.join(PII_KINDS)})")
    return {**DEFAULT_PLACEHOLDERS, **(placeholders or {})}


def redact_pii(
    text: str,
    kinds: Sequence[str] = PII_KINDS,
    placeholders: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, int]]:
    """Replace e-mail addresses, phone numbers and IPv4/IPv6 addresses with placeholders.

    Returns the redacted text and how many of each kind were replaced. E-mails go first (they may hold digits),
    then IP addresses (so 192.168.0.1 is never read as a phone number), then phone numbers.
    """
    marks = _check_kinds(kinds, placeholders)
    counts = dict.fromkeys(kinds, 0)
    if "email" in kinds and "@" in text:
        text, counts["email"] = _redact(EMAIL_RE, text, marks["email"])
    if "ip_address" in kinds:
        for pattern, hint in ((IPV4_RE, "."), (IPV6_CANDIDATE_RE, ":")):
            if hint in text:
                text, found = _redact(pattern, text, marks["ip_address"], _is_ip_address)
                counts["ip_address"] += found
    if "phone" in kinds:
        text, counts["phone"] = _redact(PHONE_CANDIDATE_RE, text, marks["phone"], _is_phone)
    return text, counts


class RedactPIIBatch:
    """The batch function: `{text_field: [...]} -> {text_field: [redacted ...], "pii_redactions": [count ...]}`."""

    def __init__(
        self,
        text_field: str = "text",
        kinds: Sequence[str] = PII_KINDS,
        placeholders: Mapping[str, str] | None = None,
    ):
        if isinstance(kinds, str):
            kinds = [kinds]
        _check_kinds(kinds, placeholders)
        self.text_field = text_field
        self.kinds = tuple(kinds)
        self.placeholders = dict(placeholders or {})

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.text_field not in batch:
            raise UserError(f"no column {self.text_field!r} to redact; columns are {sorted(batch)}")
        texts, counts = [], []
        for text in batch[self.text_field]:
            if text is None:
                texts.append(None)
                counts.append(0)
                continue
            redacted, found = redact_pii(text, self.kinds, self.placeholders)
            texts.append(redacted)
            counts.append(sum(found.values()))
        return {self.text_field: texts, "pii_redactions": counts}

    def __repr__(self) -> str:
        return f"RedactPIIBatch(text_field={self.text_field!r}, kinds={self.kinds!r})"
