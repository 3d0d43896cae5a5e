// Agent console: one live call's events (ws /v1/calls/{id}/events) rendered for the agent.
// No build step: plain browser JavaScript. Event types are documented in docs/protocol.md; unknown types are
// ignored, as the protocol asks of clients.
"use strict";

const LABELS = { clear: "回答清晰", omission: "信息遗漏", unclear: "表述不清", evasive: "避而不答", mismatch: "与档案不符", followup: "待回访" };
const STATES = { not_asked: "○ 未问", asked: "… 待回答", clear: "✓ 清晰" };
const ROLES = { borrower: "借款人", coborrower: "共同还款人", guarantor: "担保人" };

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// `?watch=1` (a supervisor from the wallboard, /live): the call is shown read-only. Whatever the agent acts on in
// this page is marked `agent-only` and hidden in this mode (console.css), so a supervisor's screen never acts for the
// agent.
const READ_ONLY = params.get("watch") === "1";

const state = {
  callId: null,
  finals: new Map(),        // utterance_id -> {channel, text, start_s, end_s}
  assessments: new Map(),   // question_utterance_id|topic -> latest assessment event
  cards: new Map(),         // question_utterance_id|topic -> card element
  prompts: 0,
  audioS: 0,
  ended: false,
  recordOnly: false,        // the call is recorded only (`record_only`): no live transcript or prompts
};

function setStatus(kind, text) {
  const el = $("status");
  el.className = `status ${kind}`;
  el.dataset.state = kind;
  el.textContent = text;
}

// Finals are late (`overload`); taken down on `overload_cleared` or at the end of the call, unless the banner
// says something else by then (an error stays).
const BUSY = "系统繁忙：实时字幕有所延迟，最终转写和提示不受影响。";

function clearBusy() {
  if ($("banner").textContent === BUSY) showBanner("");
}

function labelKey(a) {
  return a.mismatch ? "mismatch" : a.label;
}

// -- transcript ---------------------------------------------------------------------------------------------

function utterance(id, channel, text, startS, partial) {
  let el = document.querySelector(`.utt[data-id="${CSS.escape(id)}"]`);
  if (!text) {
    if (el) el.remove();
    return;
  }
  if (!el) {
    el = document.createElement("div");
    el.dataset.id = id;
    el.dataset.start = startS;
    const box = $("transcript");
    const later = [...box.children].find((c) => parseFloat(c.dataset.start) > startS);
    box.insertBefore(el, later || null);
  }
  el.className = `utt ${channel === "agent" ? "agent" : "customer"}${partial ? " partial" : ""}`;
  el.dataset.channel = channel;
  const tag = el.querySelector(".tag");
  el.innerHTML = `<span class="t">${clock(startS)}${partial ? " · 识别中" : ""}</span>${esc(text)}`;
  if (tag) el.appendChild(tag);
  if (!userScrolledAway(el)) el.scrollIntoView({ block: "nearest" });
}

function userScrolledAway(el) {
  const box = $("transcript");
  return box.scrollHeight - box.scrollTop - box.clientHeight > 120 && el !== box.lastElementChild;
}

function tagAnswer(a) {
  for (const id of a.answer_utterance_ids) {
    const el = document.querySelector(`.utt[data-id="${CSS.escape(id)}"]`);
    if (!el) continue;
    let tag = el.querySelector(".tag");
    if (!tag) {
      tag = document.createElement("span");
      el.appendChild(tag);
    }
    tag.className = `tag ${labelKey(a)}`;
    tag.textContent = `${a.topic_name} · ${LABELS[labelKey(a)]}`;
  }
  const silenceId = `silence-${a.question_utterance_id}`;
  if (!a.answer_utterance_id && a.label !== "clear") {
    if (!document.querySelector(`.utt[data-id="${CSS.escape(silenceId)}"]`)) {
      utterance(silenceId, "customer", `（客户沉默，未回答${a.topic_name}）`, a.answer_end_s, false);
      document.querySelector(`.utt[data-id="${CSS.escape(silenceId)}"]`).classList.add("silence");
    }
  }
}

