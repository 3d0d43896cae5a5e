// Review queue of disputed prompts: GET /v1/reviews?status=..., paged; an open dispute is upheld or overturned in
// place with the label the reviewer would give (POST /v1/reviews/{id}); the row is redrawn from the answer, and an
// upheld one says how the call's risk changed. Refusals go to the banner.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const VERDICT_REASONS = { clear: "回答其实清楚", wrong_topic: "话题判断错误" };
const STATUSES = { open: "待复核", upheld: "已采纳", overturned: "维持原评估" };
const TIERS = { low: "低", medium: "中", high: "高" };
let offset = 0;
let topics = {};

function decisionForm(r) {
  if (r.review_status !== "open") return "";
  if (!r.reviewable) return '<span class="hint">通话尚未结束或正在重新处理，保存报告后可复核</span>';
  const labels = ["clear", "omission", "unclear", "evasive"]
    .map((l) => `<option value="${l}"${l === (r.reason === "clear" ? "clear" : r.label) ? " selected" : ""}>${ANSWER_LABELS[l]}</option>`).join("");
  const choices = Object.entries(topics).map(([id, name]) => `<option value="${esc(id)}">${esc(name)}</option>`).join("");
  return `<form class="decide actions-cell" data-id="${r.id}">
    <label><select name="decision"><option value="uphold">采纳（评估有误）</option><option value="overturn">维持原评估</option></select></label>
    <label>正确类型 <select name="label">${labels}</select></label>
    <label>正确项目 <select name="topic"><option value="">（不变）</option>${choices}</select></label>
    <input name="note" maxlength="500" placeholder="复核说明（可选）" autocomplete="off">
    <button type="submit">提交复核</button></form>`;
}

function reviewed(r, outcome) {
  if (r.review_status === "open") return decisionForm(r);
  const topic = r.reviewer_topic ? `，项目改为${esc(topics[r.reviewer_topic] || r.reviewer_topic)}` : "";
  const risk = outcome && outcome.report_version
    ? `<div class="why">风险评分 ${outcome.risk_before}（${TIERS[outcome.tier_before]}）→ ${outcome.risk_after}（${TIERS[outcome.tier_after]}）</div>` : "";
  const note = r.review_note ? `<div class="why">${esc(r.review_note)}</div>` : "";
  return `<b>${STATUSES[r.review_status]}</b>：${ANSWER_LABELS[r.reviewer_label] || ""}${topic}
    <div class="hint">${esc(r.reviewer || "")} ${r.reviewed_at ? when(r.reviewed_at) : ""}</div>${risk}${note}`;
}

function row(r, outcome) {
  const tr = document.createElement("tr");
  tr.dataset.review = r.id;
  tr.dataset.status = r.review_status;
  tr.dataset.call = r.call_id;
  const reason = r.reason ? VERDICT_REASONS[r.reason] || esc(r.reason) : "";
  tr.innerHTML = `<td><a href="${reportPath(r.call_id)}">${esc(r.call_id)}</a><div class="hint">${when(r.created_at)}</div></td>
    <td>${esc(r.agent_id || "—")}</td><td>${esc(topics[r.topic] || r.topic)}</td>
    <td class="question">${esc(r.question_text || "")}</td><td class="answer">${esc(r.answer_text || "（沉默）")}</td>
    <td><span class="badge ${esc(r.label)}">${ANSWER_LABELS[r.label] || esc(r.label)}</span><div class="why">${esc(r.prompt_text)}</div></td>
    <td class="reason">${reason}${r.note ? `<div class="why">${esc(r.note)}</div>` : ""}</td>
    <td class="decision">${reviewed(r, outcome)}</td>`;
  return tr;
}

async function load() {
  const status = $("filters").elements.status.value;
  history.replaceState(null, "", `${location.pathname}?status=${status}${offset ? `&offset=${offset}` : ""}`);
  const res = await HF.api(`/v1/reviews?status=${status}&limit=${PAGE}&offset=${offset}`);
  if (!res.ok) {
    await refusedBanner(res, "加载提示复核");
    return;
  }
  const body = await res.json();
  showBanner("");
  topics = Object.fromEntries(body.topics.map((t) => [t.topic, t.name]));
  const tbody = $("reviews").querySelector("tbody");
  tbody.innerHTML = "";
  for (const r of body.items) tbody.appendChild(row(r));
  if (!body.items.length) tbody.innerHTML = '<tr class="empty-row"><td colspan="8">没有需要显示的提示复核</td></tr>';
  $("page").textContent = `${body.total ? offset + 1 : 0}-${offset + body.items.length} / ${body.total}`;
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + PAGE >= body.total;
  document.body.dataset.ready = "true";
}

async function decide(form) {
  const id = form.dataset.id;
  const note = form.elements.note.value.trim();
  const res = await HF.api(`/v1/reviews/${encodeURIComponent(id)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ decision: form.elements.decision.value, label: form.elements.label.value,
      topic: form.elements.topic.value || null, note: note || null }),
  });
  if (!res.ok) {
    await refusedBanner(res, "提交复核");
    return;
  }
  showBanner("");
  const outcome = await res.json();
  const old = $("reviews").querySelector(`tr[data-review="${CSS.escape(id)}"]`);
  if (old) old.replaceWith(row({ ...outcome.review, reviewable: true }, outcome));
}

$("reviews").addEventListener("submit", (e) => {
  e.preventDefault();
  if (e.target.classList.contains("decide")) decide(e.target);
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
$("prev").onclick = () => { offset = Math.max(0, offset - PAGE); load(); };
$("next").onclick = () => { offset += PAGE; load(); };
const wanted = new URLSearchParams(location.search);
if (["open", "upheld", "overturned"].includes(wanted.get("status"))) $("filters").elements.status.value = wanted.get("status");
offset = Math.max(0, parseInt(wanted.get("offset") || "0", 10) || 0);
NAV.me.then(load);
