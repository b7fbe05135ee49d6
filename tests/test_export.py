"""The export stage end to end on tiny models: an SFT model and a LoRA adapter become folders that
`transformers.pipeline("text-generation")` loads and that stop at EOS; a quantized export loads the same way; the
GGUF file loads back through transformers' `gguf_file` support; the card carries metrics and configs; pushing is
checked against a mocked `HfApi`, and offline it fails clearly without touching the export."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import DEMO_DATA, PROJECT, write_yaml
from huggingface_hub import ModelCard
from test_sft import run_sft, sft_config
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, pipeline

from llm_recipes import hub
from llm_recipes.errors import UserError
from llm_recipes.export import folder as export_lib
from llm_recipes.export import source as export_source
from llm_recipes.runs.manifest import read_manifest

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 2 plus 3?"}]
MAX_NEW = 24


def _load_recipe():
    spec = importlib.util.spec_from_file_location("export_recipe", PROJECT / "recipes" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPORT = _load_recipe()


def parse_export(tmp_path: Path, **config) -> tuple:
    return EXPORT.parse_args(["--config", str(write_yaml(tmp_path / "export.yaml", config))])


def run_export(tmp_path: Path, **config) -> dict:
    return EXPORT.main(*parse_export(tmp_path, **config))


@pytest.fixture(scope="module")
def sft_outputs(tmp_path_factory, base_model_dir):
    """A full fine-tune and a LoRA adapter, a few steps each, from the base without a chat template (so SFT adds
    ChatML tokens: the adapter then carries resized embeddings)."""
    work = tmp_path_factory.mktemp("sft")
    data = str(DEMO_DATA / "arithmetic_alpaca.jsonl")
    common = dict(dataset_path=data, max_train_samples=16, max_steps=2, per_device_train_batch_size=8)
    full = work / "full"
    run_sft(work, sft_config(base_model_dir, full, **common))
    lora = work / "lora"
    lora_config = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    run_sft(work, sft_config(base_model_dir, lora, learning_rate=5e-2, **common, **lora_config))
    return {"full": full, "lora": lora, "base": base_model_dir}


def new_tokens(generator, messages, **generate_kwargs) -> list[int]:
    """Token ids the pipeline generated after the prompt."""
    prompt = generator.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    output = generator(messages, max_new_tokens=MAX_NEW, do_sample=False, return_tensors=True, **generate_kwargs)
    return output[0]["generated_token_ids"][len(prompt["input_ids"]) :]


def assert_pipeline_stops_at_eos(folder: Path) -> None:
    """Loads `folder` with `pipeline` and checks that generation stops at the exported EOS.

    A random tiny model rarely picks EOS by itself, so a `sequence_bias` makes <|im_end|> its first choice. What
    is asserted is the stopping: the pipeline ends generation there (it read the EOS from the exported
    generation_config) instead of running to max_new_tokens, while the same bias on an ordinary token runs to the
    limit.
    """
    generator = pipeline("text-generation", model=str(folder))
    tokenizer = generator.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    assert im_end in _as_list(GenerationConfig.from_pretrained(folder).eos_token_id)

    free = new_tokens(generator, QUESTION)
    assert 0 < len(free) <= MAX_NEW and (im_end not in free or free.index(im_end) == len(free) - 1)
    assert new_tokens(generator, QUESTION, sequence_bias={(im_end,): 100.0}) == [im_end]
    ordinary = tokenizer.convert_tokens_to_ids("1")
    assert new_tokens(generator, QUESTION, sequence_bias={(ordinary,): 100.0}) == [ordinary] * MAX_NEW
    text = generator(QUESTION, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text[-1]["role"] == "assistant" and isinstance(text[-1]["content"], str)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def logits(model, tokenizer, text: str = "What is 2 plus 3? It is 5.") -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits.float()


def eval_results(path: Path, model: Path) -> Path:
    entry = {
        "task_type": "text-generation",
        "dataset_name": "Arithmetic",
        "dataset_type": "llm-recipes/arithmetic",
        "dataset_split": "test",
        "metric_type": "perplexity",
        "metric_name": "Perplexity",
        "metric_value": 17.25,
    }
    data = {
        "models": {str(model): {"metrics": {"perplexity": 17.25}, "dataset": {"path": "arithmetic.jsonl"}}},
        "model_index": {str(model): [entry]},
    }
    path.write_text(json.dumps(data))
    return path


def run_card_snippet(folder: Path, capsys) -> str:
    """Execute the card's Python usage snippet as a user would paste it."""
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    capsys.readouterr()
    exec(compile(code, str(folder / "README.md"), "exec"), {})
    return capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------------


