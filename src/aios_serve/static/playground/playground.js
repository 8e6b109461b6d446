// aios-serve playground: plain JS over the server's own API (no framework, no external assets).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "aios-playground-api-key";
  const state = { models: [], chat: [], chatAbort: null };

  // ---- API helpers -------------------------------------------------------

  function apiHeaders(withJsonBody) {
    const headers = {};
    if (withJsonBody) headers["Content-Type"] = "application/json";
    const key = $("api-key").value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
    } catch (_) { /* not JSON */ }
    return `${response.status} ${response.statusText}`;
  }

  async function postJson(path, body) {
    const response = await fetch(path, {
      method: "POST", headers: apiHeaders(true), body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    return response.json();
  }

  // Yields the payload of each `data:` line of a server-sent event stream.
  async function* sseData(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line.startsWith("data:")) yield line.slice(5).trim();
      }
    }
    if (buffer.startsWith("data:")) yield buffer.slice(5).trim();
  }

  function showError(element, message) {
    element.textContent = message || "";
    element.hidden = !message;
  }

  function formatNumber(value, digits) {
    return Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  // ---- models and the API key -------------------------------------------

  async function loadModels() {
    const globalError = $("global-error");
    try {
      const response = await fetch("/v1/models", { headers: apiHeaders(false) });
      if (!response.ok) {
        const hint = response.status === 401 ? " Enter a valid API key above." : "";
        throw new Error((await errorMessage(response)) + hint);
      }
      state.models = (await response.json()).data.filter((card) => !card.parent);
      showError(globalError, "");
    } catch (error) {
      state.models = [];
      showError(globalError, `Could not list the models: ${error.message}`);
    }
    for (const select of document.querySelectorAll("select[data-capability]")) {
      fillModelSelect(select, select.dataset.capability);
    }
    showCapabilities();
  }

  // The chosen chat model's capabilities as badges; `tools` marks a model that can call tools.
  function showCapabilities() {
    const card = state.models.find((model) => model.id === $("chat-model").value);
    const badges = ((card && card.capabilities) || []).map((capability) => {
      const badge = document.createElement("span");
      badge.className = `badge capability-${capability}`;
      badge.textContent = capability;
      if (capability === "tools") badge.title = "Its chat template renders tools: it can call functions";
      return badge;
    });
    $("chat-capabilities").replaceChildren(...badges);
  }

  function fillModelSelect(select, capability) {
    const previous = select.value;
    const names = state.models
      .filter((card) => (card.capabilities || []).includes(capability))
      .map((card) => card.id);
    select.replaceChildren();
    if (names.length === 0) {
      const option = new Option(`no model serves ${capability}`, "");
      option.disabled = true;
      select.append(option);
      select.value = "";
      return;
    }
    for (const name of names) select.append(new Option(name, name));
    select.value = names.includes(previous) ? previous : names[0];
  }

  function setupApiKey() {
    const input = $("api-key");
    input.value = sessionStorage.getItem(KEY_STORAGE) || "";
    let timer = null;
    input.addEventListener("input", () => {
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      clearTimeout(timer);
      timer = setTimeout(loadModels, 400);
    });
  }

  // ---- tabs ---------------------------------------------------------------

  function setupTabs() {
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => {
        for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
        for (const panel of document.querySelectorAll(".panel")) {
          panel.classList.toggle("active", panel.id === `panel-${tab.dataset.tab}`);
        }
      });
    }
  }

  // ---- chat ---------------------------------------------------------------

  function addMessage(role, text) {
    $("chat-empty").hidden = true;
    const bubble = document.createElement("div");
    bubble.className = `message ${role}`;
    const label = document.createElement("span");
    label.className = "role";
    label.textContent = role;
    const content = document.createElement("span");
    content.className = "content";
    content.textContent = text;
    bubble.append(label, content);
    $("chat-log").append(bubble);
    scrollChat();
    return bubble;
  }

  function scrollChat() {
    const log = $("chat-log");
    log.scrollTop = log.scrollHeight;
  }

  function setChatBusy(busy) {
    $("chat-send").disabled = busy;
    $("chat-stop").disabled = !busy;
  }

  function showChatStats(usage, timing, finishReason, approximateTokens) {
    const completion = usage ? usage.completion_tokens : approximateTokens;
    $("stat-prompt").textContent = usage ? usage.prompt_tokens : "–";
    $("stat-completion").textContent = usage ? completion : `≈${completion}`;
    $("stat-total").textContent = usage ? usage.total_tokens : "–";
    const ttft = timing.firstTokenAt === null ? NaN : (timing.firstTokenAt - timing.startedAt) / 1000;
    $("stat-ttft").textContent = Number.isFinite(ttft) ? `${formatNumber(ttft, 2)} s` : "–";
    // Decode speed: tokens after the first one over the time after the first one.
    const decodeSeconds = timing.firstTokenAt === null ? 0 : (timing.endedAt - timing.firstTokenAt) / 1000;
    const rate = completion > 1 && decodeSeconds > 0
      ? (completion - 1) / decodeSeconds
      : completion / ((timing.endedAt - timing.startedAt) / 1000);
    $("stat-tps").textContent = formatNumber(rate, 1);
    $("stat-finish").textContent = finishReason || "–";
  }

  function chatRequest(model) {
    const messages = [];
    const system = $("chat-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...state.chat);
    const body = {
      model, messages, stream: true, stream_options: { include_usage: true },
      temperature: parseFloat($("chat-temperature").value),
    };
    const maxTokens = parseInt($("chat-max-tokens").value, 10);
    if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
    return body;
  }

  async function sendChat(text) {
    const chatError = $("chat-error");
    showError(chatError, "");
    const model = $("chat-model").value;
    if (!model) {
      showError(chatError, "No served model can chat.");
      return;
    }
    state.chat.push({ role: "user", content: text });
    addMessage("user", text);
    const bubble = addMessage("assistant", "");
    const content = bubble.querySelector(".content");
    bubble.classList.add("streaming");
    bubble.dataset.state = "streaming";

    const controller = new AbortController();
    state.chatAbort = controller;
    setChatBusy(true);
    const timing = { startedAt: performance.now(), firstTokenAt: null, endedAt: 0 };
    let answer = "";
    let usage = null;
    let finishReason = null;
    let chunks = 0;
    let failed = false;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: apiHeaders(true), body: JSON.stringify(chatRequest(model)),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const data of sseData(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const piece = (choice.delta && choice.delta.content) || "";
          if (piece) {
            if (timing.firstTokenAt === null) timing.firstTokenAt = performance.now();
            answer += piece;
            chunks += 1;
            content.textContent = answer;
            scrollChat();
          }
          if (choice.finish_reason) finishReason = choice.finish_reason;
        }
      }
    } catch (error) {
      if (error.name === "AbortError") {
        finishReason = "stopped";
      } else {
        failed = true;
        showError(chatError, error.message);
      }
    } finally {
      timing.endedAt = performance.now();
      state.chatAbort = null;
      setChatBusy(false);
      bubble.classList.remove("streaming");
    }
    if (failed && !answer) {
      bubble.remove();
      state.chat.pop(); // the failed turn is not part of the conversation
      return;
    }
    state.chat.push({ role: "assistant", content: answer });
    bubble.dataset.state = "done";
    showChatStats(usage, timing, finishReason, chunks);
  }

  function setupChat() {
    $("chat-model").addEventListener("change", showCapabilities);
    const temperature = $("chat-temperature");
    temperature.addEventListener("input", () => {
      $("chat-temperature-value").textContent = parseFloat(temperature.value).toFixed(2);
    });
    const input = $("chat-input");
    $("chat-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text || state.chatAbort) return;
      input.value = "";
      sendChat(text);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        $("chat-form").requestSubmit();
      }
    });
    $("chat-stop").addEventListener("click", () => state.chatAbort && state.chatAbort.abort());
    $("chat-clear").addEventListener("click", () => {
      if (state.chatAbort) state.chatAbort.abort();
      state.chat = [];
      for (const message of document.querySelectorAll("#chat-log .message")) message.remove();
      $("chat-empty").hidden = false;
      showError($("chat-error"), "");
    });
  }

  // ---- embeddings ----------------------------------------------------------

  function cosine(a, b) {
    let dot = 0, normA = 0, normB = 0;
    for (let i = 0; i < a.length; i += 1) {
      dot += a[i] * b[i];
      normA += a[i] * a[i];
      normB += b[i] * b[i];
    }
    return dot / Math.sqrt(normA * normB);
  }

  async function runEmbeddings() {
    const errorBox = $("embed-error");
    showError(errorBox, "");
    const model = $("embed-model").value;
    if (!model) return showError(errorBox, "No served model makes embeddings.");
    const texts = [$("embed-a").value, $("embed-b").value];
    const button = $("embed-run");
    button.disabled = true;
    const started = performance.now();
    try {
      const body = await postJson("/v1/embeddings", { model, input: texts });
      const vectors = body.data.slice().sort((x, y) => x.index - y.index).map((item) => item.embedding);
      const similarity = cosine(vectors[0], vectors[1]);
      $("embed-score").textContent = formatNumber(similarity, 4);
      $("embed-bar").style.width = `${Math.max(0, Math.min(1, similarity)) * 100}%`;
      const elapsed = performance.now() - started;
      $("embed-meta").textContent =
        `${vectors[0].length} dimensions · ${body.usage.prompt_tokens} tokens · ${elapsed.toFixed(0)} ms`;
      $("embed-result").hidden = false;
    } catch (error) {
      $("embed-result").hidden = true;
      showError(errorBox, error.message);
    } finally {
      button.disabled = false;
    }
  }

  // ---- rerank ----------------------------------------------------------------

  function resultRow(rank, result, documents) {
    const row = document.createElement("tr");
    const cells = {
      rank: String(rank),
      score: formatNumber(result.relevance_score, 4),
      index: String(result.index),
      text: result.document ? result.document.text : documents[result.index],
    };
    for (const [name, value] of Object.entries(cells)) {
      const cell = document.createElement("td");
      cell.className = name;
      cell.textContent = value;
      if (name === "score") {
        const bar = document.createElement("div");
        bar.className = "bar";
        const fill = document.createElement("div");
        fill.className = "bar-fill";
        fill.style.width = `${Math.max(0, Math.min(1, result.relevance_score)) * 100}%`;
        bar.append(fill);
        cell.append(bar);
      }
      row.append(cell);
    }
    return row;
  }

  async function runRerank() {
    const errorBox = $("rerank-error");
    showError(errorBox, "");
    const model = $("rerank-model").value;
    if (!model) return showError(errorBox, "No served model can rerank.");
    const documents = $("rerank-documents").value.split("\n").map((line) => line.trim()).filter(Boolean);
    const topN = parseInt($("rerank-top-n").value, 10);
    const button = $("rerank-run");
    button.disabled = true;
    const started = performance.now();
    try {
      const request = { model, query: $("rerank-query").value, documents };
      if (Number.isFinite(topN) && topN > 0) request.top_n = topN;
      const body = await postJson("/rerank", request);
      const rows = body.results.map((result, position) => resultRow(position + 1, result, documents));
      $("rerank-rows").replaceChildren(...rows);
      const elapsed = performance.now() - started;
      const tokens = body.usage ? `${body.usage.total_tokens} tokens · ` : "";
      $("rerank-meta").textContent = `${documents.length} documents · ${tokens}${elapsed.toFixed(0)} ms`;
      $("rerank-result").hidden = false;
    } catch (error) {
      $("rerank-result").hidden = true;
      showError(errorBox, error.message);
    } finally {
      button.disabled = false;
    }
  }

  // ---- start ------------------------------------------------------------------

  setupApiKey();
  setupTabs();
  setupChat();
  $("embed-run").addEventListener("click", runEmbeddings);
  $("rerank-run").addEventListener("click", runRerank);
  loadModels();
})();
