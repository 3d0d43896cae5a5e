// The wallboard (/live): a tile per call in progress, kept up to date from the floor's event stream
// (ws /v1/live/events, docs/protocol.md), sorted by the live risk score. Each tile is built once and then only its
// fields change, so a busy floor does not flicker. Alerts stay highlighted on their tile until someone presses
// 确认 (POST /v1/live/alerts/{id}/ack, audited). A tile opens that call's console read-only.
// For bench/floor.py the page keeps, per tile update, how far behind its call it was drawn: window.__floorLag
// (Date.now() when drawn − the message's sent_at, in ms).
"use strict";

const TIERS = { low: "低风险", medium: "中风险", high: "高风险" };
const CALL_STATES = { live: "通话中", ended: "已结束", record_only: "仅录音" };
const VAGUE = [["omission", "信息遗漏"], ["unclear", "表述不清"], ["evasive", "避而不答"]];
const PROMPT_LABELS = { clear: "回答清晰", omission: "信息遗漏", unclear: "表述不清", evasive: "避而不答", mismatch: "与档案不符" };
// An ended call's tile stays this long (unless an alert on it is still open), so the room sees how it ended.
const KEEP_ENDED_MS = 60_000;
// Reconnect waits: doubling from the first, capped, with jitter so that a room of wallboards does not return at once.
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 15_000;
// How many lag samples the page keeps (a bench run of 50 calls for a few minutes stays well under this).
const LAG_KEPT = 200_000;

const $ = (id) => document.getElementById(id);

const floor = {
  tiles: new Map(),   // call_id -> {data, el, receivedAt, endedAt}
  alerts: new Map(),  // alert_id -> alert
  socket: null,
  retries: 0,
  stopped: false,     // refused for good (no token, no permission): no more reconnects
};
window.__floorLag = [];

function setStatus(kind, text) {
  const box = $("status");
  box.className = `status ${kind}`;
  box.dataset.state = kind;
  box.textContent = text;
}

function consolePath(callId) {
  return `/console?call=${encodeURIComponent(callId)}&watch=1`;
}

// -- one tile --------------------------------------------------------------------------------------------------

// The tile's fixed parts; `drawTile` fills them in.
function buildTile(callId) {
  const el = document.createElement("article");
  el.className = "tile";
  el.dataset.callId = callId;
  el.innerHTML = `
    <div class="tile-head">
      <a class="open" href="${esc(consolePath(callId))}" title="以只读方式打开这通电话的控制台">
        <span class="agent"></span><span class="call-id"></span></a>
      <span class="risk pill"></span>
    </div>
    <div class="tile-meta">
      <span class="call-state"></span><span class="dur"></span><span class="who"></span>
    </div>
    <div class="cover"><div class="progress" aria-hidden="true"><div class="bar"></div></div><span class="cover-text"></span></div>
    <div class="vague">${VAGUE.map(([k, name]) => `<span class="chip ${k}" data-label="${k}">${name} <b>0</b></span>`).join("")}</div>
    <div class="last-prompt"></div>
    <ul class="tile-alerts" aria-live="assertive" aria-relevant="additions" aria-label="待确认提醒"></ul>`;
  // Anywhere on the tile but its buttons opens the call, as its link does (the link is there for the keyboard).
  el.addEventListener("click", (e) => {
    if (e.target.closest("button, a")) return;
    location.href = consolePath(callId);
  });
  return el;
}

// 0..1 (or a percentage) as a whole percentage.
function percent(coverage, items) {
  if (typeof coverage === "number") return Math.round(coverage <= 1 ? coverage * 100 : coverage);
  const done = items.filter((i) => i.state === "clear" || i.state === "vague").length;
  return items.length ? Math.round((100 * done) / items.length) : 0;
}