def test_sft_model_exports_to_a_folder_pipeline_loads(tmp_path, sft_outputs, capsys):
    sft = sft_outputs["full"]
    results = eval_results(tmp_path / "eval_results.json", sft)
    out = tmp_path / "export"
    summary = run_export(
        tmp_path,
        model_name_or_path=str(sft),
        output_dir=str(out),
        max_shard_size="100KB",
        eval_results_path=str(results),
        license="apache-2.0",
        language=["en"],
    )
    assert summary["exported"] == "full model" and summary["weight files"] > 2  # several shards + their index
    assert (out / "model.safetensors.index.json").is_file() and not list(out.glob("*.bin"))
    assert not list(tmp_path.glob(".export.*"))  # the staging folder was renamed, nothing left beside it
    assert_pipeline_stops_at_eos(out)

    exported = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(sft)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert torch.equal(logits(exported, tokenizer), logits(original, tokenizer))

    card = ModelCard.load(out / "README.md")
    assert card.data.tags[:3] == ["llm-recipes", "sft", "export"] and card.data.pipeline_tag == "text-generation"
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("perplexity", 17.25)]
    assert "### 1. sft" in card.text and "### 2. export" in card.text
    assert "learning_rate: 0.001" in card.text and "max_shard_size: 100KB" in card.text  # both stages' configs
    assert "| optimizer steps | 2 |" in card.text  # the SFT manifest's metrics
    assert json.loads((out / "eval_results.json").read_text()) == json.loads(results.read_text())
    assert run_card_snippet(out, capsys).endswith("\n")  # the snippet ran and printed the model's answer

    manifest = read_manifest(out)
    assert manifest["stage"] == "export" and manifest["inputs"]["model"] == str(sft)
    assert manifest["metrics"]["exported"] == "full model"


