"""The corpus stage past one machine: the Ray engine's docs/s as nodes and workers change, against our single-machine
engine and datatrove's own Ray executor, and its memory per worker as the corpus grows.

Every run cleans a deterministic corpus (`make_corpus.py`: web-like documents with exact and near copies and junk)
with `corpus_speed.py`'s steps (the Gopher repetition, Gopher quality, C4 and FineWeb filters, then MinHash near-dedup
with datatrove's defaults: word 5-grams, 14 bands x 8 rows) on a fresh local Ray cluster
(`ray.cluster_utils.Cluster`: real raylets, one per node, on this machine):

- `ray 1x2`, `ray 2x1`: `llm-recipes clean-corpus --engine ray` on one node of 2 CPUs, then on two nodes of 1 CPU
  (the same CPUs split differently: what a second node costs in shuffles and object transfers);
- `ray 1x4`: 4 worker processes instead of 2 (on this 2-core machine that oversubscribes the cores: it measures
  what more workers than cores cost, not scaling);
- `datasets 2`: the same config with `engine: datasets, num_proc: 2` (no Ray);
- `datatrove ray 1x2`: datatrove's `RayPipelineExecutor` on a 1x2 cluster, configured as in `corpus_speed.py`'s
  headline row (a regex word tokenizer in every filter and the signature step, xxhash), one task per input file;
  it runs in datatrove's own venv, which needs ray too.

Then the memory runs: `ray 1x2` on 50k, 200k and 800k documents. A sampler outside the run reads every process of
the run's tree every SAMPLE_SECONDS: Ray workers (`ray::` process titles), the driver (the process running the
pipeline) and Ray's own services, and keeps each one's peak RSS and USS (USS: pages only that process holds;
RSS also counts the object store pages a worker maps, which Ray holds in shared memory), and for workers their USS
outside the object store: a worker that writes an object is the only process mapping its store pages, so its USS
counts them too (with a 4 GiB store instead of 1.5 GiB, one 800k-document run's worker USS went from ~1,000 to
3,204 MiB).

End-to-end docs/s (not `corpus_speed.py`'s docs/s, which leaves out interpreter start-up) is documents in /
seconds of the stage's process (for ours: the `llm-recipes` command from start to exit,
interpreter start-up and connecting to the cluster included; for datatrove: from its imports and `ray.init` to its
last stage). Cluster start-up is not counted (a real cluster is already running). Repeats alternate the order of the
rows; medians are reported.

    python3 -m venv .venv-datatrove && .venv-datatrove/bin/pip install "datatrove[processing,io]" spacy \\
        "ray[data]==2.60.0"                                                                  # once
    .venv/bin/python benchmarks/corpus_ray.py --docs 50000 --repeats 2 --memory-docs 50000 200000 800000
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
sys.path.insert(0, str(HERE))

from corpus_speed import DEFAULT_DATATROVE_PYTHON, OUR_STEPS, format_table, run_datatrove  # noqa: E402

SAMPLE_SECONDS = 0.5
OBJECT_STORE_BYTES = 1536 * 2**20  # per cluster, split over its nodes; past it Ray spills to disk
TARGET_VS_DATATROVE = 2.0
TARGET_MEMORY_GROWTH = 1.25
DOCS_PER_FILE = 3125  # make_corpus's 50k documents in 16 files
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
# row -> (side, CPUs per node)
ROWS = {
    "ray 1x2": ("ours-ray", [2]),
    "ray 2x1": ("ours-ray", [1, 1]),
    "ray 1x4": ("ours-ray", [4]),
    "datasets 2": ("ours-datasets", [2]),
    "datatrove ray 1x2": ("datatrove-ray", [2]),
}


# --------------------------------------------------------------------------------------------------------------
# One run, in its own process: start the cluster, run the side, write a result json.


def start_cluster(cpus_per_node: list[int], store_bytes: int = OBJECT_STORE_BYTES):
    from ray.cluster_utils import Cluster

    store = store_bytes // len(cpus_per_node)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node[0], "object_store_memory": store})
    for cpus in cpus_per_node[1:]:
        cluster.add_node(num_cpus=cpus, object_store_memory=store)
    cluster.wait_for_nodes()
    return cluster


def our_config(corpus: Path, out: Path, engine: str, num_proc: int) -> Path:
    config = {
        "input_paths": [str(corpus / "part-*.jsonl")],
        "output_dir": str(out / "corpus"),
        "text_field": "text",
        "engine": engine,
        "steps": OUR_STEPS,
        "validation_size": 0,
        "test_size": 0,
    }
    if engine == "datasets":
        config["num_proc"] = num_proc
    path = out / "clean_corpus.json"
    path.write_text(json.dumps(config))
    return path


def run_ours(corpus: Path, out: Path, engine: str, cpus: list[int], address: str | None) -> dict:
    """`llm-recipes clean-corpus` as a user runs it; its report gives the counts."""
    config = our_config(corpus, out, engine, sum(cpus))
    command = [str(Path(sys.executable).parent / "llm-recipes"), "clean-corpus", "--config", str(config)]
    if address:
        command += ["--ray_address", address]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode:
        raise SystemExit(f"clean-corpus failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    report = json.loads((out / "corpus" / "corpus_report.json").read_text())
    steps = report["steps"]
    return {
        "seconds": seconds,
        "docs_in": steps[0]["docs_in"],
        "docs_after_filter": steps[0]["docs_out"],
        "docs_out": steps[-1]["docs_out"],
        "stage_seconds": {step["name"]: step["seconds"] for step in steps},
    }


def side_main(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    cpus = [int(n) for n in args.cpus.split(",")]
    store_bytes = args.object_store_mib * 2**20
    cluster = start_cluster(cpus, store_bytes) if args.side != "ours-datasets" else None
    try:
        (args.out / "started").write_text(str(os.getpid()))  # the sampler's clock starts here
        if args.side == "datatrove-ray":
            started = time.perf_counter()
            import ray

            ray.init(address=cluster.address, log_to_driver=False)
            files = len(list(args.corpus.glob("part-*.jsonl")))
            result = run_datatrove(args.corpus, args.out, sum(cpus), "regex", ray_tasks=files)
            result["seconds"] = time.perf_counter() - started
            result.pop("outputs")
        else:
            engine = "ray" if args.side == "ours-ray" else "datasets"
            result = run_ours(args.corpus, args.out, engine, cpus, cluster.address if cluster else None)
    finally:
        if "ray" in sys.modules:  # this process joined the cluster as a driver (datatrove): leave before it stops
            sys.modules["ray"].shutdown()
        if cluster is not None:
            cluster.shutdown()
    args.result.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------------------------------------------
# The runner: a sampler per run, watching every process of the run's tree by kind.


class KindSampler(threading.Thread):
    """Every SAMPLE_SECONDS, each process of the tree under `pid`: the peak RSS and USS of any Ray worker, of the
    driver, and of Ray's services, the peak RSS summed over the tree, and CPU seconds summed over processes."""

    def __init__(self, pid: int, driver_names: tuple[str, ...]):
        super().__init__(daemon=True)
        import psutil

        self.psutil, self.root, self.driver_names = psutil, psutil.Process(pid), driver_names
        self.stop = threading.Event()
        self.peak = {kind: {"rss": 0, "uss": 0, "own": 0} for kind in ("worker", "driver", "ray services")}
        self.peak_rss_sum, self.cpu, self.workers_seen = 0, {}, set()

    def kind_of(self, proc) -> str:
        command = proc.cmdline()
        if command and command[0].startswith("ray::"):
            return "worker"
        if proc.pid == self.root.pid or any(name in " ".join(command) for name in self.driver_names):
            return "driver"
        return "ray services"

    def run(self) -> None:
        psutil = self.psutil
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for proc in procs:
                try:
                    kind, info, times = self.kind_of(proc), proc.memory_full_info(), proc.cpu_times()
                except psutil.Error:
                    continue
                peak = self.peak[kind]
                if info.uss > peak["uss"]:
                    peak["uss"], peak["uss title"] = info.uss, " ".join(proc.cmdline())[:80]
                peak["rss"] = max(peak["rss"], info.rss)
                if kind == "worker":
                    try:
                        own = uss_outside_object_store(proc.pid)
                    except OSError:
                        own = 0  # the worker exited between the two reads
                    if own > peak["own"]:
                        peak["own"], peak["own title"] = own, " ".join(proc.cmdline()).strip()[:80]
                total += info.rss
                self.cpu[proc.pid] = times.user + times.system
                if kind == "worker":
                    self.workers_seen.add(proc.pid)
            self.peak_rss_sum = max(self.peak_rss_sum, total)
            self.stop.wait(SAMPLE_SECONDS)


