"""Near-duplicate detection quality: our MinHash LSH against datasketch's `MinHashLSH`, like for like, on real text
with edited copies whose true Jaccard similarity is known.

The documents are ~200-500-word pieces of `c4_demo.jsonl` and `wiki_demo.txt`. Each gets a copy with
random word substitutions, deletions and insertions, as many as it takes to bring the copy's word n-gram Jaccard
similarity to the original to a target drawn uniformly from 0.5..1.0 (measured exactly on the shingle sets after
editing). Ground truth is every pair of documents, copies or not, whose exact Jaccard is >= the threshold; a
method's predicted pairs are the pairs inside its clusters (ours) or its LSH query results (datasketch).
Both MinHash implementations see the same shingles, num_perm and threshold.

Three tiers, each run by both libraries the same way, as a datasketch user would do it:
- plain LSH: every candidate pair that shares a band (the band layout each library picks for the threshold,
  weighing false positives and negatives equally: 9x13 at 0.8 and 128 hashes on both);
- signature check: candidates from a recall-leaning layout (datasketch's `weights=(0.05, 0.95)`, the weighting our
  checked layouts use), kept when the two signatures agree on >= threshold of their values (`MinHash.jaccard`);
- exact check: the same candidates, kept when the true Jaccard of the two shingle sets is >= threshold (our
  `verify=True`, the default).

    python benchmarks/dedup_quality.py --threshold 0.8 --num-perm 128 --ngram 5 --seed 0
    python benchmarks/dedup_quality.py --ray     # adds our distributed path (clean-corpus's engine: ray) per tier

With `--ray`, each tier also runs our Ray engine's near-dedup (`engines/ray_dedup.confirmed_pairs` and
`ray_components.connected_components`, on a Ray started here with 2 CPUs): its clusters are scored the same way,
and the table gives its F1 against the single-machine path's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_recipes.corpus.dedup import MinHashConfig, jaccard, minhash_signatures, near_duplicate_clusters, shingles  # noqa: E402

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIN_WORDS, MAX_WORDS = 200, 500
TARGET_LOW, TARGET_HIGH = 0.5, 1.0


def load_documents(data_dir: Path, seed: int) -> list[str]:
    """c4 documents and wiki articles cut into pieces of MIN_WORDS..MAX_WORDS whitespace words."""
    rng = random.Random(seed)
    sources = [json.loads(line)["text"] for line in (data_dir / "c4_demo.jsonl").read_text().splitlines() if line]
    sources += [line for line in (data_dir / "wiki_demo.txt").read_text().splitlines() if line.strip()]
    pieces = []
    for text in sources:
        tokens = text.split()
        at = 0
        while len(tokens) - at >= MIN_WORDS:
            size = rng.randint(MIN_WORDS, MAX_WORDS)
            pieces.append(" ".join(tokens[at : at + size]))
            at += size
    return pieces


def edited_copy(text: str, target: float, vocabulary: list[str], ngram: int, rng: random.Random) -> tuple[str, float]:
    """A copy of `text` edited until its shingle Jaccard to the original is as close to `target` as edits allow.

    One random edit sequence is drawn, then the number of its edits applied is binary-searched; similarity falls
    (almost) monotonically with the number of edits.
    """
    tokens = text.split()
    edits = [(rng.choice("sdi"), rng.random(), rng.choice(vocabulary)) for _ in range(len(tokens))]
    original = shingles(text, ngram)

    def apply(count: int) -> tuple[str, float]:
        edited = list(tokens)
        for kind, where, word in edits[:count]:
            position = int(where * len(edited))
            if kind == "s":
                edited[position] = word
            elif kind == "d" and len(edited) > 1:
                del edited[position]
            else:
                edited.insert(position, word)
        copy = " ".join(edited)
        return copy, jaccard(original, shingles(copy, ngram))

    low, high = 0, len(edits)  # similarity(low) >= target > similarity(high), as far as monotonicity goes
    while high - low > 1:
        middle = (low + high) // 2
        if apply(middle)[1] >= target:
            low = middle
        else:
            high = middle
    candidates = [apply(low), apply(high)]
    return min(candidates, key=lambda result: abs(result[1] - target))


def build_benchmark(data_dir: Path, ngram: int, seed: int) -> tuple[list[str], list[float]]:
    """Originals plus an edited copy of each, shuffled; returns the texts and the copies' similarities."""
    rng = random.Random(seed)
    originals = load_documents(data_dir, seed)
    vocabulary = sorted({word for text in originals[:50] for word in text.split()})
    texts, similarities = list(originals), []
    for text in originals:
        copy, similarity = edited_copy(text, rng.uniform(TARGET_LOW, TARGET_HIGH), vocabulary, ngram, rng)
        texts.append(copy)
        similarities.append(similarity)
    rng.shuffle(texts)
    return texts, similarities


