"""The demo's tool-calling task: glaive-shaped chats (LLaMA-Factory's ``glaive_toolcall``) with two tools that a
tiny model learns to call on a CPU.

Every row offers the same two tools (in either order) as a JSON ``tools`` column, and the user asks for one of
them in one of eight phrasings: the weather in a city (``get_weather(city)``) or a conversion of an amount between
two currencies (``convert_currency(amount, from_currency, to_currency)``). The assistant answers with a
``function_call`` turn (the call's JSON), an ``observation`` turn brings the result, and the assistant says it in a
sentence. So a model must pick the tool from the request and copy the city, the amount and the currency codes into
the arguments -- a task with one right call, measured exactly on held-out requests (:func:`heldout_tool_requests`):
two phrasings per city and per currency pair never occur in training, with amounts drawn afresh.

:func:`tool_preferences` turns the same requests into conversational preference pairs (the right call chosen,
a call of the wrong tool or with a wrong argument rejected) for DPO on tool data.

Deterministic for a seed, so the committed files under configs/demo/data can be regenerated:
    python -m llm_recipes.data.tool_demo configs/demo/data
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

__all__ = [
    "CURRENCY_TOOL",
    "TOOLS",
    "WEATHER_TOOL",
    "ToolRequest",
    "heldout_tool_requests",
    "tool_chats",
    "tool_preferences",
    "write_tool_demo_data",
]

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CURRENCY_TOOL = {
    "name": "convert_currency",
    "description": "Convert an amount of money to another currency",
    "parameters": {
        "type": "object",
        "properties": {
            "amount": {"type": "number"},
            "from_currency": {"type": "string"},
            "to_currency": {"type": "string"},
        },
        "required": ["amount", "from_currency", "to_currency"],
    },
}
TOOLS = [WEATHER_TOOL, CURRENCY_TOOL]

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Berlin", "Madrid", "Sydney", "Lagos"]
# units of each currency per US dollar: the observations' results agree with each other
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36}
CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy"]

WEATHER_REQUESTS = [
    "What is the weather in {city}?",
    "How is the weather in {city} today?",
    "Is it raining in {city}?",
    "Tell me the weather for {city}.",
    "I am flying to {city} tomorrow. What is the weather like there?",
    "Could you check the weather in {city} for me?",
    "What's it like outside in {city} right now?",
    "Should I take an umbrella in {city}?",
]
CURRENCY_REQUESTS = [
    "Convert {amount} {source} to {target}.",
    "How much is {amount} {source} in {target}?",
    "What are {amount} {source} worth in {target}?",
    "I have {amount} {source}. How many {target} is that?",
    "Please change {amount} {source} into {target}.",
    "Can you convert {amount} {source} into {target} for me?",
    "What do I get for {amount} {source} in {target}?",
    "Exchange {amount} {source} to {target}, please.",
]
SYSTEM_PROMPTS = ["You are a helpful assistant with access to tools.", "Use a tool when it helps."]
HELDOUT_PHRASINGS = 2  # per city and per currency pair
SYSTEM_SHARE = 0.2


@dataclass(frozen=True)
class ToolRequest:
    """One request and the one call that answers it."""

    text: str
    name: str
    arguments: dict[str, Any]

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.text}]

    def call(self) -> dict[str, Any]:
        """The call in TRL's (OpenAI's) shape."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


_PAIRS = list(permutations(RATES, 2))


def _heldout_phrasings(seed: int = 4321) -> tuple[dict[str, tuple[int, ...]], dict[tuple[str, str], tuple[int, ...]]]:
    # drawn once with their own seed: every phrasing, city and pair occurs in training, only these pairings do not
    rng = random.Random(seed)
    weather = {city: tuple(rng.sample(range(len(WEATHER_REQUESTS)), HELDOUT_PHRASINGS)) for city in CITIES}
    currency = {pair: tuple(rng.sample(range(len(CURRENCY_REQUESTS)), HELDOUT_PHRASINGS)) for pair in _PAIRS}
    return weather, currency


_HELDOUT_WEATHER, _HELDOUT_CURRENCY = _heldout_phrasings()


def _amount(rng: random.Random) -> int:
    return rng.choice([rng.randint(1, 99), 5 * rng.randint(1, 100), 50 * rng.randint(1, 40)])


def _request(rng: random.Random, heldout: bool, tool: str | None = None) -> ToolRequest:
    """A request whose (phrasing, city) or (phrasing, currency pair) is held out when `heldout`, never otherwise;
    for `tool` when given, else for either tool with even odds."""
    while True:
        if tool == "get_weather" or (tool is None and rng.random() < 0.5):
            city, index = rng.choice(CITIES), rng.randrange(len(WEATHER_REQUESTS))
            if (index in _HELDOUT_WEATHER[city]) == heldout:
                return ToolRequest(WEATHER_REQUESTS[index].format(city=city), "get_weather", {"city": city})
        else:
            (source, target), index = rng.choice(_PAIRS), rng.randrange(len(CURRENCY_REQUESTS))
            if (index in _HELDOUT_CURRENCY[(source, target)]) == heldout:
                amount = _amount(rng)
                text = CURRENCY_REQUESTS[index].format(amount=amount, source=source, target=target)
                arguments = {"amount": amount, "from_currency": source, "to_currency": target}
                return ToolRequest(text, "convert_currency", arguments)


