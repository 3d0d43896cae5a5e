// Report page: GET /v1/calls/{id}/report rendered in the browser (SVG drawn here, no chart library).
"use strict";

const LABELS = { clear: "回答清晰", omission: "信息遗漏", unclear: "表述不清", evasive: "避而不答", mismatch: "与档案不符" };
const COLORS = { clear: "#1f9d55", omission: "#7b4fd6", unclear: "#d68a00", evasive: "#d23c3c", mismatch: "#c2185b" };
const TIERS = { low: "低风险", medium: "中风险", high: "高风险" };
const $ = (id) => document.getElementById(id);

// -- audio spans --------------------------------------------------------------------------------------------
let stopAt = null;
function play(span) {
  const player = $("player");
  if (!span || !player.src) return;
  player.currentTime = Math.max(0, span[0] - 0.3);
  stopAt = span[1] + 0.3;
  player.play().catch(() => {});
}
function playButton(span) {
  if (!span || !$("player").src) return "";
  return `<button class="play" data-span="${span[0]},${span[1]}">▶ ${clock(span[0])}</button>`;
}
document.addEventListener("click", (e) => {
  const b = e.target.closest("[data-span]");
  if (b) play(b.dataset.span.split(",").map(Number));
});

// -- parts --------------------------------------------------------------------------------------------------
function gauge(score, tier) {
  const svg = $("gauge");
  const arc = (from, to, color, width) => {
    const a0 = Math.PI * (1 - from / 100), a1 = Math.PI * (1 - to / 100);
    const p = (a) => `${100 + 80 * Math.cos(a)} ${100 - 80 * Math.sin(a)}`;
    el("path", { d: `M ${p(a0)} A 80 80 0 0 1 ${p(a1)}`, stroke: color, "stroke-width": width, fill: "none" }, svg);
  };
  arc(0, 100, "#e2e6ec", 16);
  if (score > 0) arc(0, Math.min(score, 100), { low: COLORS.clear, medium: COLORS.unclear, high: COLORS.evasive }[tier], 16);
  el("text", { x: 100, y: 92, "text-anchor": "middle", "font-size": 34, "font-weight": "bold", id: "score" }, svg).textContent = score;
  el("text", { x: 100, y: 114, "text-anchor": "middle", "font-size": 14, id: "tier", "data-tier": tier }, svg).textContent = TIERS[tier];
}

function contributions(list) {
  const ul = $("contributions");
  if (!list.length) ul.innerHTML = "<li>无扣分项</li>";
  const max = Math.max(...list.map((c) => c.points), 1);
  for (const c of list) {
    const li = document.createElement("li");
    li.dataset.label = c.label || "";
    if (c.span) li.dataset.span = c.span.join(",");
    // The words that decided it, as a tooltip; the assessor's technical notes (p=0.83, slot names) are not for it.
    if (!/[A-Za-z]/.test(c.evidence || "")) li.title = c.evidence;
    li.innerHTML = `<span>${esc(c.reason)}</span><span class="barbox"><span class="bar" style="display:block;width:${(100 * c.points) / max}%"></span></span><b>+${Math.round(c.points)}</b>`;
    ul.appendChild(li);
  }
}

function actions(list, agent, topics) {
  const ul = $("actions");
  if (!list.length) ul.innerHTML = "<li>无需额外跟进</li>";
  for (const a of list) {
    const li = document.createElement("li");
    li.dataset.action = a.id;
    li.innerHTML = `<div>${esc(a.text)}</div><div class="why">依据：${a.evidence.map(esc).join("；")} ${a.spans.map(playButton).join(" ")}</div>`;
    ul.appendChild(li);
  }
  const names = Object.fromEntries(topics.map((t) => [t.topic, t.name]));
  const followed = agent.prompts.filter((p) => p.followed_up).length;
  $("agent").innerHTML = `
    <dt>清单覆盖</dt><dd>${agent.asked}/${agent.total}（${Math.round(agent.coverage * 100)}%）</dd>
    <dt>未询问</dt><dd>${agent.not_asked.map((t) => esc(names[t] || t)).join("、") || "无"}</dd>
    <dt>提示后追问</dt><dd>${followed}/${agent.prompts.length}</dd>`;
}