// -- prompt cards -------------------------------------------------------------------------------------------

function answerHtml(a) {
  const text = a.answer_utterance_ids.map((id) => (state.finals.get(id) || {}).text || "").join("，");
  if (!text) return "客户未作回答";
  const marks = a.evidence.filter((e) => ["cue", "slot", "counter_question"].includes(e.kind) && e.text && text.includes(e.text))
    .map((e) => e.text).sort((x, y) => y.length - x.length);
  let html = esc(text);
  const done = [];
  for (const m of marks) {
    if (done.some((longer) => longer.includes(m))) continue; // already inside a longer highlight
    done.push(m);
    const safe = esc(m);
    html = html.split(safe).join(`<mark>${safe}</mark>`);
  }
  return `客户：${html}`;
}

// Why the verdict: the missing fact, or for a learned decision its probability and the nearest training answers.
function whyHtml(a) {
  if (!a) return "";
  const parts = [];
  const missing = a.evidence.find((e) => e.kind === "missing_slot" || e.kind === "no_evidence");
  if (missing) parts.push(evidenceHtml(missing));
  const learned = a.evidence.find((e) => e.kind === "learned");
  if (learned) {
    const examples = a.evidence.filter((e) => e.kind === "example").map((e) => `“${esc(e.text)}”`);
    parts.push(`${evidenceHtml(learned)}${examples.length ? `，相近说法：${examples.join("、")}` : ""}`);
  }
  return parts.length ? `<div class="why">${parts.join("；")}</div>` : "";
}

function promptCard(p) {
  const key = `${p.question_utterance_id}|${p.topic}`;
  const a = state.assessments.get(key);
  const kind = p.mismatch ? "mismatch" : p.label;
  let card = state.cards.get(key);
  if (!card) {
    card = document.createElement("article");
    state.cards.set(key, card);
    const box = $("prompts");
    box.querySelector(".empty")?.remove();
    box.prepend(card);
  }
  card.className = "card";
  card.dataset.topic = p.topic;
  card.dataset.label = p.label;
  card.dataset.mismatch = String(p.mismatch);
  card.innerHTML = `
    <div class="head"><span><span class="badge ${kind}">${LABELS[kind]}</span><span class="topic">${esc(p.topic_name)}</span></span>
      <span class="time">${clock(p.answer_end_s)}</span></div>
    <div class="say">${esc(p.text)}</div>
    <div class="answer">${a ? answerHtml(a) : ""}</div>${whyHtml(a)}`;
  feedbackBar(card, p);
  state.prompts += 1;
  $("prompt-count").textContent = state.prompts;
}

function resolveCard(a) {
  const card = state.cards.get(`${a.question_utterance_id}|${a.topic}`);
  if (!card) return;
  if (a.label === "clear" && !a.mismatch) {
    card.classList.add("resolved");
    if (!card.querySelector(".done")) card.insertAdjacentHTML("beforeend", '<div class="done">✓ 客户已补充清楚</div>');
  }
  const answer = card.querySelector(".answer");
  if (answer) answer.innerHTML = answerHtml(a);
  card.querySelector(".why")?.remove();
  if (answer) answer.insertAdjacentHTML("afterend", whyHtml(a));
}

// -- the agent's verdict on a prompt (issue #31) -------------------------------------------------------------
// 已追问 (asked again) or 提示有误 (the answer was in fact clear, or the topic was wrong; an optional note) on each
// card: POST /v1/calls/{id}/prompts/feedback, which looks the prompt up itself; the call's other screens hear it
// as a `prompt_feedback` event and mark the card too (markCard).

const VERDICTS = { asked_again: "已追问", disputed: "提示有误" };
const REASONS = { clear: "回答其实清楚", wrong_topic: "话题判断错误" };
const feedbackGiven = new Map(); // question_utterance_id|topic -> {verdict, reason}: kept when a card is redrawn

