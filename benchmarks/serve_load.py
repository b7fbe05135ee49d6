"""Serving under load, and feedback surviving a crash: `llm-recipes serve` against the bare engine it wraps.

Phase 1, throughput. Our server (`llm-recipes serve`: routing, tagging, limits, metrics, the feedback store around
transformers' serving code) and the bare engine (`transformers serve`, the same code without our layer) serve the
same model folder on 127.0.0.1, one at a time (never both: they would share the cores). Each gets a warm-up, then
`--clients` threads send `--requests` non-streaming chat completions between them (fixed prompts, `max_tokens`
fixed, greedy as the model's generation config says, `ignore_eos`-free: tokens counted from each answer's `usage`).
Both run on the CPU in float32 without continuous batching (what our engine picks on a CPU, `continuous_batching:
auto`); the bare engine gets `--device cpu --dtype float32` and the model preloaded, as a user would start it.
Repeats alternate the order (ours, bare, bare, ours, ...); the table gives medians of requests/s, tokens/s and
p50/p99 latency, and ours/bare throughput against the target (>= 0.95).

Phase 2, durability. Our server on SQLite (WAL, synchronous=FULL) and, when there is one, PostgreSQL (`--postgres
URL`, or a throwaway cluster started with tests/postgres_cluster.py): clients ask for an answer and post a thumbs
rating of it (POST /v1/feedback); a rating counts as acknowledged only when the server said 2xx. When half the
ratings are acknowledged the server's whole process group (server and model processes) is killed with SIGKILL, and
restarted on the same database and port; the clients carry on (a request that fails meanwhile is retried; a rating
whose answer was lost with the server is not acknowledged). At the end the feedback ids the server acknowledged are
looked up in the database: lost = acknowledged but not stored (must be 0).

    .venv/bin/python benchmarks/serve_load.py                                  # tiny random chat model, all phases
    .venv/bin/python benchmarks/serve_load.py --clients 4 --requests 200 --max-tokens 16 --repeats 3 \\
        --durability-requests 100 --postgres auto --output serve_load.json
    .venv/bin/python benchmarks/serve_load.py --model outputs/demo/sft --skip-durability

Uses nothing but the standard library for the clients (http.client in threads). Results go to --output as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
DEMO_DATA = PROJECT / "configs" / "demo" / "data"
PROMPTS = [
    "What is 2 + 3?",
    "Name an animal that lives in the sea.",
    "Write one sentence about the weather.",
    "What is the capital of France?",
    "Give me a word that rhymes with cat.",
    "Count from one to five.",
    "What colour is the sky?",
    "Say hello in French.",
]
TARGET = 0.95


# --------------------------------------------------------------------------------------------------------------
# The model, and the two servers as processes


def build_tiny_chat_model(folder: Path) -> Path:
    """The tests' tiny chat model (tests/conftest.py chat_model_dir): llama-tiny, random weights, a ChatML BPE
    tokenizer of 800 tokens trained on the demo data here. Nothing is downloaded."""
    import torch

    from llm_recipes.models.loading import init_decoder
    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    texts = (DEMO_DATA / "arithmetic_alpaca.jsonl").read_text().splitlines()
    texts += [json.dumps(row) for row in json.loads((DEMO_DATA / "animals_sharegpt.json").read_text())]
    texts += [json.loads(page)["text"] for page in (DEMO_DATA / "raw_corpus.jsonl").read_text().splitlines()[:300]]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=800, chat=True)
    torch.manual_seed(0)
    init_decoder("llama-tiny", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_bin(name: str) -> str:
    installed = Path(sys.executable).with_name(name)
    if not installed.is_file():
        sys.exit(f"error: {installed} not found (run from the project's venv: .venv/bin/python {sys.argv[0]})")
    return str(installed)


def our_command(model: str, port: int, db: str, max_tokens: int) -> list[str]:
    return [
        *[venv_bin("llm-recipes"), "serve", "--model", model, "--port", str(port), "--db", db],
        *["--device", "cpu", "--dtype", "float32", "--continuous_batching", "auto"],  # auto: off on a CPU
        *["--max_tokens", str(max(max_tokens, 256)), "--log_level", "warning"],
    ]


def bare_command(model: str, port: int) -> list[str]:
    # the model preloaded (force_model) as our server preloads it; no continuous batching, as ours on a CPU
    return [
        *[venv_bin("transformers"), "serve", model, "--host", "127.0.0.1", "--port", str(port)],
        *["--device", "cpu", "--dtype", "float32", "--no-continuous-batching", "--log-level", "warning"],
    ]


class Server:
    """A server process in a session of its own, so SIGKILL reaches its model processes too."""

    def __init__(self, name: str, command: list[str], port: int, log: Path):
        self.name, self.command, self.port, self.log = name, command, port, log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 600) -> float:
        started = time.perf_counter()
        with self.log.open("a") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                sys.exit(f"error: {self.name} exited ({self.process.returncode}); see {self.log}:\n" + tail(self.log))
            try:
                if request(self.port, "GET", "/health", timeout=5)[0] == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.25)
        self.kill()
        sys.exit(f"error: {self.name} not ready after {timeout:.0f} s; see {self.log}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(60)
        self.process = None

    def stop(self) -> None:
        """SIGTERM (a clean stop), then SIGKILL of whatever is left in the group."""
        if self.process is not None:
            pid = self.process.pid
            self.kill(signal.SIGTERM)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------------------
# Clients


def request(port: int, method: str, path: str, body: Any = None, timeout: float = 300) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read().decode()
    finally:
        connection.close()
    return response.status, (json.loads(payload) if payload.startswith(("{", "[")) else payload)


def chat_body(index: int, model: str | None, max_tokens: int) -> dict:
    body = {"messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}], "max_tokens": max_tokens}
    return body if model is None else {**body, "model": model}


def load_run(port: int, model: str | None, clients: int, requests: int, max_tokens: int) -> dict:
    """`requests` chat completions from `clients` threads; per-request latency, wall time, tokens answered."""
    latencies: list[float] = []
    tokens, errors = [0], [0]
    answers: dict[int, str] = {}  # each prompt's answer, to check that both servers generate the same
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            status, payload = request(port, "POST", "/v1/chat/completions", chat_body(index, model, max_tokens))
            elapsed = time.perf_counter() - started
            with lock:
                if status != 200:
                    errors[0] += 1
                    continue
                latencies.append(elapsed)
                tokens[0] += payload["usage"]["completion_tokens"]
                answers.setdefault(index % len(PROMPTS), payload["choices"][0]["message"]["content"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors[0]:
        sys.exit(f"error: {errors[0]} of {requests} requests failed on port {port}")
    latencies.sort()
    return {
        "requests": requests,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "tokens_per_s": tokens[0] / wall,
        "completion_tokens": tokens[0],
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "answers": [answers[index] for index in sorted(answers)],
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    rank = max(1, -(-int(q * 1000) * len(sorted_values) // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# --------------------------------------------------------------------------------------------------------------
# Phase 1: throughput


def throughput(args: argparse.Namespace, model: str, work: Path) -> dict:
    servers = {
        "ours": (lambda port: our_command(model, port, f"sqlite:///{work / 'load.db'}", args.max_tokens), None),
        "bare": (lambda port: bare_command(model, port), str(Path(model).resolve())),
    }
    runs: dict[str, list[dict]] = {"ours": [], "bare": []}
    for repeat in range(args.repeats):
        order = ["ours", "bare"] if repeat % 2 == 0 else ["bare", "ours"]
        for name in order:
            make_command, model_field = servers[name]
            port = free_port()
            server = Server(name, make_command(port), port, work / f"{name}.log")
            ready = server.start()
            try:
                load_run(port, model_field, args.clients, args.warmup, args.max_tokens)
                result = load_run(port, model_field, args.clients, args.requests, args.max_tokens)
            finally:
                server.stop()
            result["ready_s"] = ready
            runs[name].append(result)
            print(
                f"  repeat {repeat + 1} {name}: {result['requests_per_s']:.2f} req/s, "
                f"{result['tokens_per_s']:.1f} tok/s, p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms",
                flush=True,
            )
    keys = ("requests_per_s", "tokens_per_s", "p50_ms", "p99_ms")
    medians = {
        name: {key: statistics.median(run[key] for run in results) for key in keys} for name, results in runs.items()
    }
    ratio = medians["ours"]["requests_per_s"] / medians["bare"]["requests_per_s"]
    # like for like only if both generate the same text for the same prompts (greedy, same settings)
    same = all(run["answers"] == runs["bare"][0]["answers"] for run in runs["ours"] + runs["bare"])
    return {
        "runs": runs,
        "medians": medians,
        "ratio_requests_per_s": ratio,
        "target": TARGET,
        "met": ratio >= TARGET,
        "same_answers": same,
    }


# --------------------------------------------------------------------------------------------------------------
# Phase 2: durability across SIGKILL


def durability(args: argparse.Namespace, model: str, db: str, label: str, work: Path) -> dict:
    from sqlalchemy import create_engine, text

    from llm_recipes.serving.store import database_url

    port = free_port()
    server = Server(
        f"ours ({label})",
        our_command(model, port, db, args.max_tokens),
        port,
        work / f"kill-{label.split()[0].lower()}.log",
    )
    server.start()
    acknowledged: list[int] = []
    counts = {"answers": 0, "feedback_failed": 0, "chat_failed": 0, "feedback_in_flight": 0}
    counter = iter(range(args.durability_requests))
    lock = threading.Lock()
    half = args.durability_requests // 2
    deadline = time.monotonic() + args.durability_timeout

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            while time.monotonic() < deadline:  # an answer is retried until the server is back
                try:
                    status, answer = request(
                        port, "POST", "/v1/chat/completions", chat_body(index, None, args.max_tokens), 60
                    )
                except (OSError, http.client.HTTPException):  # refused, reset, or cut off by the kill
                    status, answer = 0, None
                if status == 200:
                    break
                with lock:
                    counts["chat_failed"] += 1
                time.sleep(0.2)
            else:
                return
            rating = {"response_id": answer["id"], "rating": "up" if index % 2 else "down"}
            with lock:
                counts["feedback_in_flight"] += 1
            try:
                status, payload = request(port, "POST", "/v1/feedback", rating, 60)
            except (OSError, http.client.HTTPException):
                status, payload = 0, None
            with lock:
                counts["feedback_in_flight"] -= 1
                counts["answers"] += 1
                if 200 <= status < 300:
                    acknowledged.extend(payload["feedback_ids"])
                else:
                    counts["feedback_failed"] += 1

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < half and any(thread.is_alive() for thread in threads):
        time.sleep(0.01)
    # the kill waits for a rating on its way (sent, not yet answered): the case that loses data if the server
    # answered 2xx before its commit; ratings take milliseconds beside answers, so a kill at a random moment misses them
    wait_until = time.monotonic() + 60
    while time.monotonic() < wait_until and any(thread.is_alive() for thread in threads):
        with lock:
            if counts["feedback_in_flight"]:
                in_flight_at_kill = counts["feedback_in_flight"]
                acknowledged_at_kill = len(acknowledged)
                server.kill(signal.SIGKILL)  # the whole group, mid-load
                break
        time.sleep(0.0005)
    else:
        in_flight_at_kill, acknowledged_at_kill = 0, len(acknowledged)
        server.kill(signal.SIGKILL)
    restart_s = server.start()
    for thread in threads:
        thread.join()
    server.stop()
    if time.monotonic() >= deadline:
        print(f"  warning: durability run for {label} hit --durability-timeout", flush=True)

    engine = create_engine(database_url(db))
    try:
        with engine.connect() as connection:
            stored = {row[0] for row in connection.execute(text("SELECT id FROM feedback"))}
    finally:
        engine.dispose()
    acked = set(acknowledged)
    result = {
        "database": label,
        "requests": args.durability_requests,
        "answers_received": counts["answers"],
        "chat_attempts_failed": counts["chat_failed"],
        "feedback_not_acknowledged": counts["feedback_failed"],
        "acknowledged_before_kill": acknowledged_at_kill,
        "ratings_in_flight_at_kill": in_flight_at_kill,
        "acknowledged": len(acked),
        "stored": len(stored),
        "lost": len(acked - stored),
        "stored_not_acknowledged": len(stored - acked),
        "restart_s": restart_s,
    }
    print(
        f"  {label}: acknowledged {result['acknowledged']} (of them {acknowledged_at_kill} before the kill, "
        f"{in_flight_at_kill} rating(s) in flight at it), stored_not_acknowledged {result['stored_not_acknowledged']}, "
        f"stored {result['stored']}, lost {result['lost']}; restart took {restart_s:.1f} s",
        flush=True,
    )
    return result


def postgres_url(args: argparse.Namespace, work: Path) -> tuple[str | None, Path | None]:
    """A URL given, a throwaway cluster (tests/postgres_cluster.py) for `auto` when PostgreSQL is installed, or none."""
    if args.postgres not in ("auto", "off"):
        return args.postgres, None
    if args.postgres == "off":
        return None, None
    script = PROJECT / "tests" / "postgres_cluster.py"
    folder = Path(tempfile.mkdtemp(prefix="serve-load-pg-"))
    result = subprocess.run([sys.executable, str(script), "start", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"  PostgreSQL: none (tests/postgres_cluster.py: {result.stderr.strip()[-200:]})", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return None, None
    return result.stdout.strip().splitlines()[-1], folder


# --------------------------------------------------------------------------------------------------------------
# Table and main


def print_tables(results: dict) -> None:
    load = results.get("throughput")
    if load:
        s = results["settings"]
        print(
            f"\nThroughput: {s['clients']} clients, {s['requests']} requests, max_tokens {s['max_tokens']}, "
            f"medians of {s['repeats']} repeats, CPU float32, no continuous batching"
        )
        print("| server | requests/s | tokens/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
        names = {"ours": "llm-recipes serve", "bare": "transformers serve (bare)"}
        for key, label in names.items():
            m = load["medians"][key]
            row = f"{m['requests_per_s']:.2f} | {m['tokens_per_s']:.1f} | {m['p50_ms']:.0f} | {m['p99_ms']:.0f}"
            print(f"| {label} | {row} |")
        print(f"same answers from both servers for the same prompts: {'yes' if load['same_answers'] else 'NO'}")
        verdict = "met" if load["met"] else "NOT MET"
        print(f"ours / bare throughput: {load['ratio_requests_per_s']:.3f} (target >= {TARGET}: {verdict})")
    if results.get("durability"):
        print("\nDurability: SIGKILL of the server's process group mid-load, restart on the same database")
        print(
            "| database | answers | chat requests failed (retried) | ratings not acknowledged | ratings in flight at "
            "the kill | ratings acknowledged | stored | lost | stored, not acknowledged | restart s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in results["durability"]:
            print(
                f"| {r['database']} | {r['answers_received']} | {r['chat_attempts_failed']} | "
                f"{r['feedback_not_acknowledged']} | {r.get('ratings_in_flight_at_kill', 'n/a')} | "
                f"{r['acknowledged']} | {r['stored']} | "
                f"**{r['lost']}** | {r['stored_not_acknowledged']} | {r['restart_s']:.1f} |"
            )
        lost = sum(r["lost"] for r in results["durability"])
        print(f"feedback lost: {lost} (target 0: {'met' if lost == 0 else 'NOT MET'})")
    print(f"\nload average at the end: {results['load_average']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder with a chat template (default: a tiny random chat model)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=200, help="timed chat completions per server and repeat")
    parser.add_argument("--warmup", type=int, default=8, help="untimed requests after each start")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request")
    parser.add_argument("--repeats", type=int, default=3, help="runs per server, order alternating")
    parser.add_argument("--durability-requests", type=int, default=100, help="answers rated per database")
    parser.add_argument("--durability-timeout", type=float, default=900, help="seconds a durability run may take")
    parser.add_argument("--postgres", default="auto", help="a PostgreSQL URL, auto (a throwaway cluster), or off")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-durability", action="store_true")
    parser.add_argument("--output", help="the results JSON (default: serve_load.json in the run's temp folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    model = args.model or str(build_tiny_chat_model(work / "tiny-chat"))
    settings = {k: getattr(args, k) for k in ("clients", "requests", "warmup", "max_tokens", "repeats")}
    results: dict[str, Any] = {"model": args.model or "tiny random llama (built here)", "settings": settings}
    print(f"model {model}; logs in {work}", flush=True)
    if not args.skip_throughput:
        print("Phase 1: throughput", flush=True)
        results["throughput"] = throughput(args, model, work)
    if not args.skip_durability:
        print("Phase 2: durability", flush=True)
        results["durability"] = [durability(args, model, f"sqlite:///{work / 'kill.db'}", "SQLite (WAL)", work)]
        url, cluster = postgres_url(args, work)
        if url:
            try:
                results["durability"].append(durability(args, model, url, "PostgreSQL", work))
            finally:
                if cluster is not None:
                    script = PROJECT / "tests" / "postgres_cluster.py"
                    subprocess.run([sys.executable, str(script), "stop", str(cluster)], capture_output=True)
    results["load_average"] = [round(value, 2) for value in os.getloadavg()]
    print_tables(results)
    output = Path(args.output or work / "serve_load.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {output}")


if __name__ == "__main__":
    main()