def true_pairs(texts: list[str], ngram: int, threshold: float) -> set[tuple[int, int]]:
    """Every pair with exact shingle Jaccard >= threshold; only pairs sharing a shingle are compared."""
    sets = [shingles(text, ngram) for text in texts]
    holders = defaultdict(list)
    for doc, shingle_set in enumerate(sets):
        for shingle in shingle_set:
            holders[shingle].append(doc)
    sharing = {pair for docs in holders.values() if len(docs) > 1 for pair in combinations(docs, 2)}
    return {pair for pair in sharing if jaccard(sets[pair[0]], sets[pair[1]]) >= threshold}


def pairs_in_clusters(labels: np.ndarray) -> set[tuple[int, int]]:
    groups = defaultdict(list)
    for doc, label in enumerate(labels.tolist()):
        groups[label].append(doc)
    return {pair for docs in groups.values() if len(docs) > 1 for pair in combinations(docs, 2)}


def run_ours_on_ray(texts: list[str], config: MinHashConfig) -> tuple[set, float, str]:
    """The Ray engine's path: candidate pairs, checks and components as group-bys on the cluster; only the
    components' (child, root) edges come back here, to score them."""
    import pyarrow as pa
    import ray.data

    from llm_recipes.corpus.dedup.clusters import NearDedupStats
    from llm_recipes.corpus.engines.ray_components import connected_components
    from llm_recipes.corpus.engines.ray_dedup import confirmed_pairs
    from llm_recipes.corpus.engines.ray_io import ORDER, connect

    connect(None)
    start = time.perf_counter()
    ds = ray.data.from_arrow(pa.table({ORDER: np.arange(len(texts), dtype=np.int64), "text": texts}))
    bands, rows = config.band_layout()
    stats = NearDedupStats(documents=len(texts), bands=bands, rows=rows, candidate_pairs=0)
    confirmed, _ = confirmed_pairs(ds, config, "text", len(texts), stats)
    labels = np.arange(len(texts))
    if confirmed is not None:
        for edge in connected_components(confirmed, confirmed.count()).take_all():
            labels[edge["child"]] = edge["root"]
    return pairs_in_clusters(labels), time.perf_counter() - start, f"{bands}x{rows}"


def run_ours(texts: list[str], config: MinHashConfig) -> tuple[set, float, str]:
    start = time.perf_counter()
    signatures = minhash_signatures(texts, config)
    labels, stats = near_duplicate_clusters(signatures, config, texts if config.verify else None)
    elapsed = time.perf_counter() - start
    return pairs_in_clusters(labels), elapsed, f"{stats.bands}x{stats.rows}"


# weights of (false positives, false negatives) for datasketch's band layout: equal for plain LSH, recall-leaning when
# every candidate is checked afterwards (a checked false candidate costs one comparison, a missed pair is lost)
PLAIN_WEIGHTS, CHECKED_WEIGHTS = (0.5, 0.5), (0.05, 0.95)


def run_datasketch(
    texts: list[str], threshold: float, num_perm: int, ngram: int, seed: int, check: str = "none"
) -> tuple[set, float, str]:
    """datasketch's MinHashLSH; `check`: "none" (its query results), "signatures" or "jaccard" (candidates confirmed by
    `MinHash.jaccard`, or by the exact Jaccard of the shingle sets, >= threshold)."""
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    weights = PLAIN_WEIGHTS if check == "none" else CHECKED_WEIGHTS
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    minhashes, sets = [], []
    for doc, text in enumerate(texts):
        shingle_set = shingles(text, ngram)
        minhash = MinHash(num_perm=num_perm, seed=seed)
        minhash.update_batch([shingle.encode() for shingle in shingle_set])
        lsh.insert(doc, minhash)
        minhashes.append(minhash)
        sets.append(shingle_set)
    predicted = set()
    for doc, minhash in enumerate(minhashes):
        predicted.update((min(doc, other), max(doc, other)) for other in lsh.query(minhash) if other != doc)
    if check == "signatures":
        predicted = {(a, b) for a, b in predicted if minhashes[a].jaccard(minhashes[b]) >= threshold}
    elif check == "jaccard":
        predicted = {(a, b) for a, b in predicted if jaccard(sets[a], sets[b]) >= threshold}
    elapsed = time.perf_counter() - start
    return predicted, elapsed, f"{lsh.b}x{lsh.r}"