def test_lora_adapter_is_merged_into_its_base(tmp_path, sft_outputs, capsys):
    from peft import AutoPeftModelForCausalLM

    lora = sft_outputs["lora"]
    out = tmp_path / "merged"
    summary = run_export(tmp_path, model_name_or_path=str(lora), output_dir=str(out), dtype="float32")
    assert summary["exported"] == f"LoRA adapter merged into {sft_outputs['base']}"
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert_pipeline_stops_at_eos(out)

    merged = AutoModelForCausalLM.from_pretrained(out)
    adapter = AutoPeftModelForCausalLM.from_pretrained(lora)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert merged.get_input_embeddings().num_embeddings == len(tokenizer)  # the chat tokens SFT added
    torch.testing.assert_close(logits(merged, tokenizer), logits(adapter, tokenizer), atol=1e-5, rtol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(sft_outputs["base"])
    base.resize_token_embeddings(len(tokenizer))
    assert not torch.allclose(logits(merged, tokenizer), logits(base, tokenizer))  # the adapter changed something

    card = ModelCard.load(out / "README.md")
    assert {"sft", "export", "lora"} <= set(card.data.tags) and card.data.base_model is None  # a local base
    assert "use_peft: true" in card.text and "merge_adapter: true" in card.text
    run_card_snippet(out, capsys)


def test_dora_adapter_is_merged_too(tmp_path, chat_model_dir):
    from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(chat_model_dir)
    torch.manual_seed(0)
    # init_lora_weights=False: random non-zero updates, so the merge has something to get right
    dora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True)
    dora.init_lora_weights = False
    adapter = tmp_path / "dora"
    get_peft_model(base, dora).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(chat_model_dir).save_pretrained(adapter)

    out = tmp_path / "merged"
    summary = run_export(tmp_path, model_name_or_path=str(adapter), output_dir=str(out))
    assert summary["exported"] == f"DoRA adapter merged into {chat_model_dir}" and summary["dtype"] == "float32"
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged = logits(AutoModelForCausalLM.from_pretrained(out), tokenizer)
    with_adapter = logits(AutoPeftModelForCausalLM.from_pretrained(adapter), tokenizer)
    torch.testing.assert_close(merged, with_adapter, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(merged, logits(AutoModelForCausalLM.from_pretrained(chat_model_dir), tokenizer))
    assert "dora" in ModelCard.load(out / "README.md").data.tags


def test_adapter_can_be_exported_on_its_own(tmp_path, sft_outputs, capsys, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "adapter"
    summary = run_export(
        tmp_path, model_name_or_path=str(sft_outputs["lora"]), output_dir=str(out), merge_adapter=False
    )
    assert summary["exported"].startswith("LoRA adapter for") and summary["exported"].endswith("(not merged)")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    assert "<|im_end|>" in AutoTokenizer.from_pretrained(out).get_vocab()
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and "AutoPeftModelForCausalLM" in card.text
    assert run_card_snippet(out, capsys).endswith("\n")
    AutoPeftModelForCausalLM.from_pretrained(out)

    # and pushed on its own: the adapter, not a merged model, is what gets uploaded
    from test_hub import FakeHfApi

    FakeHfApi.instances, FakeHfApi.fail = [], {}
    monkeypatch.setattr(hub.push, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub.push_stage_output(out, "me/tiny-lora", what="export")
    files = FakeHfApi.instances[0].calls[-1][1]["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(files)
    assert "model.safetensors" not in files


def test_merging_into_a_quantized_base_is_refused(tmp_path, sft_outputs):
    from transformers import BitsAndBytesConfig

    quantized_base = tmp_path / "base-int8"
    model = AutoModelForCausalLM.from_pretrained(
        sft_outputs["base"], quantization_config=BitsAndBytesConfig(load_in_8bit=True)
    )
    model.save_pretrained(quantized_base)
    with pytest.raises(UserError, match=r"its weights are quantized \(int8\).*export from the full-precision base"):
        parse_export(
            tmp_path,
            model_name_or_path=str(sft_outputs["lora"]),
            base_model_name_or_path=str(quantized_base),
            output_dir=str(tmp_path / "o"),
        )
    with pytest.raises(UserError, match="loses precision|precision is lost"):
        export_lib.refuse_quantized_base(model, "the base")  # the same check on a model already loaded


def test_quantized_exports_load_in_pipeline(tmp_path, sft_outputs):
    import bitsandbytes as bnb

    out = tmp_path / "int8"
    summary = run_export(
        tmp_path, model_name_or_path=str(sft_outputs["full"]), output_dir=str(out), quantization="int8"
    )
    assert summary["quantization"] == "int8 (bitsandbytes)"
    assert json.loads((out / "config.json").read_text())["quantization_config"]["load_in_8bit"] is True
    assert not (out / ".full-precision").exists()
    assert_pipeline_stops_at_eos(out)
    generator = pipeline("text-generation", model=str(out))
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in generator.model.modules())
    assert {"bitsandbytes", "8-bit"} <= set(ModelCard.load(out / "README.md").data.tags)

    # a quantized model is exported as it is: the weights are copied, and it loads the same way
    again = tmp_path / "int8-again"
    summary = run_export(tmp_path, model_name_or_path=str(out), output_dir=str(again))
    assert summary["exported"] == "int8 model (weights copied as saved)"
    assert_pipeline_stops_at_eos(again)
    with pytest.raises(UserError, match=r"already quantized \(int8\)"):
        parse_export(tmp_path, model_name_or_path=str(out), output_dir=str(tmp_path / "x"), gguf_type="f16")


def test_nf4_export_loads_in_pipeline(tmp_path, chat_model_dir, capsys):
    import bitsandbytes as bnb

    from llm_recipes.models.loading import init_decoder

    # bitsandbytes' CPU 4-bit kernel needs layer widths divisible by 32: llama-tiny's MLP (176) is not
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    torch.manual_seed(0)
    wide = tmp_path / "wide"
    init_decoder("llama-tiny", tokenizer, intermediate_size=192).save_pretrained(wide)
    tokenizer.save_pretrained(wide)
    out = tmp_path / "nf4"
    run_export(tmp_path, model_name_or_path=str(wide), output_dir=str(out), quantization="nf4")
    assert json.loads((out / "config.json").read_text())["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
    assert_pipeline_stops_at_eos(out)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in pipeline("text-generation", model=str(out)).model.modules())

    narrow = tmp_path / "nf4-narrow"
    run_export(tmp_path, model_name_or_path=str(chat_model_dir), output_dir=str(narrow), quantization="nf4")
    assert "needs output widths divisible by 32" in capsys.readouterr().out


@pytest.mark.parametrize(("file_type", "tolerance"), [("f32", 1e-6), ("f16", 5e-3), ("q8_0", 5e-2)])
def test_gguf_loads_back_with_transformers(tmp_path, sft_outputs, file_type, tolerance):
    pytest.importorskip("gguf", reason="GGUF export needs the gguf package (pip install gguf)")
    model = AutoModelForCausalLM.from_pretrained(sft_outputs["full"])
    tokenizer = AutoTokenizer.from_pretrained(sft_outputs["full"])
    folder = tmp_path / "gguf-only"  # what a llama.cpp user downloads: the file alone
    folder.mkdir()
    report = export_lib.write_gguf(model, tokenizer, folder / f"model-{file_type}.gguf", file_type)
    assert report.tensors == 2 + 9 * model.config.num_hidden_layers  # embeddings, final norm, 9 per block (tied head)

    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=report.path.name)
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=report.path.name)
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True) + "It is 5. Ünïcode!"
    assert gguf_tokenizer(text).input_ids == tokenizer(text).input_ids
    assert gguf_tokenizer.decode(gguf_tokenizer(text).input_ids) == text
    assert (gguf_tokenizer.eos_token, gguf_tokenizer.pad_token) == (tokenizer.eos_token, tokenizer.pad_token)
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    torch.testing.assert_close(logits(loaded, tokenizer), logits(model, tokenizer), atol=tolerance, rtol=0)


