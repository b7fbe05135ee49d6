"""Chat templates: make sure a tokenizer can render conversations and that generation stops after a turn.

Base models often ship a tokenizer without a chat template. SFT on conversations then needs one, and it must
end every assistant turn with a token that is also an EOS for generation -- otherwise the model learns to answer
but never to stop. We install ChatML with `{% generation %}` markers around the assistant content *and* its
`<|im_end|>`, so TRL's assistant-only loss trains the stop token too.

With tools (`apply_chat_template(tools=...)`, which TRL's SFTTrainer passes from a dataset's `tools` column) the
template opens with a system block listing the schemas as JSON (after the conversation's own system prompt, if
any), renders each of an assistant turn's `tool_calls` as `<tool_call>\n{"name": ..., "arguments": {...}}\n
</tool_call>` (Qwen's convention) inside the trained span, and a result as a `tool` turn outside it: the loss is on
the calls and the answers, never on what a tool returned. Without tools a chat renders exactly as before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"

CHATML_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nThese functions can be called; their JSON schemas:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nTo call one, answer with its name and arguments as JSON inside <tool_call></tool_call>:' }}"
    '{{- \'\\n<tool_call>\\n{"name": <function name>, "arguments": <arguments object>}\\n</tool_call>\' }}'
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"  # already in the tools block
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{%- if message['content'] %}{{- message['content'] }}{%- endif %}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- for tool_call in message['tool_calls'] %}"
    "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{%- set call = tool_call['function'] if tool_call['function'] is defined else tool_call %}"
    "{{- '<tool_call>\\n{\"name\": ' + (call['name'] | tojson) + ', \"arguments\": ' }}"
    "{%- if call['arguments'] is string %}{{- call['arguments'] }}"  # already JSON (OpenAI's API sends strings)
    "{%- else %}{{- call['arguments'] | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


_TOOL_CALL_SPAN = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


def parse_tool_calls(reply: str) -> list[dict]:
    """The calls in a reply in our template's form, in the OpenAI shape; a span that is not a JSON call is skipped."""
    calls = []
    for span in _TOOL_CALL_SPAN.findall(reply):
        try:
            call = json.loads(span)
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments"), dict):
            calls.append({"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}})
    return calls


def read_chat_template(template_or_path: str) -> str:
    """A template given inline, or the path of a `.jinja` file holding one."""
    if template_or_path.endswith((".jinja", ".j2")) and Path(template_or_path).is_file():
        return Path(template_or_path).read_text(encoding="utf-8")
    return template_or_path


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> list[int]:
    """Give `tokenizer` ChatML if it has no chat template; return the ids of tokens that had to be added.

    The model's embeddings are resized for added tokens, and its generation config learns to stop at
    `<|im_end|>` (the original EOS is kept as a second stop token, so plain-text generation still stops).
    """
    if tokenizer.chat_template:
        return []
    vocab = tokenizer.get_vocab()
    missing = [token for token in (IM_START, IM_END) if token not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    previous_eos = tokenizer.eos_token
    previous_eos_id = tokenizer.eos_token_id
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.eos_token = IM_END
    if tokenizer.pad_token is None:
        # Padding with the document EOS rather than <|im_end|> keeps padding apart from the turn's stop token
        tokenizer.pad_token = previous_eos or IM_END
    added_ids = tokenizer.convert_tokens_to_ids(missing)
    if model is not None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        set_stop_tokens(model, tokenizer, extra_eos_ids=[previous_eos_id])
    return added_ids


def set_stop_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, extra_eos_ids: list | None = None
) -> None:
    """Make the model's config and generation config agree with the tokenizer on EOS and PAD.

    Only generative models have a generation config; a classifier head (a reward model, token classification, QA)
    has none, and its config alone learns the ids (the pad id is how a sequence classifier finds the last token).
    """
    eos_ids = [tokenizer.eos_token_id] + [i for i in (extra_eos_ids or []) if i is not None]
    eos_ids = list(dict.fromkeys(eos_ids))
    model.config.eos_token_id = eos_ids[0]
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
