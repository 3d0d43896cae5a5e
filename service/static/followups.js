// Follow-up work queue: GET /v1/followups with the form's filters (status repeatable), paged, soonest due first.
// A row's follow-up is assigned (POST .../assign, supervisors) and its outcome recorded (POST .../outcome, the
// assignee or a supervisor) in place: the row is redrawn from the API's answer. Refusals go to the banner.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
let offset = 0;

// The filters start from the address (?status=done&tier=high, as /customers/{id} links here) and go back into it,
// so a filtered queue can be bookmarked or shared.
function formFromAddress() {
  const q = new URLSearchParams(location.search);
  const form = $("filters");
  for (const name of ["due_before", "assignee", "tier", "customer_id"]) if (q.get(name)) form.elements[name].value = q.get(name);
  if (q.getAll("status").length) {
    const wanted = new Set(q.getAll("status"));
    for (const box of form.querySelectorAll('input[name="status"]')) box.checked = wanted.has(box.value);
  }
  offset = Math.max(0, parseInt(q.get("offset") || "0", 10) || 0);
}

function query() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("filters"))) if (v) params.append(k, v);
  return params;
}

function actions(f) {
  if (f.status !== "open" && f.status !== "assigned") return "";
  const outcomes = LB.OUTCOMES.map((s) => `<option value="${s}">${LB.STATUSES[s]}</option>`).join("");
  return `<div class="actions-cell">
    <form class="assign" data-id="${esc(f.id)}"><input name="assignee" placeholder="坐席工号" value="${esc(f.assignee || "")}" required autocomplete="off">
      <button type="submit">${f.assignee ? "改派" : "分配"}</button></form>
    <form class="outcome" data-id="${esc(f.id)}"><select name="status" required><option value="" selected disabled>选择结果</option>${outcomes}</select>
      <input name="note" placeholder="结果说明" maxlength="2000" autocomplete="off"><button type="submit">登记结果</button></form>
  </div>`;
}

function row(f) {
  const tr = document.createElement("tr");
  tr.dataset.followup = f.id;
  tr.dataset.status = f.status;
  tr.dataset.customer = f.customer_id;
  tr.className = LB.isOverdue(f) ? "overdue" : "";
  const call = f.call_id ? `完成：${LB.callLink(f.call_id)}` : f.source_call_id ? `来源：${LB.callLink(f.source_call_id)}` : "—";
  tr.innerHTML = `<td>${LB.customerLink(f.customer_id)}${f.loan_id ? `<br><span class="hint">贷款 ${esc(f.loan_id)}</span>` : ""}</td>
    <td>${LB.tierPill(f.tier)}</td><td class="nowrap">${LB.CHANNELS[f.channel] || esc(f.channel)}</td><td>${esc(f.reason_text)}</td>
    <td>${LB.topics(f)}</td>
    <td class="due nowrap">${esc(f.due_date)}${LB.isOverdue(f) ? '<span class="overdue-tag">逾期</span>' : ""}</td>
    <td class="state-cell">${LB.status(f.status)}</td><td class="assignee nowrap">${esc(f.assignee || "—")}</td>
    <td class="note">${esc(f.outcome_note || "")}</td><td>${call}</td><td>${actions(f)}</td>`;
  return tr;
}

async function load() {
  const params = query();
  const shown = new URLSearchParams(params);
  if (offset) shown.set("offset", offset);
  history.replaceState(null, "", `${location.pathname}${shown.toString() ? `?${shown}` : ""}`);
  params.set("limit", PAGE);
  params.set("offset", offset);
  const res = await HF.api(`/v1/followups?${params}`);
  if (!res.ok) {
    await LB.refused(res, "加载跟进任务");
    return;
  }
  const body = await res.json();
  LB.banner("");
  const tbody = $("followups").querySelector("tbody");
  tbody.innerHTML = "";
  for (const f of body.items) tbody.appendChild(row(f));
  if (!body.items.length) tbody.innerHTML = '<tr class="empty-row"><td colspan="11">没有符合条件的跟进任务</td></tr>';
  $("page").textContent = `${body.total ? offset + 1 : 0}-${offset + body.items.length} / ${body.total}`;
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + PAGE >= body.total;
  document.body.dataset.ready = "true";
}

async function post(id, what, body, doing) {
  const res = await HF.api(`/v1/followups/${encodeURIComponent(id)}/${what}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) {
    await LB.refused(res, doing);
    return;
  }
  LB.banner("");
  const updated = await res.json();
  const old = $("followups").querySelector(`tr[data-followup="${CSS.escape(id)}"]`);
  if (old) old.replaceWith(row(updated));
}

$("followups").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = e.target;
  const id = form.dataset.id;
  if (form.classList.contains("assign")) {
    post(id, "assign", { assignee: form.elements.assignee.value.trim() }, "分配");
  } else if (form.classList.contains("outcome")) {
    const note = form.elements.note.value.trim();
    post(id, "outcome", { status: form.elements.status.value, note: note || null }, "登记结果");
  }
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
$("prev").onclick = () => { offset = Math.max(0, offset - PAGE); load(); };
$("next").onclick = () => { offset += PAGE; load(); };
formFromAddress();
NAV.me.then(load);
