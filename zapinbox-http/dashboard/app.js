// The zapinbox dashboard: one tenant's pending events, live over SSE.
"use strict";

const $ = (id) => document.getElementById(id);
const shown = new Map(); // event id -> table row
let key = localStorage.getItem("zapinbox-key") || "";
let source = null;
let counting = null; // the pending counters refresh, if one is due
let retry = 1000; // how long to wait before reopening a closed stream

async function call(method, path) {
  const response = await fetch(path, { method, headers: { "X-API-Key": key } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error ? body.error.message : response.statusText);
  }
  return body;
}

function setState(text, kind) {
  $("state").textContent = text;
  $("state").className = "state " + (kind || "");
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? "" : text;
  if (className) td.className = className;
  return td;
}

function button(td, label, action) {
  const b = document.createElement("button");
  b.textContent = label;
  b.dataset.action = label.toLowerCase();
  b.addEventListener("click", action);
  td.appendChild(b);
}

function show(event, fresh) {
  if (shown.has(event.id)) return;
  const topic = $("topic").value.trim();
  if (topic && event.topic !== topic) return;
  const body = $("events");
  const row = fresh ? body.insertRow(0) : body.insertRow();
  row.dataset.id = event.id;
  if (fresh) row.className = "new";
  cell(row, event.created_at.replace("T", " ").replace(/\.\d+Z$/, "Z"));
  cell(row, event.topic);
  cell(row, event.type);
  cell(row, event.source);
  cell(row, JSON.stringify(event.payload), "payload");
  const actions = cell(row, "");
  button(actions, "Ack", () => settle("POST", `/inbox/${event.id}/ack`, event.id));
  button(actions, "Delete", () => settle("DELETE", `/inbox/${event.id}`, event.id));
  shown.set(event.id, row);
  update();
}

function forget(id) {
  const row = shown.get(id);
  if (row) row.remove();
  shown.delete(id);
  update();
}

async function settle(method, path, id) {
  try {
    await call(method, path);
    forget(id);
    refreshCounters();
  } catch (e) {
    setState(e.message, "error");
  }
}

function update() {
  $("count").textContent = `${shown.size} shown`;
  $("empty").hidden = shown.size > 0;
}

// At most one refresh each two seconds, however fast events arrive: the
// counters cost the tenant's rate limit.
function refreshSoon() {
  if (!counting) counting = setTimeout(() => { counting = null; refreshCounters(); }, 2000);
}

async function refreshCounters() {
  try {
    const stats = await call("GET", "/stats");
    $("pending").textContent = stats.pending;
    $("acked").textContent = stats.acked;
    $("dead").textContent = stats.dead_lettered;
  } catch (e) { /* a backend without stats leaves dashes */ }
  try {
    const usage = await call("GET", "/usage");
    const total = (action) => (usage.totals[action] || { events: 0 }).events;
    $("ingested").textContent = total("ingest");
    $("delivered").textContent = total("deliver");
  } catch (e) { /* a backend without metering leaves dashes */ }
}

async function connect() {
  if (source) source.close();
  shown.clear();
  $("events").replaceChildren();
  update();
  if (!key) return setState("enter an API key");
  setState("connecting…");
  const topic = $("topic").value.trim();
  const filter = topic ? `&topic=${encodeURIComponent(topic)}` : "";
  // The stream first, then the page: an event is in one or the other.
  source = new EventSource(`/inbox/stream?api_key=${encodeURIComponent(key)}${filter}`);
  const opened = source;
  opened.onopen = () => { retry = 1000; setState("live", "live"); };
  opened.onerror = () => {
    setState("reconnecting…", "error");
    // The browser reconnects by itself unless the server refused the
    // stream (a 429, say): then open it again, later each time.
    if (opened.readyState === EventSource.CLOSED && opened === source) {
      setTimeout(() => { if (opened === source) connect(); }, retry);
      retry = Math.min(retry * 2, 30000);
    }
  };
  opened.onmessage = (m) => {
    const event = JSON.parse(m.data);
    if (event.type === "error") return setState(event.message, "error");
    show(event, true);
    refreshSoon();
  };
  try {
    const page = await call("GET", `/inbox?limit=100${filter}`);
    page.events.forEach((event) => show(event, false));
    refreshCounters();
  } catch (e) {
    setState(e.message, "error");
    source.close();
  }
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  localStorage.setItem("zapinbox-key", key);
  connect();
});
$("topic").addEventListener("change", connect);
$("key").value = key;
connect();
