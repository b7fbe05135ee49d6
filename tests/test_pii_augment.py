"""PII redaction (what must and must not be redacted) and EDA-style augmentation (determinism across batching)."""

from __future__ import annotations

import pickle

import pytest

from llm_recipes.corpus.augment import AugmentBatch, augment_text, document_rng
from llm_recipes.corpus.pii import RedactPIIBatch, redact_pii
from llm_recipes.errors import UserError

# ------------------------------------------------------------------------------------------------------------- PII


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write to john.doe+news@example.co.uk today.", "Write to <EMAIL> today."),
        ("Contact: JANE_99@mail-server.io, or sales@x.com.", "Contact: <EMAIL>, or <EMAIL>."),
        ("Call (555) 123-4567 now.", "Call <PHONE> now."),
        ("Call 555-123-4567 or 555.123.4567.", "Call <PHONE> or <PHONE>."),
        ("Toll free: 1-800-555-0199.", "Toll free: <PHONE>."),
        ("US: +1 555 123 4567, UK: +44 20 7946 0958.", "US: <PHONE>, UK: <PHONE>."),
        ("Germany +49 (0)30 1234567 or 030 12345678.", "Germany <PHONE> or <PHONE>."),
        ("France 06 12 34 56 78, +33 1 23 45 67 89.", "France <PHONE>, <PHONE>."),
        ("E.164: +4915112345678.", "E.164: <PHONE>."),
        (
            "Server 192.168.0.1 and gateway 10.0.0.254 answered.",
            "Server <IP_ADDRESS> and gateway <IP_ADDRESS> answered.",
        ),
        ("IPv6 2001:db8::8a2e:370:7334 and fe80::1ff:fe23:4567:890a.", "IPv6 <IP_ADDRESS> and <IP_ADDRESS>."),
        ("Full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 form.", "Full <IP_ADDRESS> form."),
    ],
)
def test_redacts(text, expected):
    assert redact_pii(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "In 2019, 2020 and 2021 the company grew; from 1990 to 2000 it was smaller.",
        "Prices: $1,299.99, €1.234.567, 1 234 567 EUR, 12,500 USD and 45.5%.",
        "Dates: 2023-01-15, 15.01.2023, 12/05/2023, 1999-2004, at 12:30:45.",
        "Upgrade from version 1.2.3 to v2.10.1.4 (build 10.0.19041.1).",
        "ISBN 978-3-16-148410-0, ZIP 94105-1234, score 3-1, pages 100-120.",
        "C++ uses std::vector and a::b::c; the ratio is 3:2 at 10:30.",
        "MAC 00:1A:2B:3C:4D:5E is hardware, not an IP; the loopback is 127.0.0.1.2.",
        "Population 100 200 300 400 and card 4111 1111 1111 1111.",
        "An @ sign alone, user@localhost, and name@domain are not addresses.",
    ],
)
def test_does_not_redact_numbers_that_are_not_pii(text):
    assert redact_pii(text) == (text, {"email": 0, "phone": 0, "ip_address": 0})


def test_counts_kinds_and_placeholders():
    text = "Mail a@b.org or c@d.net, call 555-123-4567, ping 8.8.8.8."
    redacted, counts = redact_pii(text)
    assert redacted == "Mail <EMAIL> or <EMAIL>, call <PHONE>, ping <IP_ADDRESS>."
    assert counts == {"email": 2, "phone": 1, "ip_address": 1}
    only_email, counts = redact_pii(text, kinds=["email"], placeholders={"email": "[email]"})
    assert only_email == "Mail [email] or [email], call 555-123-4567, ping 8.8.8.8."
    assert counts == {"email": 1 + 1}
    with pytest.raises(UserError, match="unknown PII kind 'emails'; did you mean email?"):
        redact_pii(text, kinds=["emails"])


def test_redact_batch():
    batch = RedactPIIBatch(kinds=("email", "phone"), placeholders={"phone": "<TEL>"})
    out = batch({"text": ["x@y.com 555-123-4567 1.2.3.4", "nothing here", None]})
    assert out == {"text": ["<EMAIL> <TEL> 1.2.3.4", "nothing here", None], "pii_redactions": [2, 0, 0]}
    assert pickle.loads(pickle.dumps(batch))({"text": ["a@b.co"]}) == {"text": ["<EMAIL>"], "pii_redactions": [1]}
    with pytest.raises(UserError, match="unknown PII kind"):
        RedactPIIBatch(placeholders={"ssn": "<SSN>"})


# --------------------------------------------------------------------------------------------------------- augment

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Small corpora benefit from simple augmentation.\nEach line keeps its place in the document.",
    "one",
    "",
]


def test_each_operation_changes_words_as_described():
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    words = text.split()
    deleted = augment_text(text, "deletion", 0.5, document_rng(text, 0, 1)).split()
    assert 1 <= len(deleted) < len(words) and all(word in words for word in deleted)
    swapped = augment_text(text, "swap", 0.2, document_rng(text, 0, 1)).split()
    assert sorted(swapped) == sorted(words) and swapped != words
    inserted = augment_text(text, "insertion", 0.2, document_rng(text, 0, 1)).split()
    assert len(inserted) == len(words) + 2 and set(inserted) == set(words)
    noisy = augment_text(text, "char_noise", 1.0, document_rng(text, 0, 1)).split()
    assert len(noisy) == len(words) and all(new != old for new, old in zip(noisy, words, strict=True))
    assert all(len(old) - 1 <= len(new) <= len(old) for new, old in zip(noisy, words, strict=True))
    # Line structure survives.
    assert augment_text(TEXTS[1], "swap", 0.3, document_rng(TEXTS[1], 0, 1)).count("\n") == 1


def test_augment_batch_rows_and_columns():
    batch = AugmentBatch(ops=("deletion", "swap", "insertion", "char_noise"), copies=2, probability=0.3, seed=7)
    out = batch({"text": TEXTS[:2], "id": [10, 11], "label": ["a", "b"]})
    assert out["id"] == ["10", "10#aug1", "10#aug2", "11", "11#aug1", "11#aug2"]
    assert out["label"] == ["a", "a", "a", "b", "b", "b"]
    assert out["augmented"] == [False, True, True, False, True, True]
    assert out["text"][0] == TEXTS[0] and out["text"][3] == TEXTS[1]
    assert out["text"][1] != TEXTS[0] and out["text"][1] != out["text"][2]
    assert AugmentBatch(copies=0)({"text": TEXTS})["text"] == TEXTS
    with pytest.raises(UserError, match="unknown augmentation 'swapp'; did you mean swap?"):
        AugmentBatch(ops=["swapp"])
    with pytest.raises(UserError, match="probability"):
        AugmentBatch(probability=0)


def test_augment_is_deterministic_across_batch_sizes_and_processes():
    from datasets import Dataset

    dataset = Dataset.from_dict({"text": TEXTS * 3, "id": [f"doc{i}" for i in range(12)]})
    augment = AugmentBatch(ops=("deletion", "swap", "char_noise"), copies=2, probability=0.3, seed=3)
    whole = augment(dataset.to_dict())
    by_5 = dataset.map(augment, batched=True, batch_size=5)
    by_2_in_two_processes = dataset.map(pickle.loads(pickle.dumps(augment)), batched=True, batch_size=2, num_proc=2)
    assert by_5.to_dict() == by_2_in_two_processes.to_dict() == whole
    assert len(by_5) == 36
    other_seed = AugmentBatch(ops=("deletion", "swap", "char_noise"), copies=2, probability=0.3, seed=4)
    assert other_seed(dataset.to_dict())["text"] != whole["text"]
