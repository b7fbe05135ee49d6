"""clean-corpus on Ray Data (`engine: ray`) against the datasets engine, on a 2-node Ray cluster on this machine:
the same documents kept and the same report on real web text with injected exact, near and chained copies; a
killed run resumes from its checkpoints; a worker killed mid-step is retried and changes nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import PROJECT, write_yaml

from llm_recipes.cli import load_recipe
from llm_recipes.errors import UserError

ray = pytest.importorskip("ray")

clean_corpus = load_recipe("clean-corpus")

# a filter that kills its worker process the first time it runs anywhere (the marker file says it did)
FAULT_MODULE = """
import os

MARKER = os.environ["RAY_TEST_FAULT_MARKER"]


def keep_after_one_crash(text):
    if not os.path.exists(MARKER):
        open(MARKER, "w").close()
        os._exit(1)
    return True


def keep_noting_allocator(text):
    with open(os.environ["RAY_TEST_ALLOCATOR_NOTE"], "w") as note:
        note.write(os.environ.get("MIMALLOC_PURGE_DELAY", "unset"))
    return True
"""
VERIFY_STEPS = [
    {"normalize": "web"},
    "gopher_repetition",
    {"pii": {}},
    {"exact_dedup": {}},
    {"near_dedup": {"threshold": 0.8, "verify": True}},
]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each on this machine; the fault filter's module importable by their workers."""
    helpers = tmp_path_factory.mktemp("ray_helpers")
    (helpers / "ray_fault_filter.py").write_text(FAULT_MODULE, encoding="utf-8")
    names = ("PYTHONPATH", "RAY_TEST_FAULT_MARKER", "RAY_TEST_ALLOCATOR_NOTE", "RAY_USAGE_STATS_ENABLED")
    saved = {key: os.environ.get(key) for key in names}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves this machine
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(helpers), saved["PYTHONPATH"]]))
    os.environ["RAY_TEST_FAULT_MARKER"] = str(helpers / "crashed")
    os.environ["RAY_TEST_ALLOCATOR_NOTE"] = str(helpers / "allocator")
    sys.path.insert(0, str(helpers))
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20})
    cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        sys.path.remove(str(helpers))
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def c4_copies(tmp_path_factory, shared_data):
    """The shared C4 sample in two files, plus 10 exact copies, 10 one-word copies, and 6 chains of copies each a
    few % further from the last (clusters joined only through their middle) with a copy too far to be kept out."""
    rng = random.Random(0)
    rows = [json.loads(line) for line in (shared_data / "c4_demo.jsonl").read_text().splitlines()]
    long_rows = [row for row in rows if len(row["text"].split()) > 300]

    def mutate(text: str, words: int) -> str:
        tokens = text.split(" ")
        for at in rng.sample(range(len(tokens)), words):
            tokens[at] = rng.choice(["zebra", "quokka", "lemur", "ibis"])
        return " ".join(tokens)

    extra = [dict(row) for row in long_rows[:10]] + [{"text": mutate(row["text"], 1)} for row in long_rows[:10]]
    for row in long_rows[10:16]:
        size, text = len(row["text"].split(" ")), row["text"]
        for _ in range(3):
            text = mutate(text, max(1, size // 45))
            extra.append({"text": text})
        extra.append({"text": mutate(row["text"], max(1, size // 25))})
    rng.shuffle(extra)
    folder = tmp_path_factory.mktemp("c4_copies")
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:150] + extra[:20]), encoding="utf-8")
    (folder / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[150:] + extra[20:]), encoding="utf-8")
    return [str(folder / "a.jsonl"), str(folder / "b.jsonl")]


def run(tmp_path, name: str, config: dict, *extra: str) -> dict:
    path = write_yaml(tmp_path / f"{name}.yaml", {"output_format": "parquet", **config})
    return clean_corpus.main(*clean_corpus.parse_args(["--config", str(path), *extra]))


def kept_ids(folder) -> list[str]:
    return sorted(pq.read_table(str(folder / "data")).column("id").to_pylist())


def assert_same_report(ray_report: dict, datasets_report: dict) -> None:
    """Every count, reason and detail (examples' rows and texts too) of every step; only the time may differ."""
    assert [s["name"] for s in ray_report["steps"]] == [s["name"] for s in datasets_report["steps"]]
    for ours, theirs in zip(ray_report["steps"], datasets_report["steps"], strict=True):
        ours, theirs = dict(ours), dict(theirs)
        ours.pop("seconds"), theirs.pop("seconds"), ours.pop("cached"), theirs.pop("cached")
        assert ours == theirs, ours["name"]
    for key in ("read", "totals", "splits", "top_drop_reasons", "cross_split_dedup"):
        assert ray_report[key] == datasets_report[key], key


def test_ray_keeps_what_datasets_keeps(tmp_path, ray_cluster, c4_copies):
    config = {"input_paths": c4_copies, "steps": VERIFY_STEPS, "validation_size": 0.05, "test_size": 5}
    single = run(tmp_path, "datasets", {**config, "output_dir": str(tmp_path / "datasets")})
    started = time.perf_counter()
    ours = run(tmp_path, "ray", {**config, "output_dir": str(tmp_path / "ray"), "engine": "ray"})
    print(f"ray engine: {time.perf_counter() - started:.1f} s")  # noqa: T201  (the figure the README quotes)

    assert_same_report(ours, single)
    assert kept_ids(tmp_path / "ray") == kept_ids(tmp_path / "datasets")
    steps = {s["name"]: s for s in ours["steps"]}
    assert ours["read"]["documents"] == 344
    assert steps["exact_dedup"]["drop_reasons"] == {"exact_duplicate": 9}  # the 10 copies, less one filtered out
    near = steps["near_dedup"]["details"]
    # the one-word copies and the chains: clusters of more than two, and candidates the true Jaccard turns down
    assert steps["near_dedup"]["docs_removed"] == 27 and near["clusters"] == 15
    assert near["examples"][0]["size"] >= 4 and near["rejected_pairs"] > 0 and near["check"] == "jaccard"
    assert ours["splits"] == {"train": 271, "validation": 15, "test": 5}
    # near_dedup left no duplicates for the splits to share: both engines checked and dropped none
    assert ours["cross_split_dedup"]["splits"]["train"] == {"documents": 271, "dropped": 0, "kept": 271}
    files = sorted(path.name for path in (tmp_path / "ray" / "data").iterdir())
    assert files[0].startswith("test-00000-of-") and files[-1].startswith("validation-")
    assert not (tmp_path / "ray.partial").exists()
    assert "_order" not in pq.read_schema(next((tmp_path / "ray" / "data").iterdir())).names


def test_killed_run_resumes_from_its_checkpoints(tmp_path, ray_cluster, c4_copies, capsys):
    steps = [VERIFY_STEPS[0], *VERIFY_STEPS[-2:]]  # normalize, exact and near dedup: the kill comes after the first
    config = {"input_paths": c4_copies, "steps": steps, "output_dir": str(tmp_path / "ray")}
    path = write_yaml(tmp_path / "ray.yaml", config)
    # as a user would: --engine ray alone (Parquet is its output format when none is set)
    command = [str(PROJECT / ".venv" / "bin" / "llm-recipes"), "clean-corpus", "--config", str(path), "--engine", "ray"]
    # start_new_session: the console script launches the recipe as a child; the kill takes the whole group
    process = subprocess.Popen(
        [*command, "--ray_address", ray_cluster.address],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first_step = tmp_path / "ray.partial" / "01-normalize" / "step.json"
    deadline = time.monotonic() + 240
    while not first_step.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert first_step.exists(), "the run ended before its first step was checkpointed"
    assert not (tmp_path / "ray").exists()

    capsys.readouterr()
    resumed = run(tmp_path, "ray", {**config, "engine": "ray"})
    printed = capsys.readouterr().out
    assert "read: 344 documents (checkpoint)" in printed and "normalize: 344 -> 344 documents (checkpoint)" in printed
    assert resumed["steps"][0]["cached"] and not resumed["steps"][-1]["cached"]
    single = run(tmp_path, "datasets", {**config, "output_dir": str(tmp_path / "datasets")})
    assert_same_report(resumed, single)
    assert kept_ids(tmp_path / "ray") == kept_ids(tmp_path / "datasets")


def test_worker_killed_mid_step_is_retried(tmp_path, ray_cluster, c4_copies):
    marker = os.environ["RAY_TEST_FAULT_MARKER"]
    steps = [{"callable": {"fn": "ray_fault_filter:keep_after_one_crash"}}, {"exact_dedup": {}}]
    config = {"input_paths": c4_copies, "steps": steps, "max_documents": 200}
    ours = run(tmp_path, "ray", {**config, "output_dir": str(tmp_path / "ray"), "engine": "ray"})
    assert os.path.exists(marker)  # a worker did die in the filter step
    single = run(tmp_path, "datasets", {**config, "output_dir": str(tmp_path / "datasets")})
    assert_same_report(ours, single)
    assert ours["read"]["documents"] == 200 and ours["steps"][0]["docs_out"] == 200
    assert kept_ids(tmp_path / "ray") == kept_ids(tmp_path / "datasets")


@pytest.mark.parametrize(("driver_setting", "worker_setting"), [(None, "0"), ("25", "25")])
def test_workers_hand_freed_memory_back(tmp_path, ray_cluster, c4_copies, driver_setting, worker_setting):
    """clean-corpus starts its workers with Arrow's allocator returning freed pages at once (what lowered a worker's
    peak at every corpus size), unless the driver's environment says otherwise; the cluster itself lacks it."""
    note = os.environ["RAY_TEST_ALLOCATOR_NOTE"]
    if os.path.exists(note):
        os.remove(note)
    steps = [{"callable": {"fn": "ray_fault_filter:keep_noting_allocator"}}]
    config = {"input_paths": c4_copies, "steps": steps, "max_documents": 20, "output_dir": str(tmp_path / "ray")}
    path = write_yaml(tmp_path / "ray.yaml", config)
    env = {key: value for key, value in os.environ.items() if key != "MIMALLOC_PURGE_DELAY"}
    if driver_setting is not None:
        env["MIMALLOC_PURGE_DELAY"] = driver_setting
    command = [str(PROJECT / ".venv" / "bin" / "llm-recipes"), "clean-corpus", "--config", str(path)]
    command += ["--engine", "ray", "--ray_address", ray_cluster.address]
    subprocess.run(command, cwd=PROJECT, env=env, check=True, capture_output=True, timeout=300)
    with open(note, encoding="utf-8") as written:
        assert written.read() == worker_setting
    assert pq.read_table(str(tmp_path / "ray" / "data")).num_rows == 20


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"output_format": "arrow"}, "set output_format: parquet"),
        ({"engine": "datasets", "ray_address": "auto"}, "ray_address is for engine: ray"),
    ],
)
def test_ray_config_errors_are_one_line(tmp_path, c4_copies, overrides, message):
    config = {"input_paths": c4_copies, "steps": VERIFY_STEPS, "engine": "ray", "output_format": "parquet"}
    config.update(overrides)
    with pytest.raises(UserError, match=message):
        clean_corpus.parse_args(["--config", str(write_yaml(tmp_path / "bad.yaml", config))])