function feedbackBar(card, p) {
  const key = `${p.question_utterance_id}|${p.topic}`;
  const bar = document.createElement("div");
  bar.className = "feedback";
  bar.innerHTML = `<button type="button" class="fb-asked">已追问</button>
    <button type="button" class="fb-dispute">提示有误</button>
    <form class="fb-form" hidden>
      <label><input type="radio" name="reason" value="clear" checked> ${REASONS.clear}</label>
      <label><input type="radio" name="reason" value="wrong_topic"> ${REASONS.wrong_topic}</label>
      <input name="note" maxlength="500" placeholder="备注（可选）" autocomplete="off">
      <button type="submit">提交</button>
    </form>
    <span class="fb-state" role="status"></span>`;
  card.appendChild(bar);
  const form = bar.querySelector(".fb-form");
  bar.querySelector(".fb-asked").onclick = () => sendFeedback(card, p, { verdict: "asked_again" });
  bar.querySelector(".fb-dispute").onclick = () => { form.hidden = !form.hidden; };
  form.onsubmit = (e) => {
    e.preventDefault();
    const note = form.elements.note.value.trim();
    sendFeedback(card, p, { verdict: "disputed", reason: form.elements.reason.value, note: note || null });
  };
  if (feedbackGiven.has(key)) showVerdict(card, feedbackGiven.get(key));
}

async function sendFeedback(card, p, verdict) {
  const res = await HF.api(`/v1/calls/${encodeURIComponent(state.callId)}/prompts/feedback`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ question_utterance_id: p.question_utterance_id, topic: p.topic, ...verdict }),
  });
  if (!res.ok) {
    const shown = card.querySelector(".fb-state");
    const body = await res.json().catch(() => ({}));
    shown.textContent = res.status === 409 ? "该提示已由主管复核，不能再更改" : `提交失败：${body.detail || res.status}`;
    shown.dataset.error = "true";
    return;
  }
  markCard({ question_utterance_id: p.question_utterance_id, topic: p.topic, verdict: verdict.verdict, reason: verdict.reason || null });
}

function markCard(ev) {
  const key = `${ev.question_utterance_id}|${ev.topic}`;
  feedbackGiven.set(key, ev);
  const card = state.cards.get(key);
  if (card) showVerdict(card, ev);
}

function showVerdict(card, ev) {
  card.dataset.feedback = ev.verdict;
  const bar = card.querySelector(".feedback");
  if (!bar) return;
  bar.querySelector(".fb-form").hidden = true;
  const shown = bar.querySelector(".fb-state");
  shown.dataset.error = "false";
  shown.textContent = `✓ ${VERDICTS[ev.verdict]}${ev.reason ? `：${REASONS[ev.reason]}` : ""}`;
}

// -- side panels --------------------------------------------------------------------------------------------

function checklist(ev) {
  const list = $("checklist");
  list.innerHTML = "";
  for (const item of ev.items) {
    const li = document.createElement("li");
    li.dataset.topic = item.topic;
    li.dataset.state = item.state;
    if (item.label) li.dataset.label = item.label;
    const vague = item.mismatch ? LABELS.mismatch : LABELS[item.label] || "模糊";
    const text = item.state === "vague" ? `! ${vague}` : STATES[item.state];
    li.innerHTML = `<span>${esc(item.name)}</span><span class="state">${esc(text)}</span>`;
    list.appendChild(li);
  }
  const done = ev.items.filter((i) => i.state === "clear" || i.state === "vague").length;
  $("coverage").textContent = `${done}/${ev.items.length}`;
  $("progress-bar").style.width = `${ev.items.length ? (100 * done) / ev.items.length : 0}%`;
}

