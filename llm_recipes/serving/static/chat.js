// The chat page's script: no framework, no other origin. It streams answers from /v1/chat/completions (fetch and a
// ReadableStream reader over the SSE `data:` lines), shows the version that gave each answer, and posts feedback to
// /v1/feedback: thumbs up/down, an edited answer, and in A/B mode which of two versions' answers is better.
"use strict";

const KEY_STORAGE = "llm-recipes-api-key"; // sessionStorage: the key lasts as long as the tab, never on disk
const $ = (id) => document.getElementById(id);

const state = {
  routed: null, // the name whose requests the server routes by its traffic split
  versions: [], // the served versions' ids, for A/B
  turns: [], // {role: "user", content} or {role: "assistant", answers: [answer], kept: index of the one continued}
  busy: false,
};

class KeyNeeded extends Error {}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function requestHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function errorMessage(response) {
  try {
    const payload = await response.json();
    return (payload.error && payload.error.message) || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// One API call: its response when 2xx; a 401 opens the key form, any other error throws the server's message.
async function api(path, body) {
  const init = body === undefined ? { headers: requestHeaders() } : { method: "POST", headers: requestHeaders(), body: JSON.stringify(body) };
  const response = await fetch(path, init);
  if (response.status === 401) {
    const hadKey = Boolean(sessionStorage.getItem(KEY_STORAGE));
    askForKey(hadKey ? "the server refused this API key; enter the right one" : "this server needs an API key");
    throw new KeyNeeded("an API key is needed");
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

function askForKey(message) {
  $("key-form").hidden = false;
  setStatus(message, true);
  $("api-key").focus();
}

async function loadModels() {
  const payload = await (await api("/v1/models")).json();
  const models = payload.data || [];
  const routed = models.find((model) => model.traffic) || models[0];
  state.routed = routed ? routed.id : undefined;
  state.versions = models.filter((model) => model !== routed).map((model) => model.id);
  for (const [select, preferred] of [[$("version-a"), 0], [$("version-b"), 1]]) {
    select.replaceChildren(...state.versions.map((id) => new Option(id, id)));
    select.selectedIndex = Math.min(preferred, state.versions.length - 1);
  }
  $("ab-mode").disabled = state.versions.length < 2;
  setStatus(`versions: ${state.versions.join(", ")}` + (state.versions.length < 2 ? " (A/B needs two)" : ""));
  document.body.dataset.ready = "true";
}

// The conversation as the next request sends it: each assistant turn by the answer kept (A's until B is preferred);
// an answer that failed is left out.
function conversation() {
  const messages = [];
  for (const turn of state.turns) {
    if (turn.role === "user") messages.push({ role: "user", content: turn.content });
    else if (turn.answers[turn.kept].done) messages.push({ role: "assistant", content: turn.answers[turn.kept].text });
  }
  return messages;
}

function button(label, className, onClick, title) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = label;
  if (title) element.title = element.ariaLabel = title;
  element.disabled = true; // until the answer is complete and has its id
  element.addEventListener("click", onClick);
  return element;
}

function newAnswer(row, model, slot) {
  const answer = { model, slot, id: null, version: null, text: "", done: false };
  const card = (answer.card = document.createElement("section"));
  card.className = "answer";
  if (slot) card.dataset.slot = slot;
  answer.label = document.createElement("div");
  answer.label.className = "version";
  answer.label.textContent = slot ? `${slot}: ${model}` : "…";
  answer.body = document.createElement("div");
  answer.body.className = "answer-text";
  answer.ack = document.createElement("span");
  answer.ack.className = "ack";

  const actions = document.createElement("div");
  actions.className = "actions";
  answer.up = button("👍", "thumb-up", () => rate(answer, "up"), "good answer");
  answer.down = button("👎", "thumb-down", () => rate(answer, "down"), "bad answer");
  answer.editToggle = button("Edit", "edit", () => (answer.editBox.hidden = !answer.editBox.hidden), "write a better answer");
  answer.buttons = [answer.up, answer.down, answer.editToggle];
  actions.append(answer.up, answer.down, answer.editToggle);
  if (slot) {
    answer.prefer = button("This one is better", "prefer", () => prefer(answer));
    actions.append(answer.prefer); // enabled once both answers of the pair are complete
  }
  actions.append(answer.ack);

  answer.editBox = document.createElement("div");
  answer.editBox.className = "edit-box";
  answer.editBox.hidden = true;
  answer.editText = document.createElement("textarea");
  answer.editText.rows = 3;
  answer.editText.className = "edit-text";
  const save = document.createElement("button");
  save.type = "button";
  save.className = "save-edit";
  save.textContent = "Save edit";
  save.addEventListener("click", () => saveEdit(answer));
  answer.editBox.append(answer.editText, save);

  card.append(answer.label, answer.body, actions, answer.editBox);
  row.append(card);
  return answer;
}

// One chunk of the stream: the id and version it carries, and the text it adds.
function applyChunk(answer, chunk) {
  if (chunk.error) throw new Error(chunk.error.message || "the server failed mid-answer");
  if (!answer.id && chunk.id) answer.card.dataset.responseId = answer.id = chunk.id;
  const version = chunk.version || chunk.model;
  if (version && version !== answer.version) {
    answer.card.dataset.version = answer.version = version;
    answer.label.textContent = (answer.slot ? `${answer.slot}: ` : "") + `version ${version}`;
  }
  for (const choice of chunk.choices || []) {
    const piece = (choice.delta && choice.delta.content) || "";
    if (piece) answer.body.textContent = answer.text += piece;
  }
}

async function stream(answer, messages) {
  try {
    const response = await api("/v1/chat/completions", { model: answer.model, messages, stream: true });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let closed = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).replace(/^ /, "");
          if (data === "[DONE]") closed = true;
          else applyChunk(answer, JSON.parse(data));
        }
      }
    }
    // the server records an answer before it sends [DONE]: without it there is nothing to give feedback on
    if (!closed) throw new Error("the answer was cut off before it finished");
    answer.done = true;
    answer.editText.value = answer.text;
    for (const element of answer.buttons) element.disabled = false;
    answer.card.dataset.done = "true";
  } catch (err) {
    answer.card.classList.add("failed");
    answer.card.dataset.done = "failed";
    answer.body.textContent = answer.text + (answer.text ? "\n" : "") + `(no answer: ${err.message})`;
  }
}

