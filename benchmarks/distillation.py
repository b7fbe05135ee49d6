"""Distillation vs labels only: the same small student, the same data and steps, with and without a teacher.

    .venv/bin/python benchmarks/distillation.py                     # llama-small teacher, llama-tiny students, CPU
    .venv/bin/python benchmarks/distillation.py --teacher-dir benchmarks/.work/kd-teacher --full-data
    .venv/bin/python benchmarks/distillation.py --teacher-steps 3000 --device cuda

One run, in one process. A BPE tokenizer is trained on the real-format web pages and Wikipedia articles in
../shared/data (every tenth document held out for evaluation) and a teacher (llama-small, 3.5M parameters) is
trained on all the packed training blocks (or loaded from `--teacher-dir`, where a first run leaves it). Then two
students of one size (llama-tiny, 0.2M) from the same random initialisation train for the same steps on the same
blocks in the same order with the same schedule: one with the distill recipe's loss (`alpha * T^2 *
KL(teacher || student) + (1 - alpha) * CE`, through its DistillationTrainer), one with `alpha = 0` -- the
cross-entropy on the labels alone, the same trainer, which then never runs the teacher.

The students' data is a transfer set: `--student-blocks` blocks drawn from the teacher's training data (the usual
distillation setting: a large model trained on everything, compressed with a smaller set). `--full-data` also runs
both students on all the blocks. All models are scored on the held-out documents with
`llm_recipes.evaluation.perplexity()` (module `sliding_window`), in windows of the training block length.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-preset", default="llama-small")
    parser.add_argument("--student-preset", default="llama-tiny")
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--student-steps", type=int, default=600)
    parser.add_argument("--student-blocks", type=int, default=400, help="transfer-set size in blocks (0: all)")
    parser.add_argument("--full-data", action="store_true", help="also train both students on all the blocks")
    parser.add_argument("--teacher-dir", help="load the teacher (and tokenizer) from here, or save them here")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--divergence", default="forward_kl", choices=("forward_kl", "reverse_kl", "jsd"))
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    # on a shared CPU one thread is many times faster than two fighting other jobs (0.3 s vs 3.9 s per teacher step)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(SHARED))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser.parse_args()


def load_documents(data_dir: Path) -> tuple[list[str], list[str]]:
    """(train, eval) documents: the web pages and the Wikipedia articles, every tenth one held out."""
    wiki = data_dir / "wiki_demo.txt"
    c4 = data_dir / "c4_demo.jsonl"
    if not wiki.is_file() or not c4.is_file():
        raise SystemExit(f"needs {wiki.name} and {c4.name} in {data_dir} (the shared data beside the project)")
    documents = [line.strip() for line in wiki.read_text(encoding="utf-8").splitlines() if line.strip()]
    documents += [json.loads(line)["text"] for line in c4.read_text(encoding="utf-8").splitlines() if line.strip()]
    evaluation = [doc for index, doc in enumerate(documents) if index % 10 == 0]
    train = [doc for index, doc in enumerate(documents) if index % 10 != 0]
    return train, evaluation


def training_args(args: argparse.Namespace, output_dir: Path, steps: int, device: str) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,  # the same batches in the same order for both students
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def train(args, model, blocks, tokenizer, output_dir: Path, steps: int, device: str, teacher=None, alpha=0.0):
    """Train `model` on `blocks` with the distill stage's trainer; returns (model in eval mode, seconds)."""
    from llm_recipes.compress.distill import PaddedRowsCollator
    from llm_recipes.compress.distill_trainer import DistillationTrainer

    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=training_args(args, output_dir, steps, device),
        train_dataset=blocks,
        data_collator=PaddedRowsCollator(pad_token_id=tokenizer.pad_token_id),
        alpha=alpha,
        temperature=args.temperature,
        divergence=args.divergence,
    )
    start = time.perf_counter()
    trainer.train()
    return trainer.model.eval(), time.perf_counter() - start