// What the customer's earlier calls left unresolved (the ready event's carried_over), above the checklist: a
// reminder with a link to the call that left it, kept apart from the checklist so its coverage is this call's own.
function carriedOver(items) {
  const list = $("carried-list");
  list.innerHTML = "";
  for (const item of items) {
    const li = document.createElement("li");
    li.dataset.topic = item.topic;
    li.dataset.label = item.label;
    const day = whenDay(item.at);
    // A new tab: the agent is on a live call and keeps this screen.
    const from = item.call_id
      ? `<a class="from" href="${reportPath(item.call_id)}" target="_blank" rel="noopener" title="通话 ${esc(item.call_id)}">${day}通话报告</a>`
      : "";
    li.innerHTML = `<span class="badge ${esc(item.label)}">${esc(LABELS[item.label] || item.label)}</span>
      <span class="name">${esc(item.name || item.topic)}</span>${from}`;
    list.appendChild(li);
  }
  $("carried-count").textContent = items.length;
  $("carried").hidden = !items.length;
}

function loanPanel(loan) {
  const rows = [];
  if (!loan) {
    $("loan").innerHTML = "<dt>—</dt><dd>本通话未提供贷款档案</dd>";
    return;
  }
  const add = (k, v) => v !== undefined && v !== null && rows.push(`<dt>${k}</dt><dd>${esc(v)}</dd>`);
  add("客户", loan.borrower);
  add("角色", ROLES[loan.role] || loan.role);
  add("贷款金额", loan.amount_yuan != null ? `${loan.amount_yuan / 10000} 万元` : null);
  add("期限", loan.term_years != null ? `${loan.term_years} 年` : null);
  add("还款日", loan.repay_day != null ? `每月 ${loan.repay_day} 日` : null);
  add("月供", loan.monthly_yuan != null ? `${loan.monthly_yuan} 元` : null);
  add("年利率", loan.rate_pct != null ? `${loan.rate_pct}%` : null);
  $("loan").innerHTML = rows.join("");
}

function summary(ev) {
  $("summary-wait").hidden = true;
  const followed = ev.prompts.filter((p) => p.followed_up).length;
  $("summary").innerHTML = `
    <dt>清单覆盖</dt><dd>${Math.round(ev.coverage * 100)}%</dd>
    <dt>已评估回答</dt><dd>${ev.answers}</dd>
    <dt>模糊回答</dt><dd>${ev.vague_answers}</dd>
    <dt>与档案不符</dt><dd>${ev.mismatches}</dd>
    <dt>提示 / 已追问</dt><dd>${ev.prompts.length} / ${followed}</dd>`;
}

// -- the end of the call ------------------------------------------------------------------------------------

// `record_only`: every server was decoding its capacity of live calls, so this call gets no live transcript,
// verdicts or prompts; it is scored as a recording after it ends.
const RECORD_ONLY = "坐席提示暂不可用：本通话仅录音，结束后评分。";
const RECORD_ONLY_ENDED = "本通话仅录音：系统正在评分，完成后可在通话列表中查看报告。";
const NOT_STORED = "本通话的报告暂未保存：系统稍后会根据已保存的转写补存，并标为未完整结束。";
const RESUMABLE = "服务器正在重启，这通电话尚未结束：话务系统重新接入后通话将继续，请稍后刷新本页。";

// `end`: stored (`report_url`: the link to its report page), or kept open for a reconnect (`resumable`, the
// server is stopping), or neither (a server that keeps no calls, or storing failed: an error said so).
function ended(ev) {
  if (ev.resumable) {
    setStatus("paused", "等待重连");
    showBanner(RESUMABLE);
    return;
  }
  setStatus("ended", "通话结束");
  if (state.recordOnly) showBanner(RECORD_ONLY_ENDED);
  if (ev.report_url) {
    const link = $("report-link");
    link.href = reportPath(ev.call_id);
    link.hidden = false;
  }
}

// -- events -------------------------------------------------------------------------------------------------

