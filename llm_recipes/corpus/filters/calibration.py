"""Per-language thresholds of the quality filters, as published by FineWeb-2 (Penedo et al. 2025).

FineWeb-2 calibrated its Gopher repetition, FineWeb and Gopher quality thresholds and stop words for each language
(`configs/<language>_<script>.yml` in huggingface/fineweb-2), on words from per-language tokenizers. Listed here:
the languages lingua tells apart by default (`DEFAULT_LANGUAGE_CANDIDATES`); English keeps each filter's own
defaults, which are the Gopher / FineWeb published ones. FineWeb-2's `max_non_alpha_words_ratio` is the minimum
share of words with a letter (our `min_alpha_words_ratio`). C4's rules were only ever tuned on English.

A filter applies these to a document whose detected language is listed, except for an option the config sets,
which applies to every language; `language_thresholds: {xx: {option: value}}` on a filter sets a language's
thresholds (and calibrates a language missing here).
"""

from __future__ import annotations

from typing import Any

# The languages a filter runs on its own defaults for: those were published for English.
DEFAULT_CALIBRATED = ("en",)

# language: (dup_line_frac, top_n_grams 2-4, dup_n_grams 5-10, line_punct_thr, new_line_ratio,
#            min_avg_word_length, max_avg_word_length, min_alpha_words_ratio, stop words)
_FINEWEB2: dict[str, tuple] = {
    "de": (
        0.263,
        (0.169, 0.153, 0.137),
        (0.141, 0.134, 0.126, 0.117, 0.108, 0.098),
        0.0,
        0.152,
        0,
        15,
        0.774,
        "der und die in von im den des mit das er dem als wurde für",
    ),
    "fr": (
        0.264,
        (0.161, 0.149, 0.134),
        (0.15, 0.141, 0.131, 0.121, 0.111, 0.1),
        0.1,
        0.185,
        2,
        11,
        0.812,
        "de la le et à en l' des du les est d' un une il dans par au",
    ),
    "es": (
        0.265,
        (0.077, 0.097, 0.112),
        (0.152, 0.137, 0.123, 0.114, 0.107, 0.099),
        0.3,
        0.171,
        4,
        14,
        0.825,
        "de la en el y a que del los se por un con una las su",
    ),
    "it": (
        0.246,
        (0.198, 0.156, 0.133),
        (0.144, 0.136, 0.127, 0.118, 0.109, 0.1),
        0.025,
        0.2,
        3,
        21,
        0.807,
        "di e il la in a del che è della un per nel l' con da i una",
    ),
    "pt": (
        0.325,
        (0.093, 0.117, 0.139),
        (0.19, 0.172, 0.154, 0.142, 0.131, 0.12),
        0.154,
        0.23,
        3,
        13,
        0.814,
        "de a e o em do da que um no uma com para na é foi",
    ),
    "nl": (
        0.333,
        (0.093, 0.117, 0.14),
        (0.177, 0.16, 0.145, 0.133, 0.123, 0.112),
        0.238,
        0.194,
        3,
        16,
        0.828,
        "de van in het een en is op voor met door zijn werd hij uit",
    ),
    "pl": (
        0.353,
        (0.096, 0.12, 0.144),
        (0.203, 0.182, 0.163, 0.15, 0.137, 0.126),
        0.2,
        0.209,
        3,
        11,
        0.726,
        "w i na z do się roku od a jest przez po jako oraz o został był nie",
    ),
    "ru": (
        0.322,
        (0.184, 0.164, 0.146),
        (0.168, 0.156, 0.145, 0.133, 0.121, 0.109),
        0.231,
        0.139,
        3,
        11,
        0.713,
        "в и на с года по году из был к не от что за для его как а он также до после",
    ),
    "tr": (
        0.303,
        (0.094, 0.114, 0.136),
        (0.168, 0.151, 0.135, 0.123, 0.116, 0.107),
        0.2,
        0.273,
        3,
        21,
        0.773,
        "ve bir olarak bu ile için olan da de tarafından yılında sonra en daha ilk the",
    ),
    "zh": (
        0.287,
        (0.256, 0.201, 0.171),
        (0.198, 0.182, 0.167, 0.154, 0.14, 0.127),
        0.106,
        0.178,
        1,
        5,
        0.735,
        "的 年 在 月 是 和 日 了 於 · 為 有 被 人 中 为 他 與 後 也 而 由",
    ),
    "ja": (
        0.375,
        (0.121, 0.129, 0.145),
        (0.307, 0.283, 0.264, 0.248, 0.234, 0.223),
        0.167,
        0.162,
        1,
        5,
        0.759,
        "の に を は た て が と で 年 し ・ 月 れ さ",
    ),
}


def _by_filter() -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {"gopher_repetition": {}, "fineweb": {}, "gopher_quality": {}}
    for language, row in _FINEWEB2.items():
        dup_line, top, dup, line_punct, new_line, min_len, max_len, alpha, stop_words = row
        table["gopher_repetition"][language] = {
            "dup_line_frac": dup_line,
            "top_n_grams": dict(zip(range(2, 5), top, strict=True)),
            "dup_n_grams": dict(zip(range(5, 11), dup, strict=True)),
        }
        table["fineweb"][language] = {"line_punct_thr": line_punct, "new_line_ratio": new_line}
        table["gopher_quality"][language] = {
            "min_avg_word_length": min_len,
            "max_avg_word_length": max_len,
            "min_alpha_words_ratio": alpha,
            "stop_words": tuple(stop_words.split()),
        }
    return table


# filter name -> language -> {option: value}
CALIBRATIONS: dict[str, dict[str, dict[str, Any]]] = _by_filter()