function timeline(report) {
  const svg = $("timeline");
  const width = svg.clientWidth || 1000, left = 60, right = 10, lane = { agent: 30, customer: 80 };
  const x = (t) => left + ((width - left - right) * t) / Math.max(report.duration_s, 1);
  svg.setAttribute("viewBox", `0 0 ${width} 150`);
  for (const [name, y] of Object.entries(lane)) {
    el("text", { x: 4, y: y + 14, "font-size": 13, fill: "#7a8594" }, svg).textContent = name === "agent" ? "坐席" : "客户";
    el("line", { x1: left, x2: width - right, y1: y + 10, y2: y + 10, stroke: "#e2e6ec" }, svg);
  }
  for (const u of report.utterances) {
    const r = el("rect", { x: x(u.start_s), y: lane[u.channel] ?? 80, width: Math.max(2, x(u.end_s) - x(u.start_s)), height: 20, rx: 3,
      fill: u.channel === "agent" ? "#9dbbe8" : "#c7ccd3", class: "utt-bar", "data-span": `${u.start_s},${u.end_s}` }, svg);
    el("title", {}, r).textContent = `${clock(u.start_s)} ${u.text}`;
  }
  for (const t of report.answers || []) {
    if (!t.answer_span || (t.label === "clear" && !t.mismatch)) continue;
    const kind = t.mismatch ? "mismatch" : t.label;
    const cx = x(t.answer_span[0]);
    const g = el("g", { class: "flag", "data-topic": t.topic, "data-label": kind, "data-span": t.answer_span.join(",") }, svg);
    el("line", { x1: cx, x2: cx, y1: 108, y2: 126, stroke: COLORS[kind], "stroke-width": 2 }, g);
    el("circle", { cx, cy: 132, r: 7, fill: COLORS[kind] }, g);
    el("title", {}, g).textContent = `${t.name}：${LABELS[kind]}`;
  }
  for (let t = 0; t <= report.duration_s; t += 10) {
    const anchor = x(t) > width - right - 20 ? "end" : "middle"; // the last tick stays inside the drawing
    el("text", { x: x(t), y: 22, "font-size": 11, fill: "#7a8594", "text-anchor": anchor }, svg).textContent = clock(t);
  }
}

// Cue words, missing facts, silence, the contradicted figure; for a learned decision its probability and the
// nearest training answers. The assessor's own notes stay under 详情 for whoever checks a verdict.
function evidenceCell(list, mismatch) {
  const shown = list.filter((e) => e.kind !== "slot");
  const words = shown.map((e) => evidenceHtml(e, mismatch)).filter(Boolean).join("；");
  if (!shown.length) return words;
  const raw = shown.map((e) => `${e.kind}${e.label ? `/${e.label}` : ""}: ${e.text}`).join("\n");
  return `${words}<details class="detail"><summary>详情</summary><code>${esc(raw)}</code></details>`;
}

// Answers to agent questions outside the call script (topic `other`): shown, not on the checklist.
function otherAnswers(answers) {
  const body = $("checklist").querySelector("tbody");
  for (const a of answers.filter((x) => x.topic === "other")) {
    const tr = document.createElement("tr");
    tr.dataset.topic = "other";
    tr.dataset.label = a.label;
    const verdict = `<span class="pill" style="background:${COLORS[a.label]}">${LABELS[a.label]}</span>`;
    tr.innerHTML = `<td>${esc(a.name)}：${esc(a.question_text || "")}</td><td>是</td><td>${verdict}</td>
      <td>${esc(a.answer_text || "（沉默）")}</td><td></td><td></td><td>${playButton(a.answer_span)}</td>`;
    body.appendChild(tr);
  }
}

function checklist(topics) {
  const body = $("checklist").querySelector("tbody");
  for (const t of topics) {
    const tr = document.createElement("tr");
    tr.dataset.topic = t.topic;
    tr.dataset.label = t.label || "";
    const kind = t.mismatch ? "mismatch" : t.label;
    const verdict = kind ? `<span class="pill" style="background:${COLORS[kind]}">${LABELS[kind]}</span>` : "—";
    const values = t.slots.filter((s) => s.value !== null).map((s) => `${esc(s.text)}${s.approximate ? "（约）" : ""}`).join("、");
    const mismatch = t.mismatch ? `<br>档案：${figure(t.mismatch.field, t.mismatch.on_file)}` : "";
    const evidence = evidenceCell(t.evidence, t.mismatch);
    tr.innerHTML = `<td>${esc(t.name)}</td><td>${t.asked ? `是${t.times_asked > 1 ? `（${t.times_asked}次）` : ""}` : "否"}</td>
      <td>${verdict}</td><td>${esc(t.answer_text || (t.label ? "（沉默）" : ""))}</td><td>${values}${mismatch}</td>
      <td>${evidence}</td><td>${playButton(t.answer_span)}</td>`;
    body.appendChild(tr);
  }
}

