"""The chat page at `/`, in a real headless browser (Debian's chromium and chromedriver through selenium, nothing
downloaded): the API key asked for, a message sent, the answer streamed in and equal to the version's own greedy
answer, thumbs down, the A/B pair side by side, a preference and an edit -- each feedback row read back from the
database through a connection of the test's own. And the page itself: one origin only (its CSP), no URL elsewhere.

Without chromium, chromedriver or selenium the browser test skips, saying what to install; under CI it fails."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_serve import (  # noqa: F401 (lora_dir and expected are fixtures used here)
    ID,
    KEY,
    KEY_ENV,
    MESSAGES,
    SharedEngine,
    call,
    console_script,
    expected,
    lora_dir,
    read,
    start_server,
)

from llm_recipes.cli import parse_here
from llm_recipes.serving.page import PAGE_FILES

CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900")


def serve_args(db: Path, versions: dict[str, str], *extra: str) -> Any:
    argv = ["--versions", json.dumps(versions), "--port", "0", "--db", f"sqlite:///{db}", "--api_key_env", KEY_ENV]
    (args,) = parse_here("serve", [*argv, "--max_tokens", "8", "--log_level", "warning", *extra])
    return args


# --------------------------------------------------------------------------------------------------------------
# The page as served: no browser needed


def test_the_page_and_its_files_come_from_this_server_only(tmp_path, chat_model_dir, monkeypatch):
    """GET / needs no key (the page asks for it; /v1/ still refuses without), and every file it loads carries the
    CSP that allows this origin only, with nothing inline and no http(s) URL anywhere."""
    monkeypatch.setenv(KEY_ENV, KEY)
    args = serve_args(tmp_path / "feedback.db", {"v1": str(chat_model_dir)})
    server = start_server(args, engine=SharedEngine(None))  # no model: nothing is asked of it
    try:
        texts = {}
        for path, (_, media_type) in PAGE_FILES.items():
            status, body, headers = call(server.url, path, key=None)
            assert status == 200 and headers["content-type"] == media_type, (path, status, body)
            policy = headers["content-security-policy"]
            assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
            assert headers["x-content-type-options"] == "nosniff"
            assert not re.search(r"https?://", body, re.IGNORECASE), path
            texts[path] = body
        assert call(server.url, "/v1/models", key=None)[0] == 401
    finally:
        server.stop()
    page = texts["/"]
    assert '<script src="/chat.js" defer></script>' in page and '<link rel="stylesheet" href="/chat.css">' in page
    # the CSP refuses inline code: the page has none, and no other source
    assert len(re.findall(r"<script\b", page)) == 1 and not re.search(r"<style\b|\sstyle=|\son[a-z]+=", page)
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["/chat.css", "/chat.js"]
    assert "import(" not in texts["/chat.js"] and "@import" not in texts["/chat.css"]


@pytest.mark.slow
def test_llm_recipes_serve_prints_the_page_it_serves(tmp_path, chat_model_dir):
    """As a user starts it: the printed page address answers with the page, no key asked of the page itself."""
    command = [*console_script(), "serve", "--model", str(chat_model_dir), "--port", "0"]
    command += ["--db", f"sqlite:///{tmp_path / 'feedback.db'}", "--log_level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        match = re.fullmatch(r"chat page: (http://127\.0\.0\.1:\d+)/\n", lines[1])
        assert match and lines[0].startswith("serving llm-recipes"), lines
        status, page, headers = call(match.group(1), "/", key=None)
        assert status == 200 and "<title>llm-recipes chat</title>" in page
        assert headers["content-security-policy"].startswith("default-src 'self'")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]


def test_the_page_ships_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = pyproject["tool"]["setuptools"]["package-data"]["llm_recipes.serving"]
    static = Path(__file__).parents[1] / "llm_recipes" / "serving" / "static"
    for name, _ in PAGE_FILES.values():
        assert (static / name).is_file() and any(Path("static", name).match(pattern) for pattern in shipped), name


# --------------------------------------------------------------------------------------------------------------
# In a browser


@pytest.fixture(scope="module")
def browser():
    """Headless chromium driven by the system chromedriver; selenium-manager never asked to download anything."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or (CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else None)
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium_missing = True
    else:
        selenium_missing = False
    packages = [name for name, absent in (("chromium", not chromium), ("chromium-driver", not driver_path)) if absent]
    steps = [f"apt-get install {' '.join(packages)}"] * bool(packages) + ["pip install selenium"] * selenium_missing
    if steps:
        reason = f"the chat page's browser test needs {' and '.join(packages + ['selenium'] * selenium_missing)}"
        reason += f" ({'; '.join(steps)})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in BROWSER_ARGS:
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, chat_model_dir, lora_dir):  # noqa: F811 (lora_dir: the fixture imported above)
    """Two versions (the tiny chat model and a LoRA on it), an API key, answers of at most 8 tokens."""
    db = tmp_path_factory.mktemp("chat-page") / "feedback.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, KEY)
        versions = {"v1": str(chat_model_dir), "v2": str(lora_dir)}
        running = start_server(serve_args(db, versions, "--traffic", '{"v1": 50, "v2": 50}'))
        yield running
        running.stop()


