"""What a model folder holds -- a full model or an adapter, quantized or not, a generator, classifier, tagger,
extractive QA model, masked LM or reward model -- read from its files, and the usage snippet that loads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_recipes.export.source import ADAPTER_CONFIG, quantization_of, read_json
from llm_recipes.rl.rewards import REWARD_INPUT_FIELD, REWARD_INPUT_FILE

# What a folder's model does, by the end of its architecture's name in config.json (or an adapter's PEFT task type):
# the Hub's pipeline tag, what the card calls the model, and its use
ARCHITECTURE_TASKS = {
    "ForCausalLM": "text-generation",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "fill-mask",
}
PEFT_TASKS = {
    "CAUSAL_LM": "text-generation",
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
    "QUESTION_ANS": "question-answering",
}
TASK_NAMES = {  # task -> (the model, its use)
    "text-generation": ("A causal language model", "Text generation"),
    "text-classification": ("A text classification model", "Text classification"),
    "token-classification": ("A token classification model", "Token classification (tagging)"),
    "question-answering": ("An extractive question answering model", "Extractive question answering"),
    "fill-mask": ("A masked language model", "Filling in masked words and fine-tuning for other tasks"),
    "reward": ("A reward model (one score for a prompt and its response)", "Scoring responses (RL, ranking)"),
}


@dataclass
class FolderFacts:
    """What a model folder holds, read from its files."""

    kind: str  # "model" or "adapter"
    base_model: str | None
    adapter_method: str | None
    quantization: str | None
    chat: bool
    gguf_files: list[str]
    task: str = "text-generation"  # the Hub's pipeline tag
    reward_input: str | None = None  # a reward model's: how it reads a response ("conversational" or "text")
    custom_pipeline: bool = False  # config.json names a pipeline whose code is in the folder


def folder_facts(folder: Path) -> FolderFacts:
    adapter = read_json(folder / ADAPTER_CONFIG) if (folder / ADAPTER_CONFIG).is_file() else None
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    tokenizer_config = (
        read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    )
    chat = bool(tokenizer_config.get("chat_template")) or any(folder.glob("chat_template.*"))
    method = None
    if adapter is not None:
        method = "DoRA" if adapter.get("use_dora") else str(adapter.get("peft_type", "adapter")).replace("LORA", "LoRA")
    architectures = config.get("architectures") or [""]
    task = PEFT_TASKS.get(str((adapter or {}).get("task_type")))
    task = task or next((t for end, t in ARCHITECTURE_TASKS.items() if architectures[0].endswith(end)), None)
    return FolderFacts(
        kind="adapter" if adapter is not None else "model",
        base_model=adapter.get("base_model_name_or_path") if adapter else None,
        adapter_method=method,
        quantization=quantization_of(config),
        chat=chat,
        gguf_files=sorted(p.name for p in folder.glob("*.gguf")),
        task=task or "text-generation",
        reward_input=_reward_input(folder, config, task, chat),
        custom_pipeline=bool((config.get("custom_pipelines") or {}).get(task)),
    )


def usage_snippet(model_id: str, facts: FolderFacts) -> str:
    """Code that loads `model_id` the way its folder needs and generates, scores or labels (the tests run it)."""
    needs = "  # needs bitsandbytes installed" if facts.quantization else ""
    if facts.task != "text-generation":
        code = _task_usage(model_id, facts, needs)
    elif facts.kind == "adapter":
        if facts.chat:
            prompt = (
                'messages = [{"role": "user", "content": "What is 2 plus 3?"}]\n'
                "inputs = tokenizer.apply_chat_template(\n"
                '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n'
                ")\n"
            )
        else:
            prompt = 'inputs = tokenizer("Once upon a time", return_tensors="pt")\n'
        code = (
            "from peft import AutoPeftModelForCausalLM\n"
            "from transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{model_id}")  # the base model, with the adapter\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n'
            f"{prompt}"
            "output = model.generate(**inputs, max_new_tokens=64)\n"
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))\n'
        )
    elif facts.chat:
        code = (
            "from transformers import pipeline\n\n"
            f'generator = pipeline("text-generation", model="{model_id}"){needs}\n'
            'messages = [{"role": "user", "content": "What is 2 plus 3?"}]\n'
            "output = generator(messages, max_new_tokens=64)\n"
            'print(output[0]["generated_text"][-1]["content"])\n'
        )
    else:
        code = (
            "from transformers import pipeline\n\n"
            f'generator = pipeline("text-generation", model="{model_id}"){needs}\n'
            'print(generator("Once upon a time", max_new_tokens=64)[0]["generated_text"])\n'
        )
    text = f"```python\n{code}```"
    for name in facts.gguf_files:
        text += (
            f"\n\nWith llama.cpp, `{name}` holds the same weights:\n\n```bash\n"
            f'llama-cli -m {name} -p "Once upon a time" -n 64\n```'
        )
    return text


def _task_usage(model_id: str, facts: FolderFacts, needs: str) -> str:
    """Usage of a model that does not generate: a classifier, a tagger, an extractive QA model, a masked LM."""
    if facts.reward_input:
        return _reward_usage(model_id, facts, needs)
    if facts.kind == "adapter":
        auto = {"text-classification": "SequenceClassification", "token-classification": "TokenClassification"}
        auto_class = f"AutoPeftModelFor{auto.get(facts.task, 'QuestionAnswering')}"
        return (
            f"from peft import {auto_class}\nfrom transformers import AutoTokenizer\n\n"
            f'model = {auto_class}.from_pretrained("{model_id}")  # the base model, with the adapter\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n'
            'print(model(**tokenizer("The cat is blue.", return_tensors="pt")).logits)\n'
        )
    load = "from transformers import pipeline\n\n"
    if facts.task == "question-answering":
        remote = ", trust_remote_code=True" if facts.custom_pipeline else ""
        note = "# the pipeline's code is in this repository (config.json names it): read it before you run it\n"
        return (
            f"{load}{note if remote else ''}"
            f'answerer = pipeline("question-answering", model="{model_id}"{remote}){needs}\n'
            'print(answerer(question="What colour is the cat?", context="The cat is blue. The dog is red."))\n'
        )
    if facts.task == "fill-mask":
        return (
            f'{load}unmasker = pipeline("fill-mask", model="{model_id}"){needs}\n'
            'print(unmasker(f"The cat is {unmasker.tokenizer.mask_token}."))\n'
        )
    tagging = facts.task == "token-classification"
    name, options = ("tagger", ', aggregation_strategy="simple"') if tagging else ("classifier", "")
    call = f'print({name}("The cat is blue."))\n'
    return f'{load}{name} = pipeline("{facts.task}", model="{model_id}"{options}){needs}\n{call}'


def _reward_usage(model_id: str, facts: FolderFacts, needs: str) -> str:
    """A reward model scores a prompt and its response as the reward stage trained it (llm_recipes.rl.rewards)."""
    if facts.reward_input == "conversational":
        text = (
            'messages = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5"}]\n'
            "text = tokenizer.apply_chat_template(messages, tokenize=False)  # it holds its special tokens\n"
        )
        special = ", add_special_tokens=False"
    else:
        text = 'text = "What is 2 plus 3?\\n5" + (tokenizer.eos_token or "")  # the score is read at the end\n'
        special = ""
    if facts.kind == "adapter":
        return (
            "from peft import AutoPeftModelForSequenceClassification\nfrom transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForSequenceClassification.from_pretrained("{model_id}", num_labels=1)'
            "  # the base model, with the adapter\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n{text}'
            f'score = model(**tokenizer(text, return_tensors="pt"{special})).logits[0, 0].item()\n'
            "print(score)  # higher: a better response\n"
        )
    return (
        "from transformers import pipeline\n\n"
        f'scorer = pipeline("text-classification", model="{model_id}", function_to_apply="none"){needs}\n'
        f"tokenizer = scorer.tokenizer\n{text}"
        f'print(scorer(text{special})[0]["score"])  # higher: a better response\n'
    )


def _reward_input(folder: Path, config: dict[str, Any], task: str | None, chat: bool) -> str | None:
    """How a reward model reads a response, as the reward stage recorded it; None for other models."""

    if task != "text-classification":
        return None
    recorded = read_json(folder / REWARD_INPUT_FILE) if (folder / REWARD_INPUT_FILE).is_file() else config
    if recorded.get(REWARD_INPUT_FIELD):
        return str(recorded[REWARD_INPUT_FIELD])
    if len(config.get("id2label") or {}) == 1:  # one score, from elsewhere
        return "conversational" if chat else "text"
    return None


def task_name(facts: FolderFacts) -> tuple[str, str]:
    return TASK_NAMES["reward" if facts.reward_input else facts.task]


def task_errors(facts: FolderFacts) -> str:
    if facts.task == "text-generation":
        return "it can produce false, biased or offensive text"
    return "its predictions can be wrong or biased"
