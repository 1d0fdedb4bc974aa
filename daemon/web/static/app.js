// The hfd web page: plain DOM, no library, no build step. Every call goes to the daemon's own
// HTTP API with the key the user typed (kept in localStorage); with keys off nothing is asked.
// Polling runs only while the page is visible, and only for the view on screen.
"use strict";

const KEY = "hfd.key";
const state = { view: "loaded", api: null, timer: null, series: [], last: null, history: [] };

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}

function notice(text) {
  const el = $("notice");
  el.textContent = text || "";
  el.hidden = !text;
}

function headers(extra) {
  const out = Object.assign({}, extra || {});
  const key = localStorage.getItem(KEY);
  if (key) out.Authorization = "Bearer " + key;
  return out;
}

class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error;
    super(typeof err === "string" ? err : (err && err.message) || "HTTP " + status);
    this.status = status;
  }
}

async function call(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  if (r.status === 401) askKey();
  if (!r.ok) {
    let data = null;
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, data);
  }
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

function askKey() {
  $("keyform").hidden = false;
  notice("This daemon requires an API key: type one above (create one with 'hfd keys create').");
}

// The operations this daemon serves, from its OpenAPI document: routes added by newer
// versions (or absent from older ones) are shown or hidden by what the document lists.
function has(method, path) {
  const item = state.api && state.api.paths[path];
  return Boolean(item && item[method.toLowerCase()]);
}

// Read a streamed body line by line (NDJSON, or SSE "data:" lines), calling onLine for each.
async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let at;
    while ((at = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, at).replace(/\r$/, "");
      buffer = buffer.slice(at + 1);
      if (line) onLine(line);
    }
  }
  if (buffer.trim()) onLine(buffer.trim());
}

// ------------------------------------------------------------------ views

async function showLoaded() {
  const [ps, stats] = await Promise.all([
    call("GET", "/api/ps"),
    call("GET", "/api/stats").catch(() => null), // admin scope: the budgets are optional
  ]);
  const body = $("loaded-table").tBodies[0];
  const models = ps.models || [];
  body.replaceChildren(...models.map((m) => h("tr", { "data-model": m.name },
    h("td", {}, m.name),
    h("td", {}, m.task || ""),
    h("td", {}, m.engine || ""),
    h("td", {}, m.device || ""),
    h("td", {}, m.precision || m.weight_format || ""),
    h("td", { class: "num" }, bytes(m.memory_bytes || m.memory_reserved_bytes)),
    h("td", { class: "num" }, m.in_use ?? ""),
    h("td", { class: "num" }, m.expires_in === null || m.expires_in === undefined ? "" : Math.round(m.expires_in) + " s"),
    h("td", {}, has("POST", "/api/unload")
      ? h("button", { onclick: () => act(() => call("POST", "/api/unload", { model: m.name })) }, "unload") : null),
  )));
  $("loaded-empty").hidden = models.length > 0;
  const pools = stats && stats.models && stats.models.memory;
  const mem = $("memory");
  mem.replaceChildren();
  if (pools) {
    for (const [pool, p] of Object.entries(pools)) {
      const share = p.budget_bytes ? Math.min(1, p.used_bytes / p.budget_bytes) : 0;
      const fill = h("span");
      fill.style.width = (share * 100).toFixed(1) + "%";
      mem.append(h("div", { class: "pool" }, h("strong", {}, pool + " "),
        h("div", { class: "bar", title: (p.models || []).join(", ") }, fill,
          h("em", {}, bytes(p.used_bytes) + " of " + bytes(p.budget_bytes) + " budget"))));
    }
  }
}

async function act(fn) {
  try { await fn(); notice(""); } catch (e) { notice(e.message); }
  refresh();
}

async function showStore() {
  const body = $("store-table").tBodies[0];
  // /api/tags lists the store where the daemon serves it; else the configured models.
  if (has("GET", "/api/tags")) {
    const tags = await call("GET", "/api/tags");
    body.replaceChildren(...(tags.models || []).map((m) => h("tr", { "data-model": m.name },
      h("td", {}, m.name),
      h("td", {}, [bytes(m.size), m.details && m.details.family, m.modified_at].filter(Boolean).join(" · ")),
      h("td", {}, has("DELETE", "/api/delete") ? h("button", { onclick: () => remove(m.name) }, "rm") : null),
    )));
  } else {
    const list = await call("GET", "/v1/models");
    body.replaceChildren(...(list.data || []).map((m) => h("tr", { "data-model": m.id },
      h("td", {}, m.id),
      h("td", {}, [m.ref, m.task, m.loaded ? "loaded" : ""].filter(Boolean).join(" · ")),
      h("td", {}),
    )));
  }
}

function remove(name) {
  if (!confirm("Remove " + name + " from the store?")) return;
  act(() => call("DELETE", "/api/delete", { model: name }));
}