def test_gguf_of_an_untied_head_and_through_the_recipe(tmp_path, sft_outputs):
    pytest.importorskip("gguf", reason="GGUF export needs the gguf package (pip install gguf)")
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(sft_outputs["full"])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    report = export_lib.write_gguf(model, tokenizer, tmp_path / "untied.gguf", "f32")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="untied.gguf")
    assert loaded.config.tie_word_embeddings is False and report.tensors == 3 + 9
    torch.testing.assert_close(logits(loaded, tokenizer), logits(model, tokenizer), atol=1e-6, rtol=0)

    out = tmp_path / "with-gguf"
    summary = run_export(tmp_path, model_name_or_path=str(sft_outputs["lora"]), output_dir=str(out), gguf_type="q8_0")
    assert summary["gguf file"].startswith("model-q8_0.gguf")
    card = ModelCard.load(out / "README.md")
    assert "gguf" in card.data.tags and "llama-cli -m model-q8_0.gguf" in card.text
    assert AutoModelForCausalLM.from_pretrained(out, gguf_file="model-q8_0.gguf").config.model_type == "llama"


def test_push_from_the_recipe_sends_the_export(tmp_path, sft_outputs, monkeypatch, capsys):
    from test_hub import FakeHfApi

    FakeHfApi.instances, FakeHfApi.fail = [], {}
    monkeypatch.setattr(hub.push, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    out = tmp_path / "pushed"
    results = eval_results(tmp_path / "eval_results.json", sft_outputs["full"])
    run_export(
        tmp_path,
        model_name_or_path=str(sft_outputs["full"]),
        output_dir=str(out),
        eval_results_path=str(results),
        push_to_hub=True,
        hub_model_id="me/tiny-export",
        hub_revision="v0.1",
    )
    (api,) = FakeHfApi.instances
    assert [name for name, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1]["private"] is True
    upload = api.calls[2][1]
    assert upload["folder_path"] == str(out) and upload["revision"] == "v0.1"
    assert upload["commit_message"] == "Export with llm-recipes (full model)"
    for name in (
        "README.md",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
        "eval_results.json",
        "config.json",
    ):
        assert name in upload["files"]
    assert 'model="me/tiny-export"' in upload["readme"] and "perplexity" in upload["readme"]
    assert "pushed to me/tiny-export (private, v0.1)" in capsys.readouterr().out


def test_training_stage_push_uses_the_same_implementation(tmp_path, sft_outputs, monkeypatch):
    """What recipes/sft.py's push_to_hub calls: the SFT folder, carded from its manifest, minus pickles."""
    from test_hub import FakeHfApi

    FakeHfApi.instances, FakeHfApi.fail = [], {}
    monkeypatch.setattr(hub.push, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    folder = tmp_path / "sft-copy"
    shutil.copytree(sft_outputs["full"], folder)
    assert (folder / "training_args.bin").is_file()
    hub.push_stage_output(folder, None, private=True, commit_message="llm-recipes sft")
    api = FakeHfApi.instances[0]
    assert api.calls[0][1]["repo_id"] == "sft-copy"  # the folder's name, in the token owner's namespace
    upload = api.calls[-1][1]
    assert upload["repo_id"] == "me/sft-copy" and "training_args.bin" not in upload["files"]
    assert {"README.md", "model.safetensors", "llm_recipes_manifest.json"} <= set(upload["files"])
    card = ModelCard(upload["readme"])
    assert card.data.tags[:2] == ["llm-recipes", "sft"] and 'model="me/sft-copy"' in card.text


def test_offline_push_fails_clearly_and_keeps_the_export(tmp_path, sft_outputs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "offline"
    with pytest.raises(UserError, match=r"could not reach the Hub \(offline\?.*the export in .*offline is complete"):
        run_export(tmp_path, model_name_or_path=str(sft_outputs["full"]), output_dir=str(out), push_to_hub=True)
    assert read_manifest(out)["stage"] == "export"
    assert f'model="{out}"' in (out / "README.md").read_text()  # the local card, untouched by the failed push
    assert_pipeline_stops_at_eos(out)


def test_config_mistakes_fail_before_loading(tmp_path, sft_outputs):
    full, lora = str(sft_outputs["full"]), str(sft_outputs["lora"])
    out = str(tmp_path / "o")
    cases = [
        (dict(output_dir=out), "model_name_or_path is required"),
        (dict(model_name_or_path=str(tmp_path / "nowhere"), output_dir=out), "model folder not found"),
        (dict(model_name_or_path=full, output_dir=out, max_shard_size="lots"), "max_shard_size: 'lots' is not"),
        (dict(model_name_or_path=full, output_dir=full), "output_dir must differ"),
        (dict(model_name_or_path=lora, output_dir=out, merge_adapter=False, gguf_type="f16"), "merge_adapter: true"),
        (dict(model_name_or_path=full, output_dir=out, quantization="int4"), "quantization: invalid choice"),
        (
            dict(model_name_or_path=full, output_dir=out, eval_results_path=str(tmp_path / "none.json")),
            "is not an eval_results.json file",
        ),
        (
            dict(model_name_or_path=full, output_dir=out, push_to_hub=True, hub_model_id="bad id!"),
            "hub_model_id:",
        ),
    ]
    for config, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            parse_export(tmp_path, **config)
    other = eval_results(tmp_path / "other.json", Path("/some/other/model"))
    with pytest.raises(UserError, match="has no results for"):
        parse_export(tmp_path, model_name_or_path=full, output_dir=out, eval_results_path=str(other))


def test_gguf_without_the_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(export_source, "gguf_installed", lambda: False)
    with pytest.raises(UserError, match="needs the `gguf` package: pip install gguf"):
        export_source.check_gguf_supported({"model_type": "llama"}, None)


def test_gguf_writer_refuses_what_it_cannot_write(tmp_path):
    pytest.importorskip("gguf", reason="GGUF export needs the gguf package (pip install gguf)")
    with pytest.raises(UserError, match="Llama-architecture models; this one is 'gpt2'"):
        export_source.check_gguf_supported({"model_type": "gpt2"}, None)
    unigram = {"model": {"type": "Unigram"}, "pre_tokenizer": {"type": "Metaspace"}}
    with pytest.raises(UserError, match="byte-level BPE tokenizers; this one is Unigram"):
        export_source.check_gguf_supported({"model_type": "llama"}, unigram)
    llama3_rope = {"model_type": "llama", "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}
    with pytest.raises(UserError, match="rope scaling 'llama3'"):
        export_source.check_gguf_supported(llama3_rope, None)


def test_shard_sizes():
    assert export_source.parse_shard_size("500MB") == 500 * 10**6
    assert export_source.parse_shard_size("2GiB") == 2 * 2**30
    assert export_source.parse_shard_size("12345") == 12345
    for bad in ("-1", "0", "big", "5XB"):
        with pytest.raises(UserError, match="max_shard_size"):
            export_source.parse_shard_size(bad)


def test_demo_config_parses(tmp_path, sft_outputs):
    demo = PROJECT / "configs" / "demo" / "export.yaml"
    (args,) = EXPORT.parse_args(
        [
            "--config", str(demo), "--model_name_or_path", str(sft_outputs["full"]),
            "--output_dir", str(tmp_path / "d"), "--eval_results_path", "",
        ]
    )  # fmt: skip
    # the demo's own paths are relative to the project root and exist after `make demo`; overridden here
    assert args.license == "apache-2.0" and args.max_shard_size == "500MB" and args.push_to_hub is False