def wait_for(condition, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# What the page asks of /v1/chat/completions, and every text its answers showed as the page changed it (a streamed
# answer grows as its chunks come; how many steps depends on how the browser's reads cut the stream).
WATCH_ANSWERS = """
window.shown = [];
window.asked = [];
const fetchFirst = window.fetch;
window.fetch = (path, init) => {
  if (path === "/v1/chat/completions") window.asked.push(JSON.parse(init.body));
  return fetchFirst(path, init);
};
new MutationObserver((records) => {
  for (const record of records) {
    const element = record.target.nodeType === Node.TEXT_NODE ? record.target.parentElement : record.target;
    if (element.classList && element.classList.contains("answer-text")) window.shown.push(element.textContent);
  }
}).observe(document.getElementById("conversation"), {subtree: true, childList: true, characterData: true});
"""


def send(driver: Any, text: str, answers: int) -> list[Any]:
    """Types `text`, sends it and waits for `answers` complete answers; the answer cards."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.ID, "prompt").send_keys(text, Keys.ENTER)

    def complete() -> list[Any] | None:
        cards = driver.find_elements(By.CSS_SELECTOR, ".answer")
        states = [card.get_attribute("data-done") for card in cards]
        assert "failed" not in states, [card.text for card in cards]
        return cards if len(cards) == answers and all(state == "true" for state in states) else None

    return wait_for(complete, f"{answers} streamed answer(s)")


def shown(card: Any) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    return {
        "id": card.get_attribute("data-response-id"),
        "version": card.get_attribute("data-version"),
        "label": card.find_element(By.CSS_SELECTOR, ".version").text,
        "text": card.find_element(By.CSS_SELECTOR, ".answer-text").get_attribute("textContent"),
    }


def click_and_wait_for_ack(card: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    card.find_element(By.CSS_SELECTOR, selector).click()
    ack = card.find_element(By.CSS_SELECTOR, ".ack")
    return wait_for(lambda: ack.text if ack.text.endswith(("recorded, thanks", ")")) else None, f"{selector}'s ack")


def test_chat_stream_thumbs_ab_choice_and_edit_in_a_browser(browser, page_server, expected):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver, db = browser, page_server.state.args.db
    driver.get(page_server.url + "/")
    # the server needs a key: the page asks, keeps it for the tab, and sends it
    key_form = driver.find_element(By.ID, "key-form")
    wait_for(key_form.is_displayed, "the API key form")
    driver.find_element(By.ID, "api-key").send_keys(KEY)
    driver.find_element(By.ID, "save-key").click()
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "the versions")
    assert driver.execute_script("return sessionStorage.getItem('llm-recipes-api-key')") == KEY
    assert not key_form.is_displayed() and "versions: v1, v2" in driver.find_element(By.ID, "status").text

    # one message, routed by the traffic split: streamed in, the version's own answer, its version shown
    driver.execute_script(WATCH_ANSWERS)
    (card,) = send(driver, MESSAGES[0]["content"], answers=1)
    answer = shown(card)
    assert (
        ID.match(answer["id"]) and answer["version"] in expected and answer["label"] == f"version {answer['version']}"
    )
    assert answer["text"] == expected[answer["version"]]
    asked = driver.execute_script("return window.asked")
    assert asked == [{"model": "llm-recipes", "messages": MESSAGES, "stream": True}]  # routed by the split
    steps = driver.execute_script("return window.shown")
    assert steps[-1] == answer["text"] and all(answer["text"].startswith(step) for step in steps), steps

    assert click_and_wait_for_ack(card, ".thumb-down") == "👎: recorded, thanks"
    assert card.find_element(By.CSS_SELECTOR, ".thumb-down").get_attribute("aria-pressed") == "true"
    assert read(db, "SELECT kind, value FROM feedback WHERE response_id = :id", id=answer["id"]) == [("rating", "down")]
    # the conversation the feedback judged is stored with it (from the server's memory; logging is off)
    rows = read(db, "SELECT version, messages, answer FROM responses WHERE id = :id", id=answer["id"])
    assert rows == [(answer["version"], json.dumps(MESSAGES), answer["text"])]

    # A/B: a new chat, the same message to v1 and v2, side by side
    driver.find_element(By.ID, "new-chat").click()
    driver.find_element(By.ID, "ab-mode").click()
    assert driver.find_element(By.ID, "version-a").get_attribute("value") == "v1"
    assert driver.find_element(By.ID, "version-b").get_attribute("value") == "v2"
    a_card, b_card = send(driver, MESSAGES[0]["content"], answers=2)
    a, b = shown(a_card), shown(b_card)
    assert (a["version"], a["label"], a["text"]) == ("v1", "A: version v1", expected["v1"])
    assert (b["version"], b["label"], b["text"]) == ("v2", "B: version v2", expected["v2"])
    assert a_card.location["y"] == b_card.location["y"] and a_card.location["x"] < b_card.location["x"]
    asked = driver.execute_script("return window.asked")[1:]  # the new chat starts from the message alone
    assert sorted(asked, key=lambda body: body["model"]) == [
        {"model": version, "messages": MESSAGES, "stream": True} for version in ("v1", "v2")
    ]

    assert click_and_wait_for_ack(b_card, ".prefer") == "better than A: recorded, thanks"
    assert "kept" in b_card.get_attribute("class") and "kept" not in a_card.get_attribute("class")
    query = "SELECT kind, value, other_response_id FROM feedback WHERE response_id = :id"
    assert read(db, query, id=b["id"]) == [("choice", b["id"], a["id"])]

    a_card.find_element(By.CSS_SELECTOR, ".edit").click()
    edit_text = a_card.find_element(By.CSS_SELECTOR, ".edit-text")
    assert edit_text.get_attribute("value") == a["text"]  # the box starts from the answer
    edit_text.clear()
    edit_text.send_keys("2 + 3 = 5")
    assert click_and_wait_for_ack(a_card, ".save-edit") == "edit: recorded, thanks"
    assert read(db, query, id=a["id"]) == [("edit", "2 + 3 = 5", None)]

    # the conversation goes on from the preferred answer, to both versions again
    send(driver, "And 3 + 4?", answers=4)
    continued = [*MESSAGES, {"role": "assistant", "content": b["text"]}, {"role": "user", "content": "And 3 + 4?"}]
    assert [body["messages"] for body in driver.execute_script("return window.asked")[3:]] == [continued, continued]

    # nothing the page did broke its own CSP
    violations = [
        entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]
    ]
    assert violations == []