function shownDuration(entry) {
  const d = entry.data;
  const running = d.state !== "ended" ? (Date.now() - entry.receivedAt) / 1000 : 0;
  return clock((d.duration_s || 0) + running);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function openAlertsOf(data) {
  return (data.alerts || []).map((id) => floor.alerts.get(id)).filter((a) => a && !a.acknowledged_at);
}

function alertItem(a) {
  const li = document.createElement("li");
  li.dataset.alertId = a.alert_id;
  li.dataset.rule = a.rule || "";
  li.innerHTML = `<span class="alert-title">${esc(a.title)}</span><span class="alert-time">${esc(when(a.at).slice(11))}</span>
    <button type="button" class="ack" aria-label="确认提醒：${esc(a.title)}">确认</button>`;
  li.querySelector("button").addEventListener("click", (e) => acknowledge(a.alert_id, e.currentTarget));
  return li;
}

// The tile's fields from `entry.data` (a Tile of GET /v1/live/calls); only what changed is touched.
function drawTile(entry) {
  const { el, data } = entry;
  el.dataset.state = data.state;
  el.dataset.tier = data.risk ? data.risk.tier : "";
  el.dataset.score = data.risk ? String(data.risk.score) : "";
  el.dataset.seq = String(data.seq ?? "");
  setText(el.querySelector(".agent"), data.agent_id ? `坐席 ${data.agent_id}` : "坐席未登记");
  setText(el.querySelector(".call-id"), data.call_id);
  const risk = el.querySelector(".risk");
  risk.className = `risk pill ${data.risk ? data.risk.tier : "none"}`;
  setText(risk, data.risk ? `${TIERS[data.risk.tier] || data.risk.tier} ${Math.round(data.risk.score)}` : "尚未评分");
  const stateBox = el.querySelector(".call-state");
  stateBox.dataset.state = data.state;
  setText(stateBox, CALL_STATES[data.state] || data.state);
  setText(el.querySelector(".dur"), shownDuration(entry));
  const who = [`客户 ${data.customer || "—"}`, `贷款 ${data.loan || "—"}`].join(" · ");
  setText(el.querySelector(".who"), who);

  const items = (data.checklist && data.checklist.items) || [];
  const pct = percent(data.checklist && data.checklist.coverage, items);
  const asked = items.filter((i) => i.state !== "not_asked").length;
  el.querySelector(".cover .bar").style.width = `${pct}%`;
  setText(el.querySelector(".cover-text"), items.length ? `核对清单 ${asked}/${items.length} · ${pct}%` : "核对清单 —");

  const vague = data.vague || {};
  for (const [k] of VAGUE) {
    const chip = el.querySelector(`.chip.${k}`);
    const n = vague[k] || 0;
    chip.dataset.count = String(n);
    setText(chip.querySelector("b"), String(n));
  }

  const last = el.querySelector(".last-prompt");
  const p = data.last_prompt;
  const promptKey = p ? `${p.topic_name}|${p.label}|${p.text}` : "";
  if (last.dataset.key !== promptKey) {
    last.dataset.key = promptKey;
    last.innerHTML = p
      ? `<span class="badge ${esc(p.label)}">${esc(PROMPT_LABELS[p.label] || p.label)}</span><span class="topic">${esc(p.topic_name)}</span><span class="say">${esc(p.text)}</span>`
      : '<span class="none">尚无追问提示</span>';
  }
  drawAlerts(entry);
}

function drawAlerts(entry) {
  const { el, data } = entry;
  const open = openAlertsOf(data);
  const list = el.querySelector(".tile-alerts");
  const wanted = new Set(open.map((a) => a.alert_id));
  for (const li of [...list.children]) if (!wanted.has(li.dataset.alertId)) li.remove();
  const shown = new Set([...list.children].map((li) => li.dataset.alertId));
  for (const a of open) if (!shown.has(a.alert_id)) list.appendChild(alertItem(a));
  el.dataset.alert = open.length ? "true" : "false";
}

// -- the board ---------------------------------------------------------------------------------------------------

// Calls in progress before the ended ones (kept a minute for their last state and open alerts); within each, the
// highest live risk first, calls not yet scored after the scored ones, then the longest running first.
function compareTiles(x, y) {
  const ex = x.data.state === "ended" ? 1 : 0;
  const ey = y.data.state === "ended" ? 1 : 0;
  if (ex !== ey) return ex - ey;
  const rx = x.data.risk ? x.data.risk.score : -1;
  const ry = y.data.risk ? y.data.risk.score : -1;
  if (rx !== ry) return ry - rx;
  return String(x.data.started_at).localeCompare(String(y.data.started_at)) || x.data.call_id.localeCompare(y.data.call_id);
}

// Moves tiles only when the order changed (a moved node keeps its contents: nothing is redrawn), and gives the
// focus back if a move took it from a button.
function arrange() {
  const box = $("tiles");
  const order = [...floor.tiles.values()].sort(compareTiles).map((t) => t.el);
  const now = [...box.children];
  if (order.length !== now.length || order.some((el, i) => el !== now[i])) {
    const focused = document.activeElement;
    for (const el of order) box.appendChild(el);
    if (focused && focused !== document.activeElement && box.contains(focused)) focused.focus({ preventScroll: true });
  }
  $("empty").hidden = floor.tiles.size > 0;
  setText($("call-count"), String([...floor.tiles.values()].filter((t) => t.data.state !== "ended").length));
  setText($("alert-count"), String([...floor.alerts.values()].filter((a) => !a.acknowledged_at).length));
}

function upsertTile(data, force) {
  let entry = floor.tiles.get(data.call_id);
  if (entry && !force && typeof data.seq === "number" && typeof entry.data.seq === "number" && data.seq < entry.data.seq) {
    return false; // an older state than the one shown (it crossed a resync)
  }
  if (!entry) {
    entry = { data, el: buildTile(data.call_id), receivedAt: Date.now(), endedAt: null };
    floor.tiles.set(data.call_id, entry);
  }
  entry.data = data;
  entry.receivedAt = Date.now();
  // When it ended: the tile's own last change (a snapshot may bring a call that ended a while ago), else now.
  const endedAt = data.state === "ended" ? (parseTime(data.updated_at) || new Date()).getTime() : null;
  entry.endedAt = data.state === "ended" ? entry.endedAt || Math.min(endedAt, Date.now()) : null;
  drawTile(entry);
  return true;
}

function endCall(callId, tile) {
  if (tile) upsertTile({ ...tile, state: "ended" }, true);
  const entry = floor.tiles.get(callId);
  if (!entry) return;
  if (!tile) {
    entry.data = { ...entry.data, duration_s: entry.data.duration_s + (Date.now() - entry.receivedAt) / 1000, state: "ended" };
    entry.receivedAt = Date.now();
    drawTile(entry);
  }
  entry.endedAt = entry.endedAt || Date.now();
}

function addAlert(a) {
  const known = floor.alerts.get(a.alert_id);
  floor.alerts.set(a.alert_id, { ...known, ...a });
  const entry = floor.tiles.get(a.call_id);
  if (!entry) return;
  if (!a.acknowledged_at && !(entry.data.alerts || []).includes(a.alert_id)) {
    entry.data = { ...entry.data, alerts: [...(entry.data.alerts || []), a.alert_id] };
  }
  drawAlerts(entry); // the tile's list of alerts is a live region: a screen reader reads a new one out
}

// A snapshot is the whole floor: tiles and alerts not in it are gone.
function resync(calls, alerts) {
  floor.alerts = new Map(alerts.map((a) => [a.alert_id, a]));
  const seen = new Set();
  for (const tile of calls) {
    // The server keeps ended calls longer than the page shows them: one this page already let go stays gone.
    const ended = tile.state === "ended" ? parseTime(tile.updated_at) : null;
    const known = floor.tiles.get(tile.call_id);
    if (ended && Date.now() - ended.getTime() > KEEP_ENDED_MS && !known
        && !(tile.alerts || []).some((id) => floor.alerts.has(id))) continue;
    upsertTile(tile, true);
    seen.add(tile.call_id);
  }
  for (const [id, entry] of floor.tiles) {
    if (!seen.has(id)) {
      entry.el.remove();
      floor.tiles.delete(id);
    }
  }
  for (const entry of floor.tiles.values()) drawAlerts(entry);
  arrange();
}

// An ended call leaves once its time is up and nobody has an alert on it left to acknowledge.
function sweep() {
  const now = Date.now();
  let changed = false;
  for (const [id, entry] of floor.tiles) {
    if (entry.data.state !== "ended") {
      setText(entry.el.querySelector(".dur"), shownDuration(entry));
    } else if (entry.endedAt && now - entry.endedAt > KEEP_ENDED_MS && !openAlertsOf(entry.data).length) {
      entry.el.remove();
      floor.tiles.delete(id);
      changed = true;
    }
  }
  if (changed) arrange();
}

function recordLag(sentAt) {
  if (typeof sentAt !== "number") return;
  const lags = window.__floorLag;
  if (lags.length >= LAG_KEPT) lags.shift();
  lags.push(Date.now() - sentAt);
}

function handle(msg) {
  switch (msg.type) {
    case "snapshot":
      resync(msg.calls || [], msg.alerts || []);
      break;
    case "call_started":
    case "tile":
      if (msg.tile && upsertTile(msg.tile, false)) {
        arrange();
        recordLag(msg.sent_at);
      }
      break;
    case "alert":
    case "alert_ack":
      if (msg.alert) addAlert(msg.alert);
      arrange();
      break;
    case "call_ended":
      endCall(msg.call_id || (msg.tile && msg.tile.call_id), msg.tile);
      arrange();
      break;
    default:
      break; // newer message types: ignore, as the protocol asks of clients
  }
}

// -- acknowledging ---------------------------------------------------------------------------------------------

async function acknowledge(alertId, button) {
  button.disabled = true;
  const res = await HF.api(`/v1/live/alerts/${encodeURIComponent(alertId)}/ack`, { method: "POST" });
  if (res.status === 404) {
    // The call left the floor meanwhile (the server forgets ended calls after a while): nothing left to confirm.
    floor.alerts.delete(alertId);
    for (const entry of floor.tiles.values()) drawAlerts(entry);
    arrange();
    return;
  }
  if (!res.ok) {
    button.disabled = false;
    await refusedBanner(res, "确认提醒");
    return;
  }
  let body = null;
  try {
    body = await res.json();
  } catch (err) {
    body = null;
  }
  const known = floor.alerts.get(alertId) || {};
  const acked = body && body.alert_id ? body : { ...known, acknowledged_at: known.acknowledged_at || new Date().toISOString() };
  addAlert({ ...known, ...acked, alert_id: alertId });
  arrange();
}

// -- the stream ----------------------------------------------------------------------------------------------------

async function openSocket() {
  const res = await HF.api("/v1/tickets", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ scope: "live" }),
  });
  if (res.status === 401 || res.status === 403) {
    floor.stopped = true;
    return null;
  }
  if (!res.ok) throw new Error(`ticket: ${res.status}`);
  const { ticket } = await res.json();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return new WebSocket(`${scheme}://${location.host}/v1/live/events?ticket=${encodeURIComponent(ticket)}`);
}

