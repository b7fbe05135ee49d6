"""Corpus-stage speed: our filters + MinHash dedup against datatrove's equivalent pipeline, same input, same processes.

Both pipelines clean a deterministic corpus (>= 50k documents, see `make_corpus.py`) with the Gopher repetition,
Gopher quality, C4 and FineWeb quality filters, then MinHash near-duplicate removal with datatrove's defaults
(word 5-grams, 14 bands x 8 rows = 112 hashes), and write the kept documents as jsonl:

- ours: `read_corpus` -> `run_step` for each of [filter: [...], near_dedup: {...}] with num_proc=N -> `Dataset.to_json`
- datatrove: `LocalPipelineExecutor`, tasks = workers = N (stage 2: 14 tasks, one per bucket, on N workers):
  1. JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter
     -> JsonlWriter (the filtered documents) -> MinhashDedupSignature
  2. MinhashDedupBuckets   3. MinhashDedupCluster   4. JsonlReader (filtered) -> MinhashDedupFilter -> JsonlWriter
  in two configurations: `datatrove`, the headline, as a user who wants speed sets it up (a regex word tokenizer
  passed to every filter and to the signature step, xxhash), and `datatrove-spacy`, every default (spaCy's English
  words, ~6x slower per document; `--spacy-docs N` runs it on the first N documents only).

Each side runs as its own fresh process (ours under this interpreter, datatrove under `--datatrove-python`, since
datatrove's extras pin trafilatura<1.12 and xxhash<4 and cannot share our venv), with a fresh empty
`HF_DATASETS_CACHE`, so no side reuses a cache from an earlier run. Repeats alternate the order of the sides and the
medians are reported. Memory (RSS and PSS summed over the side's whole process tree) and CPU time are sampled from
outside (psutil); the memory target is ours <= 2x the headline datatrove's summed RSS at the same process count.

    .venv/bin/python benchmarks/corpus_speed.py --num-proc 2 --repeats 2 --spacy-repeats 1 --spacy-docs 5000

Create the datatrove venv once (from the repository root) with:

    python3 -m venv .venv-datatrove && .venv-datatrove/bin/pip install "datatrove[processing,io]" spacy
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_WORK_DIR = HERE / ".work"
DEFAULT_DATATROVE_PYTHON = REPO / ".venv-datatrove" / "bin" / "python"
# datatrove: as a user who wants speed configures it (regex words, xxhash), the headline; datatrove-spacy: every
# default (spaCy's English words), the second row
SIDES = ("ours", "datatrove", "datatrove-spacy")
LABELS = {
    "ours": "ours",
    "datatrove": "datatrove (regex words, xxhash)",
    "datatrove-spacy": "datatrove (defaults: spaCy words)",
}
MEMORY_TARGET = 2.0  # our peak memory, summed over processes, at most this many times datatrove's
TARGET_RATIO = 2.0
SAMPLE_SECONDS = 0.2

# datatrove's MinhashConfig defaults: 5-gram shingles, 14 buckets of 8 hashes
OUR_STEPS = [
    {"filter": ["gopher_repetition", "gopher_quality", "c4", "fineweb"]},
    {"near_dedup": {"ngram": 5, "bands": 14, "rows": 8, "num_perm": 112}},
]


# --------------------------------------------------------------------------------------------------------------
# The two sides. Each runs in its own process and writes a result json; only stdlib at module level, because the
# datatrove side runs under the datatrove venv.


def run_ours(corpus_dir: Path, out_dir: Path, num_proc: int) -> dict:
    from llm_recipes.corpus.readers import read_corpus
    from llm_recipes.corpus.steps import build_steps, run_step

    started = time.perf_counter()
    ds, report = read_corpus(sorted(str(path) for path in corpus_dir.glob("part-*.jsonl")))
    read_done = time.perf_counter()
    step_stats = []
    for step in build_steps(OUR_STEPS):
        # as the clean-corpus recipe runs them: a step's input is let go (and its mapped Arrow file with it) once
        # its output exists
        ds, stats = run_step(ds, step, num_proc=num_proc)
        step_stats.append(stats)
    steps_done = time.perf_counter()
    output = out_dir / "deduped.jsonl"
    # one process: `to_json(num_proc=N)` forks this process N times to write 80 MB
    ds.to_json(str(output))
    finished = time.perf_counter()

    filter_stats, dedup_stats = step_stats
    return {
        "seconds": finished - started,
        "stage_seconds": {
            "read": read_done - started,
            **{stats.name: stats.seconds for stats in step_stats},
            "write": finished - steps_done,
        },
        "docs_in": report.documents,
        "docs_after_filter": filter_stats.docs_out,
        "docs_out": dedup_stats.docs_out,
        "drop_reasons": filter_stats.drop_reasons,
        "outputs": [str(output)],
    }


# spaCy-like English words (a word, or one punctuation mark), so datatrove's filters count what they count with spaCy
DATATROVE_WORD_PATTERN = r"\w+(?:['’]\w+)*|[^\w\s]"


def regex_word_tokenizer():
    """The English word tokenizer a datatrove user who cares about speed plugs in (filters and MinhashDedupSignature
    take a `WordTokenizer` as `language`): words by one regex, sentences by datatrove's own regex splitter (that of
    its `WhitespaceTokenizer`). Datatrove ships no regex word tokenizer; its English one is spaCy's."""
    import regex
    from datatrove.utils.word_tokenizers import WhitespaceTokenizer

    class RegexWordTokenizer(WhitespaceTokenizer):
        def __init__(self):
            super().__init__()
            self._words = regex.compile(DATATROVE_WORD_PATTERN)

        def word_tokenize(self, text: str) -> list[str]:
            return self._words.findall(text)

    return RegexWordTokenizer()