def test_real_scale_config_parses(tmp_path, c4_copies):
    """configs/smollm2-135m/clean_corpus_ray.yaml is a valid Ray run (its shared-volume paths replaced)."""
    config = PROJECT / "configs" / "smollm2-135m" / "clean_corpus_ray.yaml"
    overrides = ["--input_paths", c4_copies[0], "--output_dir", str(tmp_path / "out")]
    (args,) = clean_corpus.parse_args(["--config", str(config), *overrides])
    assert args.engine == "ray" and args.output_format == "parquet" and args.test_size == 5000
    assert [next(iter(step)) if isinstance(step, dict) else step for step in args.steps][-2:] == [
        "exact_dedup",
        "near_dedup",
    ]


def test_dedup_across_splits_on_ray_drops_what_datasets_drops(ray_cluster, c4_copies):
    """The same split membership on both engines (rows in `_order` order): the same documents leave each split
    (transitively, through exact and near copies) and the same report, examples included."""
    from datasets import Dataset

    from llm_recipes.corpus.dedup import dedup_across_splits
    from llm_recipes.corpus.engines.ray_io import connect
    from llm_recipes.corpus.engines.ray_splits import dedup_splits_on_ray

    connect(ray_cluster.address)  # the engine's Ray Data settings, as clean-corpus sets them
    texts = [json.loads(line)["text"] for path in c4_copies for line in open(path, encoding="utf-8")]
    rows = [{"_order": at, "id": str(at), "text": text} for at, text in enumerate(texts)]
    draw = random.Random(1)
    split_of = {at: draw.choices(["train", "validation", "test"], weights=[8, 1, 1])[0] for at in range(len(rows))}
    members = {name: [row for row in rows if split_of[row["_order"]] == name] for name in ("train", "validation")}
    members["test"] = [row for row in rows if split_of[row["_order"]] == "test"]
    ours, report = dedup_splits_on_ray(
        {name: (ray.data.from_items(split, override_num_blocks=2), len(split)) for name, split in members.items()}
    )
    theirs, expected = dedup_across_splits({name: Dataset.from_list(split) for name, split in members.items()})

    assert report == expected
    for name, (split, size) in ours.items():
        kept = sorted(row["id"] for row in split.take_all())
        assert kept == sorted(theirs[name]["id"]) and size == len(kept)
    assert report["splits"]["train"]["dropped"] >= 3 and report["near_duplicate_clusters"] > 0
    assert report["splits"]["test"]["dropped"] == 0  # the last split is never cut