def _result(rng: random.Random, request: ToolRequest) -> tuple[dict[str, Any], str]:
    """What the tool returns, and the assistant's sentence about it."""
    args = request.arguments
    if request.name == "get_weather":
        temperature, condition = rng.randint(-5, 35), rng.choice(CONDITIONS)
        observation = {"city": args["city"], "temperature": temperature, "condition": condition}
        return observation, f"It is {condition} and {temperature} degrees in {args['city']}."
    result = round(args["amount"] * RATES[args["to_currency"]] / RATES[args["from_currency"]], 2)
    observation = {**args, "result": result}
    return observation, f"{args['amount']} {args['from_currency']} is {result} {args['to_currency']}."


def _tools_json(rng: random.Random) -> str:
    return json.dumps(rng.sample(TOOLS, len(TOOLS)))  # either order: the model reads the names, not a position


def tool_chats(rows: int, seed: int = 0) -> list[dict[str, Any]]:
    """Glaive-shaped training rows: ``conversations`` (human, function_call, observation, gpt) and ``tools``, both
    as JSON text where glaive has JSON text; a system turn on some rows. No held-out request among them."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        request = _request(rng, heldout=False)
        observation, answer = _result(rng, request)
        turns = [
            {"from": "human", "value": request.text},
            {"from": "function_call", "value": json.dumps({"name": request.name, "arguments": request.arguments})},
            {"from": "observation", "value": json.dumps(observation)},
            {"from": "gpt", "value": answer},
        ]
        if rng.random() < SYSTEM_SHARE:
            turns.insert(0, {"from": "system", "value": rng.choice(SYSTEM_PROMPTS)})
        out.append({"conversations": turns, "tools": _tools_json(rng)})
    return out


def heldout_tool_requests(per_tool: int = 24, seed: int = 100) -> list[ToolRequest]:
    """Distinct held-out requests, `per_tool` of each tool (the weather has 24: two phrasings for each of 12
    cities): phrasings never paired with their city or currency pair in training."""
    rng = random.Random(seed)
    out: list[ToolRequest] = []
    for tool in ("get_weather", "convert_currency"):
        requests: dict[str, ToolRequest] = {}
        while len(requests) < per_tool:
            request = _request(rng, heldout=True, tool=tool)
            requests.setdefault(request.text, request)
        out += requests.values()
    return out


def _wrong_call(rng: random.Random, request: ToolRequest) -> dict[str, Any]:
    """A call a model might make instead: the other tool, or the right tool with one argument wrong."""
    if rng.random() < 0.4:
        other = _request(rng, heldout=False)
        while other.name == request.name:
            other = _request(rng, heldout=False)
        return {"name": other.name, "arguments": other.arguments}
    arguments = dict(request.arguments)
    if request.name == "get_weather":
        arguments["city"] = rng.choice([city for city in CITIES if city != arguments["city"]])
    else:
        key = rng.choice(["amount", "from_currency", "to_currency"])
        if key == "amount":
            arguments["amount"] = arguments["amount"] + rng.choice([1, 10, 100])
        else:
            arguments[key] = rng.choice([code for code in RATES if code not in arguments.values()])
    return {"name": request.name, "arguments": arguments}


def tool_preferences(rows: int, seed: int = 1) -> list[dict[str, Any]]:
    """Conversational preference pairs on the same requests (none held out), in the OpenAI shape: ``prompt`` the
    user turn, ``chosen`` the assistant's right call, ``rejected`` a wrong one (arguments as objects), and ``tools``
    the schemas as a list."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        request = _request(rng, heldout=False)
        wrong = _wrong_call(rng, request)
        out.append(
            {
                "prompt": request.messages(),
                "chosen": [{"role": "assistant", "content": "", "tool_calls": [request.call()]}],
                "rejected": [
                    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": wrong}]}
                ],
                "tools": [{"type": "function", "function": tool} for tool in rng.sample(TOOLS, len(TOOLS))],
            }
        )
    return out


TRAIN_ROWS = 600


def write_tool_demo_data(folder: str | Path) -> list[Path]:
    """tools_glaive.json (SFT rows) and heldout/tool_requests.jsonl (each held-out request with its expected call,
    as `llm_recipes.evaluation.tool_calls` reads it)."""
    folder = Path(folder)
    (folder / "heldout").mkdir(parents=True, exist_ok=True)
    train = tool_chats(TRAIN_ROWS)
    heldout = heldout_tool_requests()
    seen = {turn["value"] for row in train for turn in row["conversations"] if turn["from"] == "human"}
    if overlap := [request.text for request in heldout if request.text in seen]:
        raise ValueError(f"held-out tool requests in the training data: {overlap[:5]}")
    train_path = folder / "tools_glaive.json"
    train_path.write_text(json.dumps(train, indent=1) + "\n", encoding="utf-8")
    heldout_path = folder / "heldout" / "tool_requests.jsonl"
    lines = [
        json.dumps({"messages": request.messages(), "tools": TOOLS, "expected": request.call()["function"]})
        for request in heldout
    ]
    heldout_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return [train_path, heldout_path]


if __name__ == "__main__":
    for path in write_tool_demo_data(sys.argv[1] if len(sys.argv) > 1 else "configs/demo/data"):
        print(path)