def run_datatrove(
    corpus_dir: Path, out_dir: Path, num_proc: int, tokenizer: str = "regex", ray_tasks: int | None = None
) -> dict:
    """datatrove's four stages on `LocalPipelineExecutor` (tasks = workers = num_proc), or with `ray_tasks` on
    `RayPipelineExecutor` in the Ray cluster this process has joined: stages 1 and 4 as `ray_tasks` tasks (one per
    input file), which Ray schedules on the cluster's CPUs, one CPU a task (`benchmarks/corpus_ray.py`)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.typeshelper import Languages

    # "spacy": every default (English words by spaCy); "regex": the fast tokenizer above. xxhash either way: it is
    # MinhashConfig's default since datatrove 0.3, set here so a changed default cannot change the comparison
    language = regex_word_tokenizer() if tokenizer == "regex" else Languages.english
    config = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    filtered, signatures, buckets = out_dir / "filtered", out_dir / "signatures", out_dir / "buckets"
    remove_ids, deduped, logs = out_dir / "remove_ids", out_dir / "deduped", out_dir / "logs"
    executor, common, tasks = LocalPipelineExecutor, {"workers": num_proc, "skip_completed": False}, num_proc
    if ray_tasks:
        from datatrove.executor import RayPipelineExecutor

        executor, common, tasks = RayPipelineExecutor, {"skip_completed": False}, ray_tasks
    stages = {
        "filter+signatures": executor(
            pipeline=[
                JsonlReader(str(corpus_dir), glob_pattern="part-*.jsonl"),
                GopherRepetitionFilter(language=language),
                GopherQualityFilter(language=language),
                C4QualityFilter(language=language),
                FineWebQualityFilter(language=language),
                # stage 4 must read exactly the documents stage 1 signed, in the same order and rank
                JsonlWriter(str(filtered), compression=None),
                MinhashDedupSignature(output_folder=str(signatures), config=config, language=language),
            ],
            tasks=tasks,
            logging_dir=str(logs / "1_filter_signatures"),
            **common,
        ),
        "buckets": executor(
            pipeline=[MinhashDedupBuckets(input_folder=str(signatures), output_folder=str(buckets), config=config)],
            tasks=config.num_buckets,  # must be a multiple of num_buckets
            logging_dir=str(logs / "2_buckets"),
            **common,
        ),
        "cluster": executor(
            pipeline=[MinhashDedupCluster(input_folder=str(buckets), output_folder=str(remove_ids), config=config)],
            tasks=1,
            logging_dir=str(logs / "3_cluster"),
            **common,
        ),
        "dedup_filter+write": executor(
            pipeline=[
                JsonlReader(str(filtered), glob_pattern="*.jsonl"),
                MinhashDedupFilter(input_folder=str(remove_ids)),
                JsonlWriter(str(deduped), compression=None),
            ],
            tasks=tasks,
            logging_dir=str(logs / "4_dedup_filter"),
            **common,
        ),
    }
    stage_seconds = {}
    started = time.perf_counter()
    for name, executor in stages.items():
        stage_started = time.perf_counter()
        executor.run()
        stage_seconds[name] = time.perf_counter() - stage_started
    seconds = time.perf_counter() - started

    filter_stats = json.loads((logs / "1_filter_signatures" / "stats.json").read_text())
    drop_reasons: dict[str, int] = {}
    docs_in = 0
    for step in filter_stats:
        stats = step["stats"]
        if "READER" in step["name"]:
            docs_in += stats["documents"]["total"]
        if "dropped" in stats:
            reasons = {key: value for key, value in stats.items() if key.startswith("dropped_")}
            for reason, value in reasons.items():
                key = f"{_short_filter_name(step['name'])}:{reason.removeprefix('dropped_')}"
                drop_reasons[key] = value if isinstance(value, int) else value.get("total", 0)
    return {
        "seconds": seconds,
        "stage_seconds": stage_seconds,
        "docs_in": docs_in,
        "docs_after_filter": _count_lines(sorted(filtered.glob("*.jsonl"))),
        "docs_out": _count_lines(sorted(deduped.glob("*.jsonl"))),
        "drop_reasons": dict(sorted(drop_reasons.items(), key=lambda item: -item[1])),
        "outputs": [str(path) for path in sorted(deduped.glob("*.jsonl"))],
    }


def _short_filter_name(step_name: str) -> str:
    # datatrove names a step like "🔻 - FILTER: 👯 Gopher Repetition"
    return step_name.split(":", 1)[-1].strip().split(" ", 1)[-1].lower().replace(" ", "_")


def _count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            total += sum(1 for _ in f)
    return total


def side_main(args: argparse.Namespace) -> None:
    """One side in this process: run it, add this process tree's own view of peak memory, write the result."""
    args.out.mkdir(parents=True, exist_ok=True)
    if args.side == "ours":
        result = run_ours(args.corpus, args.out, args.num_proc)
    else:
        tokenizer = "spacy" if args.side == "datatrove-spacy" else "regex"
        result = run_datatrove(args.corpus, args.out, args.num_proc, tokenizer)
    # ru_maxrss is KiB on Linux: the largest single process, this one or any waited-for child
    result["max_rss_mib_rusage"] = (
        max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        / 1024
    )
    args.result.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------------------------------------------
