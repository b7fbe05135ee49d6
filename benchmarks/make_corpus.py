"""A deterministic benchmark corpus of web-like documents, built from the small shared demo data.

The shared data holds only 300 web documents (`c4_demo.jsonl`) and 30 long Wikipedia articles (`wiki_demo.txt`),
far too few to time a corpus pipeline. This script cuts them into sentences and recombines runs of consecutive
sentences into new documents with a seeded RNG, so every document differs, then mixes in what a cleaning pipeline is
for: near-duplicates (copies with a few word edits), exact duplicates, and junk that quality filters should drop
(too short, repetitive, navigation boilerplate, bare lists, lorem ipsum / code, symbol noise).

Output: `num_shards` jsonl files (`{"id", "text"}` per line) plus `corpus.json`, which records the parameters and how
many documents of each kind were made; `kinds.json` maps every id to its kind, so a benchmark can say which kinds a
pipeline dropped. A folder whose `corpus.json` matches the requested parameters is reused as it is.

    .venv/bin/python benchmarks/make_corpus.py --num-docs 50000 --out benchmarks/.work/corpus-50000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

GENERATOR_VERSION = 1
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCE_FILES = ("c4_demo.jsonl", "wiki_demo.txt")

# share of the corpus per kind; the rest is clean recombined text
EXACT_DUP_SHARE = 0.05
NEAR_DUP_SHARE = 0.10
JUNK_SHARE = 0.08

# wiki_demo.txt lost its paragraph breaks ("socialism.Humans"), so a sentence may end with no space after it
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s*(?=[A-Z“\"'(])")
_TERMINAL = (".", "!", "?", '"', "”", "'", "’", ")")

NAV_WORDS = ["Home", "About us", "Contact", "Blog", "Shop", "Login", "Sign up", "FAQ", "Careers", "Press", "Sitemap"]
BOILERPLATE_LINES = [
    "Click here to subscribe to our newsletter",
    "All rights reserved",
    "Share this: Facebook Twitter Pinterest Email",
    "Posted in Uncategorized",
    "Leave a comment",
    "Read more",
    "Previous post Next post",
    "Powered by WordPress",
    "This site uses cookies to improve your experience",
    "Search for:",
    "Related posts",
    "Follow us on Instagram",
]
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo "
    "consequat."
)
CODE_LINES = [
    "function init() { var x = document.getElementById('main'); x.style.display = 'none'; }",
    "if (window.jQuery) { $('.menu').toggleClass('open'); }",
    "Please enable JavaScript to view this page.",
    "var config = { width: 300, height: 250, autoplay: true };",
]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def load_sentence_pools(data_dir: Path) -> dict[str, list[str]]:
    """Sentences of 4-60 words that end like a sentence, from the web documents and from the articles."""
    missing = [name for name in SOURCE_FILES if not (data_dir / name).is_file()]
    if missing:
        raise SystemExit(f"{data_dir}: missing {', '.join(missing)}; pass --data-dir pointing at the shared data")
    web = []
    with open(data_dir / "c4_demo.jsonl", encoding="utf-8") as f:
        for line in f:
            for paragraph in json.loads(line)["text"].split("\n"):
                web += split_sentences(paragraph)
    wiki = []
    with open(data_dir / "wiki_demo.txt", encoding="utf-8") as f:
        for article in f:
            wiki += split_sentences(article)
    return {"web": _usable(web), "wiki": _usable(wiki)}


def _usable(sentences: list[str]) -> list[str]:
    return [s for s in sentences if 4 <= len(s.split()) <= 60 and s.endswith(_TERMINAL)]


class CorpusMaker:
    """Each `make_*` method returns one document's text; all randomness comes from one seeded RNG."""

    def __init__(self, pools: dict[str, list[str]], seed: int):
        self.pools = pools
        self.rng = random.Random(seed)
        self.vocab = sorted({w for s in pools["web"] + pools["wiki"] for w in s.split() if w.isalpha()})

    def paragraph(self, pool: list[str], sentences: int) -> str:
        # a run of consecutive sentences reads like real text; a random start keeps documents apart
        start = self.rng.randrange(len(pool) - sentences)
        return " ".join(pool[start : start + sentences])

    def make_clean(self) -> str:
        style = self.rng.choice(("web", "wiki"))
        other = "wiki" if style == "web" else "web"
        paragraphs = []
        for _ in range(self.rng.randint(2, 7)):
            pool = self.pools[other if self.rng.random() < 0.15 else style]
            paragraphs.append(self.paragraph(pool, self.rng.randint(2, 6)))
        return ("\n" if style == "web" else "\n\n").join(paragraphs)

    def make_near_duplicate(self, text: str) -> str:
        """A copy with a few words replaced, deleted or inserted (at most ~2% of its words)."""
        lines = [line.split(" ") for line in text.split("\n")]
        positions = [(i, j) for i, words in enumerate(lines) for j in range(len(words)) if words[j]]
        for _ in range(self.rng.randint(1, max(2, len(positions) // 50))):
            i, j = self.rng.choice(positions)
            op = self.rng.choice(("replace", "delete", "insert"))
            if op == "replace":
                lines[i][j] = self.rng.choice(self.vocab)
            elif op == "delete" and len(lines[i]) > 1:
                lines[i][j] = ""
            else:
                lines[i].insert(j, self.rng.choice(self.vocab))
        return "\n".join(" ".join(w for w in words if w) for words in lines)

    def make_junk(self) -> tuple[str, str]:
        kind = self.rng.choice(("short", "repetitive", "boilerplate", "list", "lorem_code", "symbols"))
        rng = self.rng
        pool = self.pools[rng.choice(("web", "wiki"))]
        if kind == "short":
            text = self.paragraph(pool, rng.randint(1, 2))
        elif kind == "repetitive":
            paragraph = self.paragraph(pool, rng.randint(1, 3))
            text = "\n".join([paragraph] * rng.randint(5, 12))
        elif kind == "boilerplate":
            lines = [" | ".join(rng.sample(NAV_WORDS, 5))]
            lines += [rng.choice(BOILERPLATE_LINES) for _ in range(rng.randint(15, 30))]
            lines.insert(rng.randrange(len(lines)), self.paragraph(pool, 2))
            text = "\n".join(lines)
        elif kind == "list":
            items = [" ".join(rng.sample(self.vocab, rng.randint(1, 4))) for _ in range(rng.randint(20, 40))]
            text = "\n".join(f"{rng.choice('-*•')} {item}" for item in items)
        elif kind == "lorem_code":
            lines = [self.paragraph(pool, 2), LOREM, *rng.sample(CODE_LINES, 3), self.paragraph(pool, 3)]
            text = "\n".join(lines)
        else:
            noise = [
                "".join(rng.choice("0123456789#@$%&*+=/<>|~") for _ in range(rng.randint(3, 12))) for _ in range(150)
            ]
            text = " ".join(noise)
        return kind, text


def build_documents(pools: dict[str, list[str]], num_docs: int, seed: int) -> list[tuple[str, str]]:
    """(kind, text) for `num_docs` documents, in a seeded shuffled order so duplicates land anywhere."""
    maker = CorpusMaker(pools, seed)
    n_exact, n_near, n_junk = (round(num_docs * share) for share in (EXACT_DUP_SHARE, NEAR_DUP_SHARE, JUNK_SHARE))
    clean = [maker.make_clean() for _ in range(num_docs - n_exact - n_near - n_junk)]
    docs = [("clean", text) for text in clean]
    docs += [("near_duplicate", maker.make_near_duplicate(maker.rng.choice(clean))) for _ in range(n_near)]
    docs += [("exact_duplicate", maker.rng.choice(clean)) for _ in range(n_exact)]
    docs += [(f"junk_{kind}", text) for kind, text in (maker.make_junk() for _ in range(n_junk))]
    maker.rng.shuffle(docs)
    return docs


def corpus_params(data_dir: Path, num_docs: int, seed: int, num_shards: int) -> dict:
    sources = {name: hashlib.sha256((data_dir / name).read_bytes()).hexdigest()[:16] for name in SOURCE_FILES}
    return {
        "version": GENERATOR_VERSION,
        "num_docs": num_docs,
        "seed": seed,
        "num_shards": num_shards,
        "sources": sources,
    }


def ensure_corpus(
    data_dir: Path, out_dir: Path, *, num_docs: int = 50_000, seed: int = 0, num_shards: int = 16
) -> dict:
    """Build the corpus into `out_dir` unless it is already there with the same parameters; return its corpus.json."""
    params = corpus_params(data_dir, num_docs, seed, num_shards)
    manifest_path = out_dir / "corpus.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest["params"] == params:
            return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("part-*.jsonl"):
        old.unlink()
    docs = build_documents(load_sentence_pools(data_dir), num_docs, seed)
    kinds: dict[str, str] = {}
    per_shard = -(-num_docs // num_shards)
    for shard in range(num_shards):
        with open(out_dir / f"part-{shard:02d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(shard * per_shard, min(num_docs, (shard + 1) * per_shard)):
                doc_id = f"doc-{i:06d}"
                kinds[doc_id] = docs[i][0]
                f.write(json.dumps({"id": doc_id, "text": docs[i][1]}, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    (out_dir / "kinds.json").write_text(json.dumps(kinds))
    manifest = {"params": params, "kinds": dict(sorted(counts.items())), "chars": sum(len(t) for _, t in docs)}
    # written last: a half-built folder has no corpus.json and is rebuilt next time
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-docs", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-shards", type=int, default=16)
    args = parser.parse_args()
    manifest = ensure_corpus(
        args.data_dir, args.out, num_docs=args.num_docs, seed=args.seed, num_shards=args.num_shards
    )
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