def uss_outside_object_store(pid: int) -> int:
    """A process's private bytes less the object store's pages it maps: a worker that writes an object into Ray's
    shared-memory store (`/dev/shm/plasma...`) is the only process mapping those pages, so USS counts them as its
    own, though the store's size, not the worker, bounds them."""
    private, in_store = 0, False
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as smaps:
        for line in smaps:
            if MAPPING.match(line):
                in_store = "/dev/shm/plasma" in line
            elif not in_store and line.startswith(("Private_Clean:", "Private_Dirty:")):
                private += int(line.split()[1]) * 1024
    return private


def measure(row: str, corpus: Path, run_dir: Path, datatrove_python: Path, store_mib: int) -> dict:
    side, cpus = ROWS[row]
    python = datatrove_python if side == "datatrove-ray" else Path(sys.executable)
    out, result_path, log_path = run_dir / "out", run_dir / "result.json", run_dir / "side.log"
    env = dict(os.environ, HF_DATASETS_CACHE=str(run_dir / "hf_cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # each run's Ray sessions and spilled objects, removed with the run; short, as Ray's socket paths must be
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-bench-")
    env.pop("RAY_ADDRESS", None)
    command = [str(python), str(Path(__file__).resolve()), "--side", side, "--corpus", str(corpus)]
    command += ["--out", str(out), "--result", str(result_path), "--cpus", ",".join(map(str, cpus))]
    command += ["--object-store-mib", str(store_mib)]
    driver_names = ("clean-corpus", "clean_corpus") if side != "datatrove-ray" else ()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        sampler = KindSampler(child.pid, driver_names)
        while not (out / "started").exists() and child.poll() is None:
            time.sleep(0.1)  # cluster start-up is not measured
        sampler.start()
        returncode = child.wait()
    sampler.stop.set()
    sampler.join()
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    if returncode:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise SystemExit(f"{row} failed (exit {returncode}); last lines of {log_path}:\n" + "\n".join(tail))
    result = json.loads(result_path.read_text())
    mib = 2**20
    for kind, peak in sampler.peak.items():
        result[f"{kind} rss"], result[f"{kind} uss"] = peak["rss"] / mib, peak["uss"] / mib
        result[f"{kind} uss outside object store"] = peak["own"] / mib
        result[f"{kind} peak uss process"] = peak.get("uss title", "")
        result[f"{kind} peak uss outside object store process"] = peak.get("own title", "")
    result["rss sum"], result["cpu seconds"] = sampler.peak_rss_sum / mib, sum(sampler.cpu.values())
    result["workers seen"] = len(sampler.workers_seen)
    result["docs/s"] = result["docs_in"] / result["seconds"]
    return result


def median_row(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key, value in runs[0].items() if _number(value)}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scaling_table(results: dict[str, list[dict]]) -> str:
    header = ["row", "docs in", "kept", "process s", "end-to-end docs/s", "CPU s", "worker RSS", "worker USS"]
    header += ["driver RSS", "RSS sum", "runs"]
    rows = []
    for row, runs in results.items():
        m = median_row(runs)
        rows.append(
            [row, f"{m['docs_in']:,.0f}", f"{m['docs_out']:,.0f}", f"{m['seconds']:.1f}", f"{m['docs/s']:,.0f}"]
            + [f"{m['cpu seconds']:.0f}", f"{m['worker rss']:,.0f}", f"{m['worker uss']:,.0f}"]
            + [f"{m['driver rss']:,.0f}", f"{m['rss sum']:,.0f}", str(len(runs))]
        )
    return format_table(header, rows)


def ratio_lines(results: dict[str, list[dict]]) -> list[str]:
    speed = {row: median_row(runs)["docs/s"] for row, runs in results.items()}
    pairs = [
        ("ray 2x1", "ray 1x2", "2 nodes of 1 CPU / 1 node of 2 CPUs (same CPUs)", None),
        ("ray 1x4", "ray 1x2", "4 workers / 2 workers (on 2 cores)", None),
        ("ray 1x2", "datasets 2", "Ray engine / datasets engine (2 CPUs each)", None),
        ("ray 1x2", "datatrove ray 1x2", "Ray engine / datatrove RayPipelineExecutor (1x2)", TARGET_VS_DATATROVE),
    ]
    lines = []
    for top, bottom, label, target in pairs:
        if top in speed and bottom in speed:
            note = f" (target >= {target:g}x)" if target else ""
            lines.append(f"  end-to-end docs/s {label}: {speed[top] / speed[bottom]:.2f}x{note}")
    return lines


def memory_table(results: dict[int, dict]) -> list[str]:
    header = ["docs", "process s", "end-to-end docs/s", "worker RSS", "worker USS", "worker USS outside store"]
    header += ["driver RSS", "driver USS", "Ray services RSS"]
    rows = [
        [f"{docs:,}", f"{r['seconds']:.1f}", f"{r['docs/s']:,.0f}", f"{r['worker rss']:,.0f}"]
        + [f"{r['worker uss']:,.0f}", f"{r.get('worker uss outside object store', 0):,.0f}"]
        + [f"{r['driver rss']:,.0f}", f"{r['driver uss']:,.0f}"]
        + [f"{r['ray services rss']:,.0f}"]
        for docs, r in sorted(results.items())
    ]
    lines = [format_table(header, rows)]
    peaks = [(docs, r.get("worker peak uss outside object store process", "").strip()) for docs, r in results.items()]
    peaks.sort()
    if any(task for _, task in peaks):
        lines.append("  the task at a worker's peak outside the store: " + "; ".join(f"{d:,}: {t}" for d, t in peaks))
    if len(results) > 1:
        smallest, largest = results[min(results)], results[max(results)]
        keys = ("worker rss", "worker uss", "worker uss outside object store", "driver rss", "driver uss")
        growth = {key: largest[key] / smallest[key] for key in keys if smallest.get(key) and key in largest}
        lines.append(
            f"  {max(results):,} / {min(results):,} documents: "
            + ", ".join(f"{key} {value:.2f}x" for key, value in growth.items())
            + f" (target: worker within {TARGET_MEMORY_GROWTH:g}x, driver bounded)"
        )
    return lines


def runner_main(args: argparse.Namespace) -> None:
    from make_corpus import ensure_corpus

    rows = args.rows or list(ROWS)
    if "datatrove ray 1x2" in rows and not args.datatrove_python.exists():
        raise SystemExit(f"no datatrove interpreter at {args.datatrove_python}; see this script's docstring")
    runs_root = args.work_dir / "ray-runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    record_path = args.work_dir / f"corpus_ray-{time.strftime('%Y%m%d-%H%M%S')}.json"
    record: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "scaling": {}, "memory": {}}

    def run(row: str, docs: int) -> dict:
        # a crawl grows by more files, not bigger ones: DOCS_PER_FILE documents a file at every size
        shards = max(16, -(-docs // DOCS_PER_FILE))
        corpus = args.work_dir / f"corpus-{docs}-seed0" if shards == 16 else args.work_dir / f"corpus-{docs}-{shards}"
        manifest = ensure_corpus(args.data_dir, corpus, num_docs=docs, seed=0, num_shards=shards)
        record.setdefault("corpora", {})[docs] = manifest
        run_dir = Path(tempfile.mkdtemp(prefix=row.replace(" ", "_") + "-", dir=runs_root))
        try:
            result = measure(row, corpus, run_dir, args.datatrove_python, args.object_store_mib)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        print(
            f"{row} on {docs:,} docs: {result['seconds']:.1f} s, {result['docs/s']:,.0f} end-to-end docs/s, "
            f"{result['docs_in']:,} -> {result['docs_after_filter']:,} -> {result['docs_out']:,}, "
            f"worker RSS {result['worker rss']:,.0f} MiB (USS {result['worker uss']:,.0f}), "
            f"driver RSS {result['driver rss']:,.0f} MiB",
            flush=True,
        )
        record_path.write_text(json.dumps(record, indent=2))
        return result

    for repeat in range(args.repeats):
        for row in rows if repeat % 2 == 0 else reversed(rows):
            record["scaling"].setdefault(row, []).append(run(row, args.docs))
    for docs in args.memory_docs:
        record["memory"][docs] = run("ray 1x2", docs)
    record_path.write_text(json.dumps(record, indent=2))
    print(report(record))
    print(f"\nall figures: {record_path}")


def report(record: dict) -> str:
    lines = []
    if record["scaling"]:
        load = os.getloadavg()
        lines += ["", f"scaling (medians; MiB are peaks of any one process of that kind; load now {load[0]:.2f})"]
        lines += [scaling_table(record["scaling"]), *ratio_lines(record["scaling"])]
    if record["memory"]:
        store = int(record["args"].get("object_store_mib", OBJECT_STORE_BYTES // 2**20))
        lines += ["", f"memory as the corpus grows (ray 1x2, one run each; MiB; object store {store:,} MiB)"]
        lines += memory_table({int(docs): result for docs, result in record["memory"].items()})
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=50_000, help="documents in the scaling runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), help="scaling rows to run (default: all)")
    parser.add_argument("--memory-docs", type=int, nargs="*", default=[50_000, 200_000, 800_000])
    parser.add_argument(
        "--object-store-mib",
        type=int,
        default=OBJECT_STORE_BYTES // 2**20,
        help="object store of each run's cluster, split over its nodes (past it Ray spills to disk)",
    )
    parser.add_argument("--work-dir", type=Path, default=HERE / ".work")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--datatrove-python", type=Path, default=DEFAULT_DATATROVE_PYTHON)
    parser.add_argument("--report", type=Path, help="print the report of a saved corpus_ray-*.json and exit")
    parser.add_argument("--side", choices=["ours-ray", "ours-datasets", "datatrove-ray"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.side:
        side_main(args)
    elif args.report:
        print(report(json.loads(args.report.read_text())))
    else:
        args.work_dir = args.work_dir.resolve()
        runner_main(args)


if __name__ == "__main__":
    main()