function reconnectLater() {
  if (floor.stopped) return;
  const wait = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** floor.retries) * (0.75 + Math.random() * 0.5);
  floor.retries += 1;
  setStatus("waiting", `重新连接中（${Math.ceil(wait / 1000)} 秒后）`);
  setTimeout(connect, wait);
}

async function connect() {
  let ws = null;
  try {
    ws = await openSocket();
  } catch (err) {
    console.warn("no ticket for the floor", err);
  }
  if (!ws) {
    if (floor.stopped) setStatus("error", "无法连接");
    else reconnectLater();
    return;
  }
  floor.socket = ws;
  ws.onopen = () => {
    floor.retries = 0;
    setStatus("live", "实时");
  };
  ws.onmessage = (m) => {
    try {
      handle(JSON.parse(m.data));
    } catch (err) {
      console.warn("bad floor message", err, m.data);
    }
  };
  ws.onclose = (e) => {
    floor.socket = null;
    if (e.code === 4401) {
      floor.stopped = true;
      HF.askForToken("需要有效的访问令牌。");
    } else if (e.code === 4403) {
      floor.stopped = true;
      showBanner("当前令牌无权查看实时看板（仅主管和管理员）。");
    }
    if (floor.stopped) setStatus("error", "连接中断");
    else reconnectLater();
  };
}

async function start() {
  const me = await NAV.me;
  if (me) {
    const res = await HF.api("/v1/live/calls");
    if (res.ok) {
      const body = await res.json();
      resync(body.calls || [], body.alerts || []);
      connect();
    } else {
      await refusedBanner(res, "读取进行中的通话");
    }
  }
  setInterval(sweep, 1000);
  document.body.dataset.ready = "true";
}

start();