// Each prompt the agent was shown, with the agent's verdict on it (已追问 / 提示有误) and its review (issue #31).
const VERDICTS = { asked_again: "已追问", disputed: "提示有误" };
const REASONS = { clear: "回答其实清楚", wrong_topic: "话题判断错误" };
const REVIEWS = { open: "待复核", upheld: "已采纳（结论已更正）", overturned: "维持原评估" };

function feedbackCell(f) {
  if (!f) return "—";
  const note = f.note ? `<div class="why">备注：${esc(f.note)}</div>` : "";
  return `${VERDICTS[f.verdict] || esc(f.verdict)}${f.reason ? `：${REASONS[f.reason] || esc(f.reason)}` : ""}${note}`;
}

function reviewCell(f, names) {
  if (!f || f.verdict !== "disputed") return "";
  const label = f.reviewer_label ? `，复核结论：${LABELS[f.reviewer_label] || esc(f.reviewer_label)}` : "";
  const topic = f.reviewer_topic ? `（${esc(names[f.reviewer_topic] || f.reviewer_topic)}）` : "";
  return `${REVIEWS[f.review_status] || esc(f.review_status)}${label}${topic}`;
}

function promptsPanel(report) {
  const body = $("prompts").querySelector("tbody");
  const names = Object.fromEntries(report.topics.map((t) => [t.topic, t.name]));
  const given = new Map((report.prompt_feedback || []).map((f) => [`${f.question_utterance_id}|${f.topic}`, f]));
  if (!report.agent.prompts.length) body.innerHTML = '<tr class="empty-row"><td colspan="7">本通话没有追问提示</td></tr>';
  for (const p of report.agent.prompts) {
    const f = given.get(`${p.question_utterance_id}|${p.topic}`);
    const tr = document.createElement("tr");
    tr.dataset.topic = p.topic;
    tr.dataset.feedback = f ? f.verdict : "";
    tr.dataset.review = f ? f.review_status : "";
    tr.innerHTML = `<td>${clock(p.at_s)}</td><td>${esc(names[p.topic] || p.topic)}</td>
      <td><span class="pill" style="background:${COLORS[p.label]}">${LABELS[p.label]}</span></td><td>${esc(p.text)}</td>
      <td>${p.followed_up ? "是" : "否"}</td><td class="feedback">${feedbackCell(f)}</td><td class="review">${reviewCell(f, names)}</td>`;
    body.appendChild(tr);
  }
}

// A verdict a supervisor corrected on review says so in the checklist.
function markCorrected(feedback) {
  for (const f of feedback.filter((x) => x.review_status === "upheld")) {
    const cell = document.querySelector(`#checklist tr[data-topic="${CSS.escape(f.reviewer_topic || f.topic)}"] td:nth-child(3)`);
    if (cell && !cell.querySelector(".corrected")) cell.insertAdjacentHTML("beforeend", '<div class="hint corrected">主管复核更正</div>');
  }
}

function transcript(utterances) {
  const box = $("transcript");
  for (const u of utterances) {
    const div = document.createElement("div");
    div.className = `utt ${u.channel === "agent" ? "agent" : "customer"}`;
    div.dataset.span = `${u.start_s},${u.end_s}`;
    div.innerHTML = `<span class="t">${clock(u.start_s)}</span>${esc(u.text)}`;
    box.appendChild(div);
  }
}

// Supervisors' notes to the agent during the call (主管提示), oldest first; the panel only when there are any.
function supervisorNotes(notes) {
  const ul = $("notes");
  for (const n of notes) {
    const li = document.createElement("li");
    li.dataset.noteId = n.note_id;
    li.innerHTML = `<span class="note-meta">${esc(when(n.at))} · ${esc(n.author)}</span> <span class="note-text"></span>`;
    li.querySelector(".note-text").textContent = n.text;
    ul.appendChild(li);
  }
  $("notes-panel").hidden = !notes.length;
}