def test_user_error_in_a_task_is_one_line(tmp_path, ray_cluster):
    """on_malformed: fail raised while a Ray task reads: the same one-line UserError as on one machine."""
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "one fine document with enough words"}\nnot json\n', encoding="utf-8")
    config = {"input_paths": [str(corpus)], "steps": [{"exact_dedup": {}}], "on_malformed": "fail", "engine": "ray"}
    with pytest.raises(UserError) as raised:
        run(tmp_path, "bad", {**config, "output_dir": str(tmp_path / "out")})
    assert str(raised.value) == f"{corpus}:2: not valid JSON (Expecting value at column 1)"


@pytest.mark.parametrize("max_documents", [5, 7])
def test_read_report_cut_at_max_documents_counts_what_datasets_counts(tmp_path, ray_cluster, max_documents):
    """Sources are read in parallel, but the report counts malformed and empty records only up to the document where
    max_documents stops reading, as the datasets engine does (5: the first file's last bad line is never read)."""

    def doc(n: int) -> str:
        return json.dumps({"text": f"document number {n} says something of its own"})

    bad, empty = "{not json", json.dumps({"text": "   "})
    first = [doc(1), doc(2), doc(3), bad, doc(4), doc(5), empty, bad]
    second = [bad, doc(6), doc(7), doc(8), doc(9), bad]
    (tmp_path / "a.jsonl").write_text("\n".join(first) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(second) + "\n", encoding="utf-8")
    config = {"input_paths": [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], "steps": [{"exact_dedup": {}}]}
    config["max_documents"] = max_documents
    ours = run(tmp_path, "ray", {**config, "output_dir": str(tmp_path / "ray"), "engine": "ray"})
    single = run(tmp_path, "datasets", {**config, "output_dir": str(tmp_path / "datasets")})
    assert ours["read"] == single["read"]
    assert (ours["read"]["malformed"], ours["read"]["empty"]) == {5: (1, 0), 7: (3, 1)}[max_documents]
    assert kept_ids(tmp_path / "ray") == kept_ids(tmp_path / "datasets")