def teacher_and_tokenizer(args, train_docs: list[str], device: str) -> tuple[Any, Any, str]:
    """The teacher with its tokenizer: loaded from --teacher-dir when it holds one, else trained (and saved there)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    folder = Path(args.teacher_dir) if args.teacher_dir else None
    if folder is not None and (folder / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), f"loaded {folder}"
    tokenizer = train_bpe_tokenizer(train_docs, vocab_size=args.vocab_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    blocks = pack(args, train_docs, tokenizer)
    with tempfile.TemporaryDirectory() as workdir:
        teacher, seconds = train(
            args,
            fresh(args, args.teacher_preset, tokenizer),
            blocks,
            tokenizer,
            Path(workdir),
            args.teacher_steps,
            device,
        )
    if folder is not None:
        teacher.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return teacher, tokenizer, f"{args.teacher_steps} steps on all {len(blocks)} blocks in {seconds:.0f} s"


def pack(args, documents: list[str], tokenizer) -> Any:
    from datasets import Dataset

    from llm_recipes.data.packing import pack_documents, tokenize_documents

    tokenized = tokenize_documents(Dataset.from_dict({"text": documents}), tokenizer)
    return pack_documents(tokenized, args.block_size)


def fresh(args, preset: str, tokenizer) -> Any:
    import torch

    from llm_recipes.models.loading import build_config, init_model

    torch.manual_seed(args.seed)
    return init_model(build_config(tokenizer, preset=preset))


def compare_students(args, teacher, tokenizer, blocks, eval_perplexity, device: str) -> dict[str, Any]:
    """Both students on `blocks`: their eval perplexities and training seconds."""
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        student = fresh(args, args.student_preset, tokenizer)
        with_kd, kd_seconds = train(
            args, student, blocks, tokenizer, work / "kd", args.student_steps, device, teacher, args.alpha
        )
        student = fresh(args, args.student_preset, tokenizer)
        labels_only, labels_seconds = train(args, student, blocks, tokenizer, work / "ce", args.student_steps, device)
    return {
        "blocks": len(blocks),
        "perplexity": {"student + KD": eval_perplexity(with_kd), "student, labels only": eval_perplexity(labels_only)},
        "seconds": {"student + KD": kd_seconds, "student, labels only": labels_seconds},
        "student": with_kd,
    }


def print_regime(name: str, result: dict[str, Any], teacher_perplexity: float) -> float:
    figures = {"teacher": teacher_perplexity, **result["perplexity"]}
    print(f"{name}: students on {result['blocks']} blocks")
    width = max(len(label) for label in figures)
    for label, value in figures.items():
        seconds = result["seconds"].get(label)
        timing = f"   (trained in {seconds:.0f} s)" if seconds is not None else ""
        print(f"  {label:<{width}}  {value:9.2f}{timing}")
    ratio = figures["student + KD"] / figures["student, labels only"]
    gap = figures["student, labels only"] - figures["teacher"]
    closed = (figures["student, labels only"] - figures["student + KD"]) / gap if gap > 0 else float("nan")
    print(
        f"  ratio (student + KD / student, labels only): {ratio:.3f}; KD closes {closed:.0%} of the gap to the teacher"
    )
    return ratio


def main() -> None:
    args = parse()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from llm_recipes.compress.report import compare_models, format_comparison
    from llm_recipes.evaluation.sliding_window import perplexity
    from llm_recipes.models.loading import count_parameters

    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_docs, eval_docs = load_documents(Path(args.data_dir))
    teacher, tokenizer, how = teacher_and_tokenizer(args, train_docs, device)
    print(f"teacher ({args.teacher_preset}): {how}")
    blocks = pack(args, train_docs, tokenizer)
    transfer = blocks.shuffle(seed=args.seed).select(range(min(args.student_blocks or len(blocks), len(blocks))))

    def eval_perplexity(model) -> float:
        model.to(device)
        stride = args.block_size * 3 // 4  # every token scored once, with at least a quarter block of context
        return perplexity(model, tokenizer, eval_docs, context_length=args.block_size, stride=stride).perplexity

    teacher_perplexity = eval_perplexity(teacher)
    regimes = {"transfer set": compare_students(args, teacher, tokenizer, transfer, eval_perplexity, device)}
    if args.full_data and len(transfer) < len(blocks):
        regimes["full data"] = compare_students(args, teacher, tokenizer, blocks, eval_perplexity, device)

    print()
    print(
        f"eval perplexity on {len(eval_docs)} held-out documents (windows of {args.block_size} tokens); teacher "
        f"{args.teacher_preset} ({count_parameters(teacher)[1]:,} parameters), students {args.student_preset} "
        f"({count_parameters(regimes['transfer set']['student'])[1]:,}), {args.student_steps} steps of "
        f"{args.batch_size} blocks, same data and order; KD: alpha {args.alpha}, T {args.temperature}, "
        f"{args.divergence}"
    )
    ratios = {name: print_regime(name, result, teacher_perplexity) for name, result in regimes.items()}

    with tempfile.TemporaryDirectory() as workdir:
        student = regimes["transfer set"]["student"]
        teacher.save_pretrained(Path(workdir) / "teacher")
        student.save_pretrained(Path(workdir) / "student")
        report = compare_models(
            teacher.cpu(),
            student.cpu(),
            tokenizer,
            eval_docs[:8],
            source_dir=Path(workdir) / "teacher",
            compressed_dir=Path(workdir) / "student",
            context_length=args.block_size,
        )
    print()
    print(format_comparison(report, "teacher (source) vs distilled student (compressed), 8 held-out documents"))
    if args.json:
        figures = {
            name: {key: value for key, value in result.items() if key != "student"} for name, result in regimes.items()
        }
        document = {
            "args": vars(args),
            "teacher_perplexity": teacher_perplexity,
            "regimes": figures,
            "ratios": ratios,
            "report": report,
        }
        Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