// Where the call came from, in the header; a demo or a call that did not end cleanly also said in a sentence
// above the report, so that nobody reads a demo as a customer's call or a cut-off call as the whole call.
function callNote(report) {
  $("source").innerHTML = sourceHtml(report);
  const notes = [];
  if (report.source === "demo") notes.push(`${DEMO_WHY}。`);
  if (report.complete === false) notes.push(`${INCOMPLETE}：${INCOMPLETE_WHY}。`);
  $("call-note").textContent = notes.join(" ");
  $("call-note").dataset.demo = String(report.source === "demo");
  $("call-note").hidden = !notes.length;
}

// Earlier reports of the call (admins): read when the panel is opened, since every reading is audited.
const VERSION_REASONS = { replace: "管理员重新上传替换", rescore: "评估规则更新后重新评分", redecode: "通话后重新识别",
  review: "主管复核更正" };

function versionsPanel(callId, me) {
  const panel = $("versions-panel");
  if (!me || me.role !== "admin") return;
  panel.hidden = false;
  let loaded = false;
  panel.addEventListener("toggle", async () => {
    if (!panel.open || loaded) return;
    loaded = true;
    const res = await HF.api(`/v1/calls/${encodeURIComponent(callId)}/versions`);
    if (!res.ok) {
      loaded = false;
      await refusedBanner(res, "读取历史版本");
      return;
    }
    const { versions } = await res.json();
    $("versions").querySelector("tbody").innerHTML = versions.map((v) => `<tr data-version="${v.version}" data-reason="${esc(v.reason)}">
      <td>${v.version}</td><td>${esc(when(v.replaced_at))}</td><td>${esc(VERSION_REASONS[v.reason] || v.reason)}</td>
      <td>${Math.round(v.report.risk_score)}（${esc(TIERS[v.report.tier] || v.report.tier)}）</td>
      <td><code>${esc(v.assessor_version || "—")}</code></td></tr>`).join("");
    $("versions").hidden = !versions.length;
    $("versions-none").hidden = versions.length > 0;
  });
}

async function main() {
  const callId = decodeURIComponent(location.pathname.split("/").pop());
  $("call-id").textContent = callId;
  const me = await NAV.me;
  const res = await HF.api(`/v1/calls/${encodeURIComponent(callId)}/report`);
  if (!res.ok) {
    await refusedBanner(res, `打开通话 ${callId} 的报告`);
    return;
  }
  const report = await res.json();
  document.title = `回访报告 ${callId}`;
  $("meta").textContent = `${when(report.created_at)} · 坐席 ${report.agent_id || "—"} · 时长 ${clock(report.duration_s)}`;
  callNote(report);
  $("tech").textContent = `call_id: ${callId}\nassessor_version: ${report.assessor_version || "—"}\ncreated_at: ${report.created_at || "—"} (UTC)`;
  const audio = report.audio && report.audio.length ? await HF.audioUrl(report.audio[0].url) : null;
  if (audio) $("player").src = audio;
  else $("player").hidden = true;
  $("player").addEventListener("timeupdate", () => {
    if (stopAt !== null && $("player").currentTime >= stopAt) { $("player").pause(); stopAt = null; }
  });
  $("report").hidden = false;
  gauge(report.risk_score, report.tier);
  contributions(report.contributions);
  actions(report.actions, report.agent, report.topics);
  timeline(report);
  checklist(report.topics);
  otherAnswers(report.answers || []);
  promptsPanel(report);
  markCorrected(report.prompt_feedback || []);
  transcript(report.utterances);
  supervisorNotes(report.notes || []);
  versionsPanel(callId, me);
  // #t=START-END (the coaching pages' links to a moment): cue the player there and play it if the browser lets us.
  const cue = (new URLSearchParams(location.hash.slice(1)).get("t") || "").split("-").map(Number);
  if (cue.length === 2 && cue.every(Number.isFinite)) {
    document.body.dataset.cue = `${cue[0]}-${cue[1]}`;
    play(cue);
  }
  document.body.dataset.ready = "true";
}

main();