async function sendFeedback(answer, body, what) {
  answer.ack.className = "ack";
  answer.ack.textContent = "sending…";
  try {
    const payload = await (await api("/v1/feedback", { response_id: answer.id, ...body })).json();
    answer.ack.textContent = `${what}: recorded, thanks`;
    answer.ack.dataset.feedbackIds = payload.feedback_ids.join(",");
    return true;
  } catch (err) {
    answer.ack.className = "ack error";
    answer.ack.textContent = `${what}: not recorded (${err.message})`;
    return false;
  }
}

async function rate(answer, rating) {
  if (await sendFeedback(answer, { rating }, rating === "up" ? "👍" : "👎")) {
    answer.up.ariaPressed = String(rating === "up");
    answer.down.ariaPressed = String(rating === "down");
  }
}

async function saveEdit(answer) {
  const text = answer.editText.value.trim();
  if (!text) return;
  if (await sendFeedback(answer, { edit: text }, "edit")) answer.editBox.hidden = true;
}

async function prefer(answer) {
  const turn = answer.turn;
  const other = turn.answers.find((candidate) => candidate !== answer);
  if (await sendFeedback(answer, { preferred_over: other.id }, `better than ${other.slot}`)) {
    turn.kept = turn.answers.indexOf(answer); // the conversation goes on from the chosen answer
    for (const candidate of turn.answers) candidate.card.classList.toggle("kept", candidate === answer);
    other.ack.textContent = "";
  }
}

async function send(text) {
  const ab = $("ab-mode").checked;
  state.busy = true;
  $("send").disabled = $("new-chat").disabled = true;
  state.turns.push({ role: "user", content: text });
  const messages = conversation();

  const bubble = document.createElement("div");
  bubble.className = "user";
  bubble.textContent = text;
  const row = document.createElement("div");
  row.className = "answers";
  $("conversation").append(bubble, row);

  const models = ab ? [$("version-a").value, $("version-b").value] : [state.routed];
  const turn = { role: "assistant", answers: [], kept: 0 };
  turn.answers = models.map((model, index) => newAnswer(row, model, ab ? "AB"[index] : null));
  for (const answer of turn.answers) answer.turn = turn;
  state.turns.push(turn);
  row.scrollIntoView({ block: "end" });

  await Promise.all(turn.answers.map((answer) => stream(answer, messages)));
  if (ab && turn.answers.every((answer) => answer.done)) for (const answer of turn.answers) answer.prefer.disabled = false;
  state.busy = false;
  $("send").disabled = $("new-chat").disabled = false;
  $("prompt").focus();
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.busy) return;
  $("prompt").value = "";
  send(text);
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("chat-form").requestSubmit();
  }
});

$("ab-mode").addEventListener("change", () => ($("ab-versions").hidden = !$("ab-mode").checked));

$("new-chat").addEventListener("click", () => {
  state.turns = [];
  $("conversation").replaceChildren();
});

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("api-key").value = "";
  $("key-form").hidden = true;
  start();
});

function start() {
  loadModels().catch((err) => {
    if (!(err instanceof KeyNeeded)) setStatus(`cannot list the versions: ${err.message}`, true);
  });
}

start();