def scores(predicted: set, truth: set) -> tuple[float, float, float]:
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--ray", action="store_true", help="also run our Ray engine's near-dedup (needs the ray extra)")
    args = parser.parse_args(argv)
    if args.ray:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        ray.init(num_cpus=2, logging_level="WARNING")
    if not (args.data_dir / "c4_demo.jsonl").is_file() or not (args.data_dir / "wiki_demo.txt").is_file():
        parser.error(f"c4_demo.jsonl and wiki_demo.txt not found in {args.data_dir} (use --data-dir)")

    texts, similarities = build_benchmark(args.data_dir, args.ngram, args.seed)
    truth = true_pairs(texts, args.ngram, args.threshold)
    near = sum(abs(s - args.threshold) <= 0.05 for s in similarities)
    print(
        f"{len(texts)} documents ({len(texts) - len(similarities)} originals, {len(similarities)} edited copies, "
        f"copy similarity {min(similarities):.2f}..{max(similarities):.2f}, {near} within 0.05 of the threshold); "
        f"{len(truth)} true pairs with Jaccard >= {args.threshold}\n"
    )

    common = {"threshold": args.threshold, "num_perm": args.num_perm, "ngram": args.ngram, "seed": args.seed}
    datasketch = (args.threshold, args.num_perm, args.ngram, args.seed)
    tiers = {
        "plain LSH": (MinHashConfig(**common, verify=False, check_signatures=False), "none"),
        "signature check": (MinHashConfig(**common, verify=False), "signatures"),
        "exact check": (MinHashConfig(**common), "jaccard"),  # our default
    }
    results = {}
    header = f"{'tier':<17}{'method':<12}{'bands x rows':>13}{'pairs':>8}{'precision':>11}{'recall':>9}{'F1':>8}"
    header += f"{'seconds':>9}{'F1 ours / datasketch':>22}"
    print(header)
    print("-" * len(header))
    for tier, (config, check) in tiers.items():
        runs = {"ours": run_ours(texts, config), "datasketch": run_datasketch(texts, *datasketch, check=check)}
        if args.ray:
            runs["ours on Ray"] = run_ours_on_ray(texts, config)
        for name, (predicted, elapsed, _) in runs.items():
            precision, recall, f1 = scores(predicted, truth)
            results[f"{tier}: {name}"] = {"precision": precision, "recall": recall, "f1": f1, "seconds": elapsed}
        ratio = results[f"{tier}: ours"]["f1"] / results[f"{tier}: datasketch"]["f1"]
        for name, (predicted, elapsed, layout) in runs.items():
            row, first = results[f"{tier}: {name}"], name == "ours"
            print(
                f"{tier if first else '':<17}{name:<12}{layout:>13}{len(predicted):>8}{row['precision']:>11.4f}"
                f"{row['recall']:>9.4f}{row['f1']:>8.4f}{elapsed:>9.2f}{f'{ratio:.3f}' if first else '':>22}"
            )
    print(
        "\nF1 ours / datasketch, like for like: "
        + ", ".join(
            f"{tier} {results[f'{tier}: ours']['f1'] / results[f'{tier}: datasketch']['f1']:.3f}" for tier in tiers
        )
    )
    print(
        "our default (exact check) / datasketch's plain MinHashLSH, not like for like: "
        f"{results['exact check: ours']['f1'] / results['plain LSH: datasketch']['f1']:.3f}"
    )
    if args.ray:
        print(
            "F1 ours on Ray / ours on one machine: "
            + ", ".join(
                f"{tier} {results[f'{tier}: ours on Ray']['f1'] / results[f'{tier}: ours']['f1']:.4f}" for tier in tiers
            )
        )
    return results


if __name__ == "__main__":
    main()