function handle(ev) {
  if (ev.end_s) state.audioS = Math.max(state.audioS, ev.end_s);
  $("clock").textContent = clock(state.audioS);
  switch (ev.type) {
    case "ready":
      setStatus("live", "通话中");
      loanPanel(ev.loan_file);
      carriedOver(ev.carried_over || []);
      break;
    case "record_only":
      state.recordOnly = true;
      setStatus("recording", "仅录音");
      showBanner(RECORD_ONLY, ev.message);
      break;
    case "partial":
      if (!state.finals.has(ev.utterance_id)) utterance(ev.utterance_id, ev.channel, ev.text, ev.start_s, true);
      break;
    case "final":
      state.finals.set(ev.utterance_id, ev);
      utterance(ev.utterance_id, ev.channel, ev.text, ev.start_s, false);
      break;
    case "assessment":
      state.assessments.set(`${ev.question_utterance_id}|${ev.topic}`, ev);
      tagAnswer(ev);
      resolveCard(ev);
      break;
    case "prompt":
      promptCard(ev);
      break;
    case "prompt_feedback":
      markCard(ev);
      break;
    case "checklist":
      checklist(ev);
      break;
    case "summary":
      summary(ev);
      checklist({ items: ev.checklist });
      break;
    case "overload":
      showBanner(BUSY);
      break;
    case "overload_cleared":
      clearBusy();
      break;
    case "error":
      if (ev.code === "assessment_failed") showBanner("答复评估暂不可用：本通话仅显示转写。", ev.message);
      else if (ev.code === "not_stored") showBanner(NOT_STORED, ev.message);
      else showBanner("通话处理出错，转写和提示可能不完整。", `${ev.code}: ${ev.message}`);
      break;
    case "supervisor_note":
      supervisorNote(ev);
      break;
    case "end":
      clearBusy();
      state.ended = true;
      ended(ev);
      break;
    default:
      break; // newer event types: ignore
  }
}

async function watch(callId) {
  state.callId = callId;
  if (READ_ONLY) {
    document.body.dataset.mode = "watch";
    $("watch-mode").hidden = false;
  }
  $("call-id").textContent = callId;
  $("start").hidden = true;
  $("console").hidden = false;
  offerListening(callId);
  setStatus("waiting", "等待通话");
  const ws = await HF.socket(`/v1/calls/${encodeURIComponent(callId)}/events`, callId);
  if (!ws) {
    setStatus("error", "无法连接");
    return;
  }
  ws.onmessage = (msg) => {
    try {
      handle(JSON.parse(msg.data));
    } catch (err) {
      console.error("bad event", err, msg.data);
    }
  };
  ws.onclose = (e) => {
    if (!state.ended) {
      setStatus("error", "连接中断");
      if (e.code === 4401) HF.askForToken("需要有效的访问令牌。");
      else if (e.code === 4403) showBanner("这通电话没有分配给您，无法查看。");
      else if (e.code === 4404) showBanner("这通电话一直没有开始，请确认通话编号后刷新页面。");
      else showBanner(e.code === 4408 ? "连接过慢被服务器断开，请刷新页面。" : "与服务器的连接已断开，请刷新页面。");
    }
  };
}

async function startDemo(name) {
  const speed = parseFloat(params.get("speed") || "1");
  const res = await HF.api("/v1/demo/calls", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: name && name !== "1" ? name : null, speed }),
  });
  if (!res.ok) {
    $("start").hidden = false;
    await refusedBanner(res, "开始演示通话");
    return;
  }
  const started = await res.json();
  history.replaceState(null, "", `?call=${encodeURIComponent(started.call_id)}`);
  await watch(started.call_id);
}

async function showStart() {
  $("start").hidden = false;
  $("watch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("watch-id").value.trim();
    if (id) location.search = `?call=${encodeURIComponent(id)}`;
  });
  try {
    const res = await HF.api("/v1/demo/calls");
    if (!res.ok) throw new Error(String(res.status));
    const demos = await res.json();
    for (const [i, d] of demos.entries()) {
      const b = document.createElement("button");
      b.textContent = `演示通话 ${i + 1}（${Math.round(d.duration_s)} 秒）`;
      b.title = d.name;
      b.onclick = () => startDemo(d.name);
      $("demo-list").appendChild(b);
    }
  } catch (err) {
    $("demo-list").textContent = "演示通话不可用";
  }
  document.body.dataset.ready = "true";
}

// -- the supervisor's side: notes to the agent (主管提示) and listening in (监听) ---------------------------------

