"""End-to-end SFT on a tiny random model: real-format data in, a model that loads and generates out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import PROJECT, write_yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from llm_recipes.cli import load_recipe
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import read_manifest
from llm_recipes.sft.build import build_trainer

SFT = load_recipe("sft")
pytestmark = pytest.mark.slow


def sft_config(model_dir: Path, output_dir: Path, **overrides) -> dict:
    config = {
        "model_name_or_path": str(model_dir),
        "output_dir": str(output_dir),
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "max_length": 128,
        "logging_steps": 1,
        "save_strategy": "no",
        "use_cpu": True,
        "seed": 0,
    }
    return {**config, **overrides}


def parse_sft(tmp_path: Path, config: dict) -> tuple:
    return SFT.parse_args(["--config", str(write_yaml(tmp_path / "sft.yaml", config))])


def run_sft(tmp_path: Path, config: dict) -> dict:
    return SFT.main(*parse_sft(tmp_path, config))


def generate(model, tokenizer, question: str, max_new_tokens: int = 12) -> list[int]:
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def test_full_finetune_on_alpaca_saves_a_model_that_generates(tmp_path, base_model_dir, shared_data):
    out = tmp_path / "sft-full"
    config = sft_config(
        base_model_dir,
        out,
        dataset_path=str(shared_data / "alpaca_en_demo.json"),
        max_train_samples=96,
        eval_split_size=16,
        eval_strategy="steps",
        eval_steps=2,
    )
    summary = run_sft(tmp_path, config)

    assert summary["data shape"] == "messages"
    assert summary["optimizer steps"] == 4
    assert summary["examples seen"] == 32  # 4 steps x 8 examples
    assert summary["trainable parameters"] == summary["total parameters"] > 0
    assert summary["loss tokens per epoch"] > 0 and summary["tokens trained on"] > 0
    assert summary["examples without targets (dropped)"] >= 0
    assert summary["eval loss"] is not None and summary["final train loss"] is not None
    assert summary[f"rows kept from {shared_data / 'alpaca_en_demo.json'}"] == "999/999 (alpaca)"

    # the base tokenizer had no chat template: ChatML was installed and generation stops at <|im_end|>
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    generation = GenerationConfig.from_pretrained(out)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert len(generate(model, tokenizer, "Give three tips for staying healthy.")) > 0

    manifest = read_manifest(out)
    assert manifest["stage"] == "sft" and manifest["complete"] is True
    assert manifest["metrics"]["optimizer steps"] == 4
    assert manifest["config"]["training"]["learning_rate"] == 1e-3
    assert manifest["versions"]["trl"]


def test_lora_on_sharegpt_preferences_saves_an_adapter(tmp_path, base_model_dir, shared_data):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "sft-lora"
    config = sft_config(
        base_model_dir,
        out,
        dataset_path=str(shared_data / "dpo_en_demo.json"),
        max_train_samples=48,
        use_peft=True,
        lora_r=8,
        lora_alpha=16,
        lora_target_modules=["q_proj", "v_proj"],
        learning_rate=5e-3,
    )
    summary = run_sft(tmp_path, config)

    assert summary["rows kept from " + str(shared_data / "dpo_en_demo.json")].endswith("(sharegpt)")
    assert 0 < summary["trainable parameters"] < summary["total parameters"]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()

    model = AutoPeftModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(generate(model, tokenizer, "What is the capital of France?")) > 0
    # the added chat tokens' embedding rows were trained and saved with the adapter
    from safetensors.torch import load_file

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) > im_end
    saved = load_file(out / "adapter_model.safetensors")
    trained = next(v for k, v in saved.items() if k.endswith("embed_tokens.modules_to_save.weight"))
    original = next(v for k, v in saved.items() if k.endswith("embed_tokens.original_module.weight"))
    assert not torch.equal(trained[im_end], original[im_end])


def test_loss_mask_covers_only_assistant_tokens(tmp_path, base_model_dir):
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Name a colour."},
                {"from": "gpt", "value": "Blue."},
                {"from": "human", "value": "Another one?"},
                {"from": "gpt", "value": "Green."},
            ]
        },
        {"conversations": [{"from": "human", "value": "What is 2 plus 2?"}, {"from": "gpt", "value": "It is 4."}]},
    ]
    data = tmp_path / "chats.json"
    data.write_text(json.dumps(rows))
    args = parse_sft(tmp_path, sft_config(base_model_dir, tmp_path / "o", dataset_path=str(data)))
    trainer, _ = build_trainer(*args)
    tokenizer = trainer.processing_class

    supervised = []
    for example in trainer.train_dataset:
        labels = example["labels"]
        assert len(labels) == len(example["input_ids"])
        supervised.append(tokenizer.decode([t for t in labels if t != -100]))
    # each assistant turn, with its stop token, and nothing else (no system, user or role headers)
    assert sorted(supervised) == sorted(["Blue.<|im_end|>Green.<|im_end|>", "It is 4.<|im_end|>"])


def test_prompt_completion_trains_on_completion_only(tmp_path, base_model_dir):
    data = tmp_path / "pc.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"prompt": f"Count to {n}:", "completion": " " + " ".join(str(i) for i in range(1, n + 1))})
            for n in range(2, 6)
        )
    )
    args = parse_sft(tmp_path, sft_config(base_model_dir, tmp_path / "o", dataset_path=str(data)))
    trainer, data_ = build_trainer(*args)
    assert data_.shape == "prompt_completion"
    tokenizer = trainer.processing_class
    for example in trainer.train_dataset:
        completion = tokenizer.decode([t for t in example["labels"] if t != -100])
        assert completion.strip().startswith("1 2") and "Count" not in completion


def test_every_label_masked_fails_loudly(tmp_path, base_model_dir):
    long_prompt = "Please read this long question carefully. " * 20
    rows = [{"instruction": long_prompt + str(i), "input": "", "output": "Yes."} for i in range(8)]
    data = tmp_path / "long.json"
    data.write_text(json.dumps(rows))
    config = sft_config(base_model_dir, tmp_path / "o", dataset_path=str(data), max_length=16)
    with pytest.raises(UserError, match="every label is masked"):
        run_sft(tmp_path, config)


def test_text_data_with_dora_trains_on_every_token(tmp_path, base_model_dir, shared_data):
    out = tmp_path / "sft-dora"
    config = sft_config(
        base_model_dir,
        out,
        dataset_path=str(shared_data / "c4_demo.jsonl"),
        max_train_samples=32,
        use_peft=True,
        use_dora=True,
        lora_r=4,
        max_length=64,
    )
    summary = run_sft(tmp_path, config)
    assert summary["data shape"] == "text"
    assert summary["loss tokens per epoch"] == summary["tokens per epoch"] > 0  # plain text: no token masked
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True


def test_qlora_trains_a_4bit_base_on_cpu(tmp_path, base_model_dir):
    import bitsandbytes as bnb

    data = PROJECT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl"
    config = sft_config(
        base_model_dir,
        tmp_path / "qlora",
        dataset_path=str(data),
        max_train_samples=32,
        use_peft=True,
        load_in_4bit=True,
        lora_r=8,
        max_steps=2,
    )
    trainer, _ = build_trainer(*parse_sft(tmp_path, config))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))

    summary = run_sft(tmp_path, {**config, "output_dir": str(tmp_path / "qlora2")})
    assert (tmp_path / "qlora2" / "adapter_model.safetensors").is_file()
    assert summary["trainable parameters"] < summary["total parameters"]


def test_partial_finetuning_trains_only_the_top_layer(tmp_path, base_model_dir):
    data = PROJECT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl"
    out = tmp_path / "top1"
    run_sft(
        tmp_path,
        sft_config(
            base_model_dir,
            out,
            dataset_path=str(data),
            trainable_top_layers=1,
            max_train_samples=32,
            learning_rate=1e-2,
        ),
    )
    before = AutoModelForCausalLM.from_pretrained(base_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )
    assert not torch.equal(
        before["model.layers.1.self_attn.q_proj.weight"], after["model.layers.1.self_attn.q_proj.weight"]
    )
    frozen = [k for k in before if k.startswith("model.layers.0.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_a_checkpoint_cut_short_is_not_resumed_from(tmp_path, capsys):
    from llm_recipes.training.resume import last_complete_checkpoint

    for step, state in [(5, '{"global_step": 5}'), (10, '{"global_step": 10}'), (15, None), (20, '{"global_')]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-99.txt").write_text("not a folder")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")
    out = capsys.readouterr().out
    assert "checkpoint-20 was not written to the end" in out and "checkpoint-15 was not written" in out
    for folder in tmp_path.glob("checkpoint-*/"):
        (folder / "trainer_state.json").unlink(missing_ok=True)
    assert last_complete_checkpoint(str(tmp_path)) is None


def test_killed_run_resumes_from_its_checkpoint(tmp_path, base_model_dir):
    data = PROJECT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl"
    out = tmp_path / "resume"
    config = sft_config(
        base_model_dir,
        out,
        dataset_path=str(data),
        max_steps=400,
        save_strategy="steps",
        save_steps=5,
        per_device_train_batch_size=4,
    )
    path = write_yaml(tmp_path / "resume.yaml", config)
    command = [sys.executable, str(PROJECT / "recipes" / "sft.py"), "--config", str(path)]

    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while not any(out.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints, "the first run wrote no checkpoint before it was killed"
    assert not read_manifest(out)["complete"]  # killed: the manifest says the run is unfinished
    # the kill may land while a checkpoint is being written: the rerun resumes from the last complete one
    complete = [folder for folder in checkpoints if (folder / "trainer_state.json").is_file()]
    resumed_from = int(complete[-1].name.split("-")[1])
    assert resumed_from < 400

    second = subprocess.run(
        command + ["--max_steps", str(resumed_from + 5), "--resume_with_changes", "true"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from {out / f'checkpoint-{resumed_from}'}" in second.stdout
    manifest = read_manifest(out)
    assert manifest["metrics"]["optimizer steps"] == resumed_from + 5
    assert manifest["resumed_with_changes"] == {"max_steps": {"before": 400, "after": resumed_from + 5}}
    state = json.loads((out / f"checkpoint-{resumed_from + 5}" / "trainer_state.json").read_text())
    assert state["global_step"] == resumed_from + 5


@pytest.mark.parametrize(("data_file", "use_peft"), [("alpaca_en_demo.json", True), ("dpo_en_demo.json", False)])
def test_other_format_and_method_pairs_load_and_generate(tmp_path, base_model_dir, shared_data, data_file, use_peft):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "pair"
    config = sft_config(
        base_model_dir,
        out,
        dataset_path=str(shared_data / data_file),
        max_train_samples=32,
        use_peft=use_peft,
        max_steps=2,
    )
    run_sft(tmp_path, config)
    model = (AutoPeftModelForCausalLM if use_peft else AutoModelForCausalLM).from_pretrained(out)
    assert len(generate(model, AutoTokenizer.from_pretrained(out), "Hello?")) > 0


def test_packing_fills_fixed_length_blocks(tmp_path, base_model_dir):
    data = tmp_path / "short.jsonl"
    texts = [f"The {i}th sentence is short." for i in range(64)]
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    config = sft_config(base_model_dir, tmp_path / "packed", dataset_path=str(data), packing=True, max_length=64)
    trainer, prepared = build_trainer(*parse_sft(tmp_path, config))
    lengths = sorted(len(ids) for ids in trainer.train_dataset["input_ids"])
    assert len(lengths) < len(prepared.train) / 3  # several documents share each block
    # blocks are nearly full: every block but the last has no room left for another document (documents are not
    # split across blocks, so up to a document's length of a block can stay empty)
    longest = max(len(trainer.processing_class(text)["input_ids"]) + 1 for text in texts)  # + EOS
    assert lengths[-1] <= 64 and all(length > 64 - longest for length in lengths[1:])
    assert sum(lengths) == sum(len(trainer.processing_class(text)["input_ids"]) + 1 for text in texts)
    assert torch.isfinite(torch.tensor(trainer.train().training_loss))


def test_config_supplied_chat_template(tmp_path, base_model_dir):
    template = tmp_path / "plain.jinja"
    template.write_text(
        "{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'] }}{{ eos_token }}{% endgeneration %}{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    data = PROJECT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl"
    config = sft_config(base_model_dir, tmp_path / "o", dataset_path=str(data), chat_template_path=str(template))
    trainer, _ = build_trainer(*parse_sft(tmp_path, config))
    tokenizer = trainer.processing_class
    assert tokenizer.chat_template == template.read_text()
    assert "<|im_start|>" not in tokenizer.get_vocab()  # no ChatML was forced on top
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["input_ids"]).startswith("user: ")
    assert tokenizer.decode([t for t in first["labels"] if t != -100]).endswith(tokenizer.eos_token)