# The runner: builds the corpus, starts each side as a fresh process and watches its memory and CPU.


class TreeSampler(threading.Thread):
    """Samples a process and all its descendants every SAMPLE_SECONDS: peak summed PSS, peak summed RSS, the
    largest single RSS, and CPU seconds (each process's last sampled user+system time, summed)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak_pss = self.peak_rss = self.max_single_rss = 0
        self.cpu: dict[int, float] = {}
        self.max_processes = 0

    def run(self) -> None:
        psutil = self.psutil
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            pss = rss = 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                pss += getattr(info, "pss", info.rss)
                rss += info.rss
                self.max_single_rss = max(self.max_single_rss, info.rss)
                self.cpu[proc.pid] = times.user + times.system
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self.max_processes = max(self.max_processes, len(procs))
            self.stop.wait(SAMPLE_SECONDS)


def measure_side(side: str, python: Path, corpus: Path, num_proc: int, run_dir: Path) -> dict:
    out, result_path, log_path = run_dir / "out", run_dir / "result.json", run_dir / "side.log"
    env = dict(os.environ, HF_DATASETS_CACHE=str(run_dir / "hf_cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [str(python), str(Path(__file__).resolve()), "--side", side, "--corpus", str(corpus)]
    command += ["--out", str(out), "--result", str(result_path), "--num-proc", str(num_proc)]
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        sampler = _start_sampler(child.pid)
        returncode = child.wait()
    wall = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if sampler:
        sampler.stop.set()
        sampler.join()
    if returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise SystemExit(f"{side} side failed (exit {returncode}); last lines of {log_path}:\n" + "\n".join(tail))
    result = json.loads(result_path.read_text())
    result["process_seconds"] = wall
    waited_cpu = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    result["cpu_seconds_rusage"] = waited_cpu
    if sampler:
        result["peak_pss_mib"] = sampler.peak_pss / 2**20
        result["peak_rss_sum_mib"] = sampler.peak_rss / 2**20
        result["max_single_rss_mib"] = sampler.max_single_rss / 2**20
        result["cpu_seconds_sampled"] = sum(sampler.cpu.values())
        result["max_processes"] = sampler.max_processes
    return result


def _start_sampler(pid: int) -> TreeSampler | None:
    try:
        sampler = TreeSampler(pid)
    except ImportError:
        return None
    sampler.start()
    return sampler


def check_datatrove_python(python: Path) -> None:
    if not python.exists():
        raise SystemExit(
            f"no datatrove interpreter at {python}. Create the venv (from the repository root):\n"
            "  python3 -m venv .venv-datatrove && \\\n"
            '    .venv-datatrove/bin/pip install "datatrove[processing,io]" spacy\n'
            "or point --datatrove-python at one."
        )
    probe = subprocess.run([str(python), "-c", "import datatrove, spacy"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(f"{python} cannot import datatrove and spacy:\n{probe.stderr.strip()}")


# --------------------------------------------------------------------------------------------------------------
# Comparing what the sides kept, and the report


def first_documents(corpus: Path, count: int) -> Path:
    """A corpus of the first `count` documents (the same share of each shard), for the slow spaCy row."""
    shards = sorted(corpus.glob("part-*.jsonl"))
    subset = corpus.with_name(f"{corpus.name}-first{count}")
    subset.mkdir(exist_ok=True)
    per_shard, extra = divmod(count, len(shards))
    for index, shard in enumerate(shards):
        take = per_shard + (index < extra)
        with open(shard, encoding="utf-8") as f:
            lines = list(itertools.islice(f, take))
        (subset / shard.name).write_text("".join(lines), encoding="utf-8")
    return subset


def load_kinds(corpus: Path) -> tuple[dict[str, str], dict[tuple[str, int], str]]:
    """{doc id: kind} and {(shard file name, 1-based line): doc id}, to map either side's output back to kinds."""
    kinds = json.loads((corpus / "kinds.json").read_text())
    by_line = {}
    for path in sorted(corpus.glob("part-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                by_line[(path.name, line_number)] = json.loads(line)["id"]
    return kinds, by_line


def kept_by_kind(outputs: list[str], kinds: dict[str, str], by_line: dict[tuple[str, int], str]) -> dict[str, int]:
    """How many documents of each kind a side kept. Our ids are `path:line`; datatrove keeps the corpus ids."""
    counts: dict[str, int] = {}
    for output in outputs:
        with open(output, encoding="utf-8") as f:
            for line in f:
                doc_id = json.loads(line)["id"]
                if doc_id not in kinds:
                    path, _, number = doc_id.rpartition(":")
                    doc_id = by_line[(Path(path).name, int(number))]
                counts[kinds[doc_id]] = counts.get(kinds[doc_id], 0) + 1
    return counts


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(
            f"{cell:>{width}}" if i else f"{cell:<{width}}"
            for i, (cell, width) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def median_of(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(results: dict[str, list[dict]], corpus_manifest: dict, kinds_kept: dict[str, dict], args) -> str:
    lines = []
    median = {
        side: {key: median_of(runs, key) for key, value in runs[0].items() if isinstance(value, (int, float))}
        for side, runs in results.items()
    }
    header = ["side", "docs in", "docs out", "seconds", "docs/s", "CPU s", "peak RSS sum MiB", "peak PSS sum MiB"]
    header += ["max 1-proc RSS MiB", "runs"]
    rows = []
    for side, m in median.items():
        docs_per_second = m["docs_in"] / m["seconds"]
        m["docs_per_second"] = docs_per_second
        rows.append(
            [
                LABELS.get(side, side),
                f"{m['docs_in']:,.0f}",
                f"{m['docs_out']:,.0f}",
                f"{m['seconds']:.1f}",
                f"{docs_per_second:,.0f}",
                _fmt(m.get("cpu_seconds_sampled"), ".1f"),
                _fmt(m.get("peak_rss_sum_mib"), ",.0f"),
                _fmt(m.get("peak_pss_mib"), ",.0f"),
                # both are lower bounds: sampling can miss a spike, rusage misses processes nobody waited for
                _fmt(max(m.get("max_single_rss_mib") or 0, m.get("max_rss_mib_rusage") or 0), ",.0f"),
                str(len(results[side])),
            ]
        )
    lines.append(
        f"corpus: {corpus_manifest['chars'] / 1e6:.1f} M chars, num_proc={args.num_proc} on every side, "
        "medians over runs, sides alternating order"
    )
    lines.append(format_table(header, rows))
    if "ours" in median:
        lines += ["", "ours against each datatrove row (above 1: ours faster / leaner):"]
        header = ["baseline", "docs/s ratio", "CPU s per doc: it / ours", "RSS sum: ours / it", "PSS sum: ours / it"]
        rows = [_ratios(LABELS[side], median["ours"], median[side]) for side in SIDES[1:] if side in median]
        lines.append(format_table(header, rows))
        if "datatrove" in median:
            ratio = median["ours"]["docs_per_second"] / median["datatrove"]["docs_per_second"]
            rss = _ratio(median["ours"].get("peak_rss_sum_mib"), median["datatrove"].get("peak_rss_sum_mib"))
            lines.append(
                f"headline (datatrove with regex words and xxhash): ours {ratio:.2f}x its docs/s "
                f"(target >= {TARGET_RATIO:g}x); peak memory summed over processes {_fmt(rss, '.2f')}x its "
                f"(target <= {MEMORY_TARGET:g}x)"
            )
    lines += [
        "",
        "seconds: the pipeline inside the side's process (read, filter, dedup, write), not interpreter start-up;",
        "  process seconds (start-up and imports included): "
        + ", ".join(f"{side} {m['process_seconds']:.1f}" for side, m in median.items()),
        "CPU s: user+system seconds summed over the side's process tree (sampled every "
        f"{SAMPLE_SECONDS:g} s, so a process living under one sample interval can be missed)",
        "peak RSS sum: the highest sum, over the side's whole process tree, of resident set sizes (a page shared by",
        f"  several processes counts in each); sampled every {SAMPLE_SECONDS:g} s",
        "peak PSS sum: the same for proportional set size (shared pages split",
        "  between the processes sharing them, so summing does not double count); sampled every "
        f"{SAMPLE_SECONDS:g} s, a shorter spike can be missed",
        "max 1-proc RSS: the largest resident set of any single process of the side (the larger of the sampled",
        "  value and getrusage's ru_maxrss over the side process and the children it waited for)",
        "",
        "what each side dropped (median run):",
    ]
    header = ["side", "by filters", "by near-dedup", "kept"]
    rows = [
        [
            LABELS.get(side, side),
            f"{m['docs_in'] - m['docs_after_filter']:,.0f}",
            f"{m['docs_after_filter'] - m['docs_out']:,.0f}",
            f"{m['docs_out']:,.0f}",
        ]
        for side, m in median.items()
    ]
    lines.append(format_table(header, rows))
    if corpus_manifest.get("spacy_docs"):
        lines.append(
            f"(datatrove with spaCy ran on the first {corpus_manifest['spacy_docs']:,} documents only, the same share "
            "of every shard: compare its docs/s and CPU s per document, not its counts)"
        )
        kinds_kept = {side: kept for side, kept in kinds_kept.items() if side != "datatrove-spacy"}
    lines += ["", "kept per kind of document (last run):"]
    kinds = corpus_manifest["kinds"]
    header = ["kind", "in corpus", *kinds_kept]
    rows = [
        [kind, f"{count:,}", *(f"{kept.get(kind, 0):,}" for kept in kinds_kept.values())]
        for kind, count in kinds.items()
    ]
    lines.append(format_table(header, rows))
    for side, runs in results.items():
        reasons = runs[-1]["drop_reasons"]
        top = ", ".join(f"{reason} {count:,}" for reason, count in list(reasons.items())[:8])
        lines.append(f"{side} filter drop reasons (top): {top}")
        stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in runs[-1]["stage_seconds"].items())
        lines.append(f"{side} stage seconds (last run): {stages}")
    return "\n".join(lines)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _ratios(label: str, ours: dict, other: dict) -> list[str]:
    cpu_per_doc = {
        name: _ratio(side.get("cpu_seconds_sampled"), side["docs_in"])
        for name, side in (("ours", ours), ("other", other))
    }
    return [
        label,
        f"{ours['docs_per_second'] / other['docs_per_second']:.2f}x",
        _fmt(_ratio(cpu_per_doc["other"], cpu_per_doc["ours"]), ".2f") + "x",
        _fmt(_ratio(ours.get("peak_rss_sum_mib"), other.get("peak_rss_sum_mib")), ".2f") + "x",
        _fmt(_ratio(ours.get("peak_pss_mib"), other.get("peak_pss_mib")), ".2f") + "x",
    ]


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def runner_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from make_corpus import ensure_corpus

    sides = SIDES if args.only is None else tuple(args.only)
    if args.spacy_repeats == 0:
        sides = tuple(side for side in sides if side != "datatrove-spacy")
    if any(side != "ours" for side in sides):
        check_datatrove_python(args.datatrove_python)
    corpus = args.work_dir / f"corpus-{args.num_docs}-seed{args.seed}"
    manifest = ensure_corpus(args.data_dir, corpus, num_docs=args.num_docs, seed=args.seed)
    kinds, by_line = load_kinds(corpus)
    corpora = {side: corpus for side in sides}
    if args.spacy_docs and args.spacy_docs < args.num_docs and "datatrove-spacy" in sides:
        corpora["datatrove-spacy"] = first_documents(corpus, args.spacy_docs)
        manifest["spacy_docs"] = args.spacy_docs
    pythons = {"ours": Path(sys.executable), "datatrove": args.datatrove_python}
    pythons["datatrove-spacy"] = args.datatrove_python
    results: dict[str, list[dict]] = {side: [] for side in sides}
    kinds_kept: dict[str, dict] = {}
    runs_root = args.work_dir / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    record_path = args.work_dir / f"corpus_speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    spacy_repeats = args.repeats if args.spacy_repeats is None else args.spacy_repeats
    for repeat in range(args.repeats):
        # spaCy's run is ~10x the others: it may run in fewer repeats (it is not the headline)
        this_round = tuple(side for side in sides if side != "datatrove-spacy" or repeat < spacy_repeats)
        order = this_round if repeat % 2 == 0 else tuple(reversed(this_round))
        for side in order:
            run_dir = Path(tempfile.mkdtemp(prefix=f"{side}-{repeat}-", dir=runs_root))
            try:
                result = measure_side(side, pythons[side], corpora[side], args.num_proc, run_dir)
                kinds_kept[side] = kept_by_kind(result["outputs"], kinds, by_line)
            finally:
                if not args.keep_runs:
                    shutil.rmtree(run_dir, ignore_errors=True)
            results[side].append(result)
            print(
                f"[run {repeat + 1}/{args.repeats}] {side}: {result['seconds']:.1f} s, "
                f"{result['docs_in']:,} -> {result['docs_after_filter']:,} -> {result['docs_out']:,} docs, "
                f"CPU {_fmt(result.get('cpu_seconds_sampled'), '.0f')} s, "
                f"peak RSS summed {_fmt(result.get('peak_rss_sum_mib'), ',.0f')} MiB, "
                f"peak PSS summed {_fmt(result.get('peak_pss_mib'), ',.0f')} MiB",
                flush=True,
            )
            # saved after every run, so a long benchmark stopped early still leaves what it measured
            record = {"args": {k: str(v) for k, v in vars(args).items()}, "corpus": manifest, "results": results}
            record_path.write_text(json.dumps({**record, "kept_by_kind": kinds_kept}, indent=2))
    print()
    print(summarize(results, manifest, kinds_kept, args))
    print(f"\nall figures: {record_path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-proc", type=int, default=2, help="processes per side (datatrove tasks = workers)")
    parser.add_argument("--num-docs", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating which side goes first")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="corpus cache and run folders")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--datatrove-python", type=Path, default=DEFAULT_DATATROVE_PYTHON)
    parser.add_argument("--only", choices=SIDES, nargs="+", help="run only these sides")
    parser.add_argument(
        "--spacy-docs",
        type=int,
        help="run datatrove with spaCy on the first N documents only (it takes ~20 ms a document; default: all)",
    )
    parser.add_argument(
        "--spacy-repeats",
        type=int,
        help="runs of datatrove with its default spaCy words (default: --repeats; 0 leaves that row out)",
    )
    parser.add_argument("--keep-runs", action="store_true", help="keep each run's outputs under WORK_DIR/runs")
    parser.add_argument("--report", type=Path, help="print the report of a saved corpus_speed-*.json and exit")
    # internal: run one side in this process (the runner starts these)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.num_proc < 1 or args.repeats < 1 or args.num_docs < 1:
        parser.error("--num-proc, --repeats and --num-docs must be >= 1")
    if args.spacy_repeats is not None and not 0 <= args.spacy_repeats <= args.repeats:
        parser.error("--spacy-repeats must be between 0 and --repeats")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.side:
        side_main(args)
    elif args.report:
        record = json.loads(args.report.read_text())
        args.num_proc = int(record["args"]["num_proc"])
        print(summarize(record["results"], record["corpus"], record["kept_by_kind"], args))
    else:
        args.work_dir = args.work_dir.resolve()
        runner_main(args)


if __name__ == "__main__":
    main()