// A note from a supervisor: a card above the call that stays until the agent dismisses it. A screen opened later
// gets the call's notes again with its history; each is shown once.
function supervisorNote(ev) {
  if (document.querySelector(`.note-card[data-note-id="${ev.note_id}"]`)) return;
  const card = document.createElement("div");
  card.className = "note-card";
  card.dataset.noteId = ev.note_id;
  card.setAttribute("role", "alert");
  const at = when(ev.at).split(" ").pop(); // the time of day, in the bank's zone as every time on the page
  card.innerHTML = `<div class="note-head"><b>主管提示</b><span class="note-meta">${esc(ev.author)} ${esc(at)}</span>
    <button type="button" class="note-dismiss" title="关闭">知道了</button></div><div class="note-text"></div>`;
  card.querySelector(".note-text").textContent = ev.text;
  card.querySelector(".note-dismiss").onclick = () => card.remove();
  $("notes").prepend(card);
}

// Listening in: the call's audio (PCM16 frames on /v1/calls/{id}/listen) played with WebAudio about
// LISTEN_DELAY_S behind, so that frames arriving unevenly still play without gaps. Supervisors only, and only
// where the server allows it (GET /v1/listen-in).
const LISTEN_DELAY_S = 0.8;
const LISTEN_MAX_AHEAD_S = 2.5; // scheduled further ahead than this: the listener fell behind, start again

const listening = { ws: null, ctx: null, format: null, playAt: 0 };

async function offerListening(callId) {
  const me = await NAV.me;
  if (!me || !["supervisor", "admin"].includes(me.role)) return;
  const res = await HF.api("/v1/listen-in");
  if (!res.ok || !(await res.json()).enabled) return;
  const button = $("listen-btn");
  button.hidden = false;
  button.onclick = () => (listening.ws ? stopListening() : startListening(callId));
}

async function startListening(callId) {
  const button = $("listen-btn");
  listening.ctx = new AudioContext();
  listening.playAt = 0;
  const ws = await HF.socket(`/v1/calls/${encodeURIComponent(callId)}/listen`, callId);
  if (!ws) return stopListening();
  ws.binaryType = "arraybuffer";
  listening.ws = ws;
  button.textContent = "停止监听";
  button.dataset.state = "on";
  ws.onmessage = (msg) => {
    if (typeof msg.data !== "string") return playFrame(msg.data);
    const ev = JSON.parse(msg.data);
    if (ev.type === "listen_format") listening.format = ev;
    else if (ev.type === "error") showBanner("无法监听这通电话。", `${ev.code}: ${ev.message}`);
  };
  ws.onclose = () => stopListening();
}

function playFrame(data) {
  const fmt = listening.format, ctx = listening.ctx;
  if (!fmt || !ctx) return;
  const pcm = new Int16Array(data);
  const frames = pcm.length / fmt.channels;
  if (!frames) return;
  const buffer = ctx.createBuffer(fmt.channels, frames, fmt.sample_rate_hz);
  for (let c = 0; c < fmt.channels; c++) {
    const out = buffer.getChannelData(c);
    for (let i = 0; i < frames; i++) out[i] = pcm[i * fmt.channels + c] / 32768;
  }
  const now = ctx.currentTime;
  if (listening.playAt < now || listening.playAt > now + LISTEN_MAX_AHEAD_S) listening.playAt = now + LISTEN_DELAY_S;
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  source.start(listening.playAt);
  listening.playAt += buffer.duration;
}

function stopListening() {
  const button = $("listen-btn");
  const { ws, ctx } = listening;
  Object.assign(listening, { ws: null, ctx: null, format: null, playAt: 0 });
  if (ws && ws.readyState <= 1) ws.close(1000);
  if (ctx) ctx.close();
  button.textContent = "监听";
  button.dataset.state = "off";
}

NAV.me.then(() => {
  if (params.get("call")) watch(params.get("call"));
  else if (params.get("demo")) startDemo(params.get("demo"));
  else showStart();
});