async function pull(ref) {
  const box = $("pull-status");
  const bar = $("pull-progress");
  const text = $("pull-text");
  box.hidden = false;
  bar.removeAttribute("value");
  text.textContent = "starting";
  text.dataset.seen = "";
  const r = await fetch("/api/pull", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ model: ref, stream: true }),
  });
  if (!r.ok) {
    let data = null;
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    if (r.status === 401) askKey();
    throw new ApiError(r.status, data);
  }
  let failed = null;
  await readLines(r, (line) => {
    const ev = JSON.parse(line);
    if (ev.error) { failed = typeof ev.error === "string" ? ev.error : ev.error.message; return; }
    if (ev.total) { bar.max = ev.total; bar.value = ev.completed || 0; }
    const parts = [ev.status];
    if (ev.file) parts.push(ev.file);
    if (ev.total) parts.push(bytes(ev.completed || 0) + " / " + bytes(ev.total));
    text.textContent = parts.join(" · ");
    text.dataset.status = ev.status;
    text.dataset.seen = (text.dataset.seen || "") + ev.status + " ";
  });
  if (failed) throw new Error(failed);
  bar.max = 1;
  bar.value = 1;
  refresh();
}

function kv(obj) {
  return h("table", {}, h("tbody", {}, Object.entries(obj).map(([k, v]) => h("tr", {},
    h("th", {}, k),
    h("td", {}, v !== null && typeof v === "object" ? (Array.isArray(v) && v.every((x) => typeof x !== "object")
      ? v.join(", ") : kv(v)) : (k.endsWith("bytes") ? bytes(v) : String(v))),
  ))));
}

async function showHardware() {
  const report = await call("GET", "/api/hardware");
  $("hardware").replaceChildren(kv(report));
}

// Prometheus text: the sum of each named series over its labels.
function sums(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    const name = m[1] + (m[2] && m[2].includes('direction="out"') ? ":out" : "");
    out[name] = (out[name] || 0) + Number(m[3]);
  }
  return out;
}

async function showActivity() {
  const [metrics, recent] = await Promise.all([
    call("GET", "/metrics").catch((e) => { $("chart-legend").textContent = e.message; return null; }),
    has("GET", "/api/usage/recent") ? call("GET", "/api/usage/recent?limit=30").catch(() => null) : null,
  ]);
  if (metrics) sample(sums(metrics));
  draw();
  const body = $("recent-table").tBodies[0];
  if (recent) {
    body.replaceChildren(...recent.data.map((r) => h("tr", {},
      h("td", {}, new Date(r.ts * 1000).toLocaleTimeString()),
      h("td", {}, r.door), h("td", {}, r.key), h("td", {}, r.route),
      h("td", {}, r.model || "(none)"), h("td", { class: "num" }, r.status),
      h("td", { class: "num" }, r.prompt_tokens + " / " + r.completion_tokens),
      h("td", { class: "num" }, Number(r.latency_ms).toFixed(1)),
    )));
  }
}

function sample(now) {
  const t = performance.now() / 1000;
  if (state.last) {
    const dt = t - state.last.t;
    const d = (k) => (now[k] || 0) - (state.last.v[k] || 0);
    const count = d("hfd_request_duration_seconds_count");
    state.series.push({
      tokens: Math.max(0, d("hfd_tokens_total:out") / dt),
      latency: count > 0 ? (d("hfd_request_duration_seconds_sum") / count) * 1000 : null,
    });
    if (state.series.length > 90) state.series.shift();
  }
  state.last = { t, v: now };
}

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 30;
  ctx.clearRect(0, 0, W, H);
  ctx.strokeStyle = "#e5e7eb";
  ctx.strokeRect(pad, 5, W - 2 * pad, H - pad - 5);
  const s = state.series;
  canvas.dataset.samples = String(s.length);
  const maxTok = Math.max(1, ...s.map((p) => p.tokens));
  const maxLat = Math.max(1, ...s.map((p) => p.latency || 0));
  const x = (i) => pad + ((W - 2 * pad) * i) / 89;
  const line = (key, max, color) => {
    ctx.strokeStyle = color;
    ctx.beginPath();
    let started = false;
    s.forEach((p, i) => {
      if (p[key] === null) return;
      const y = H - pad - ((H - pad - 10) * p[key]) / max;
      if (started) ctx.lineTo(x(i), y); else { ctx.moveTo(x(i), y); started = true; }
    });
    ctx.stroke();
  };
  line("tokens", maxTok, "#2563eb");
  line("latency", maxLat, "#dc2626");
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px sans-serif";
  ctx.fillText(maxTok.toFixed(1) + " tok/s", 2, 14);
  ctx.fillText(maxLat.toFixed(0) + " ms", W - pad + 2, 14);
  const last = s[s.length - 1];
  $("chart-legend").textContent = last
    ? "blue: generated tokens/s (" + last.tokens.toFixed(1) + ") · red: mean request latency (" +
      (last.latency === null ? "no requests" : last.latency.toFixed(1) + " ms") + ")"
    : "collecting…";
}

async function fillModels() {
  const list = await call("GET", "/v1/models");
  const models = list.data || [];
  const fill = (select, task) => {
    const keep = select.value;
    select.replaceChildren(...models.filter((m) => !m.task || m.task === task)
      .map((m) => h("option", { value: m.id }, m.id)));
    if (keep) select.value = keep;
  };
  fill($("chat-model"), "generate");
  fill($("embed-model"), "embed");
}

const chat = [];

async function sendChat(text) {
  chat.push({ role: "user", content: text });
  const log = $("chat-log");
  log.append(h("div", { class: "msg user" }, h("span", { class: "who" }, "you"), text));
  const out = h("span", { class: "text" });
  const msg = h("div", { class: "msg assistant" }, h("span", { class: "who" }, $("chat-model").value), out);
  log.append(msg);
  const r = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({
      model: $("chat-model").value,
      messages: chat,
      stream: true,
      max_tokens: Number($("chat-max").value) || undefined,
    }),
  });
  if (!r.ok) {
    let data = null;
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    msg.remove();
    if (r.status === 401) askKey();
    throw new ApiError(r.status, data);
  }
  let chunks = 0;
  await readLines(r, (line) => {
    if (!line.startsWith("data:")) return;
    const data = line.slice(5).trim();
    if (data === "[DONE]") return;
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message);
    for (const choice of event.choices || []) {
      if (choice.delta && choice.delta.content) {
        out.textContent += choice.delta.content;
        chunks++;
      }
    }
  });
  msg.dataset.chunks = String(chunks);
  msg.dataset.done = "true";
  chat.push({ role: "assistant", content: out.textContent });
}

async function compare(a, b) {
  const res = await call("POST", "/v1/embeddings", { model: $("embed-model").value, input: [a, b] });
  const [u, v] = res.data.map((d) => d.embedding);
  let dot = 0, nu = 0, nv = 0;
  for (let i = 0; i < u.length; i++) { dot += u[i] * v[i]; nu += u[i] * u[i]; nv += v[i] * v[i]; }
  const cos = dot / (Math.sqrt(nu) * Math.sqrt(nv) || 1);
  $("embed-out").textContent = "cosine similarity " + cos.toFixed(4);
}

function showApi() {
  const rows = [];
  for (const [path, item] of Object.entries(state.api.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const ref = (o) => (o && o.$ref ? o.$ref.split("/").pop() : "");
      const req = op.requestBody ? ref(op.requestBody.content["application/json"].schema) : "";
      const ok = op.responses["200"] && op.responses["200"].content;
      const reply = ok ? Object.entries(ok).map(([t, c]) => (ref(c.schema) || t)).join(", ") : "";
      rows.push(h("tr", {}, h("td", {}, method.toUpperCase()), h("td", {}, h("code", {}, path)),
        h("td", {}, op["x-hfd-scope"] || "open"), h("td", {}, req), h("td", {}, reply),
        h("td", { class: "muted" }, op.description || "")));
    }
  }
  $("api-table").tBodies[0].replaceChildren(...rows);
}

// ------------------------------------------------------------------ wiring

const VIEWS = {
  loaded: { show: showLoaded, every: 5000 },
  store: { show: showStore, every: 0 },
  hardware: { show: showHardware, every: 0 },
  activity: { show: showActivity, every: 2000 },
  playground: { show: fillModels, every: 0 },
  api: { show: async () => showApi(), every: 0 },
};

async function refresh() {
  clearTimeout(state.timer);
  const view = VIEWS[state.view];
  try {
    await view.show();
    if (!$("keyform").hidden && localStorage.getItem(KEY)) notice("");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) notice(e.message);
  }
  // Nothing polls while the page is hidden: the daemon sees no requests from a closed page.
  if (view.every && document.visibilityState === "visible") {
    state.timer = setTimeout(refresh, view.every);
  }
}

function select(name) {
  state.view = name;
  if (location.hash.slice(1) !== name) history.replaceState(null, "", "#" + name);
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === name);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + name;
  refresh();
}

function form(id, handler) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    handler().then(() => notice(""), (e) => notice(e.message));
  });
}

async function start() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => select(b.dataset.view));
  $("keyform").hidden = !localStorage.getItem(KEY);
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    notice("");
    refresh();
  });
  $("forget").addEventListener("click", () => { localStorage.removeItem(KEY); notice(""); });
  form("pullform", () => pull($("pull-ref").value.trim()));
  form("chatform", async () => {
    const text = $("chat-input").value;
    if (!text.trim()) return;
    $("chat-input").value = "";
    await sendChat(text);
  });
  $("chat-clear").addEventListener("click", () => { chat.length = 0; $("chat-log").replaceChildren(); });
  form("embedform", () => compare($("embed-a").value, $("embed-b").value));
  window.addEventListener("hashchange", () => {
    const name = location.hash.slice(1);
    if (VIEWS[name] && name !== state.view) select(name);
  });
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refresh(); });
  state.api = await call("GET", "/openapi.json");
  $("version").textContent = "v" + state.api.info.version;
  const initial = location.hash.slice(1);
  select(VIEWS[initial] ? initial : "loaded");
}

document.addEventListener("DOMContentLoaded", () => { start().catch((e) => notice(e.message)); });
