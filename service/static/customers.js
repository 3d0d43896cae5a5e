// Loan book customers: /customers (GET /v1/customers, by tier, paged) and /customers/{id} (GET /v1/customers/{id}:
// the tier over time, topics never answered clearly, contradicted figures, every call, follow-ups, messages and the
// masked contact). The tier timeline is SVG drawn here; no chart library.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const customerId = location.pathname.startsWith("/customers/") ? decodeURIComponent(location.pathname.slice(11)) : null;
let offset = 0;

function rows(tableId, html, columns, empty) {
  const body = $(tableId).querySelector("tbody");
  body.innerHTML = html.length ? html.join("") : `<tr class="empty-row"><td colspan="${columns}">${esc(empty)}</td></tr>`;
}

// -- the list ----------------------------------------------------------------------------------------------------

async function loadList() {
  $("list").hidden = false;
  const params = new URLSearchParams();
  const tier = new FormData($("filters")).get("tier");
  if (tier) params.set("tier", tier);
  params.set("limit", PAGE);
  params.set("offset", offset);
  const res = await HF.api(`/v1/customers?${params}`);
  if (!res.ok) {
    await LB.refused(res, "加载客户列表");
    return;
  }
  const body = await res.json();
  LB.banner("");
  rows("customers", body.items.map((c) => `<tr data-customer="${esc(c.customer_id)}" data-tier="${esc(c.tier || "")}">
      <td>${LB.customerLink(c.customer_id)}</td><td>${LB.tierPill(c.tier)}</td><td class="time">${LB.when(c.tier_since)}</td>
      <td class="num">${c.open_followups}</td></tr>`), 4, "没有符合条件的客户");
  $("page").textContent = `${body.total ? offset + 1 : 0}-${offset + body.items.length} / ${body.total}`;
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + PAGE >= body.total;
  document.body.dataset.ready = "true";
}

// -- one customer ------------------------------------------------------------------------------------------------

// One mark per tier change on a line from the first change to now, coloured by tier; the span until the next
// change is shaded in the same colour. The reasons are the mark's <title> (shown on hover).
function tierTimeline(tiers) {
  const svg = $("tier-timeline");
  svg.innerHTML = "";
  // Drawn at the width it is shown at, so marks stay round and labels readable on any screen.
  const W = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 800), left = 40, right = W - 40, y = 40;
  svg.setAttribute("viewBox", `0 0 ${W} 90`);
  if (!tiers.length) {
    el("text", { x: left, y: y + 4 }, svg).textContent = "尚无定级记录";
    return;
  }
  const times = tiers.map((t) => new Date(t.at).getTime());
  const start = times[0];
  const end = Math.max(Date.now(), times[times.length - 1]);
  const span = Math.max(end - start, 1);
  // Changes close in time would hide each other: keep marks at least GAP apart, then fit them back in the line.
  const GAP = 120;
  const xs = times.map((t) => left + ((right - left) * (t - start)) / span);
  for (let i = 1; i < xs.length; i++) xs[i] = Math.max(xs[i], xs[i - 1] + GAP);
  const last = xs[xs.length - 1];
  if (last > right) for (let i = 0; i < xs.length; i++) xs[i] = left + ((xs[i] - left) * (right - left)) / (last - left);
  el("line", { x1: left, x2: right, y1: y, y2: y, class: "axis" }, svg);
  tiers.forEach((t, i) => {
    const x1 = i + 1 < tiers.length ? xs[i + 1] : right;
    el("line", { x1: xs[i], x2: x1, y1: y, y2: y, class: `seg ${t.tier}` }, svg);
  });
  tiers.forEach((t, i) => {
    const cx = xs[i];
    const mark = el("circle", { cx, cy: y, r: 9, class: `mark ${t.tier}`, "data-tier": t.tier, "data-call": t.call_id || "" }, svg);
    const title = `${LB.when(t.at)} ${LB.TIERS[t.tier] || t.tier}风险${t.call_id ? `（通话 ${t.call_id}）` : ""}\n${(t.reasons || []).join("\n")}`;
    el("title", {}, mark).textContent = title;
    // Labels run right from the first mark, centre on the others, and left from one at the line's end.
    const anchor = i === 0 ? "start" : cx > right - 40 ? "end" : "middle";
    el("text", { x: cx, y: y - 16, "text-anchor": anchor }, svg).textContent = `${LB.TIERS[t.tier] || t.tier}`;
    el("text", { x: cx, y: y + 26, "text-anchor": anchor }, svg).textContent = LB.when(t.at).slice(5);
  });
  el("text", { x: W - 4, y: y + 4, "text-anchor": "end" }, svg).textContent = "今";
}

function followupCells(f, closed) {
  const cells = [`<td class="nowrap">${LB.CHANNELS[f.channel] || esc(f.channel)}</td>`, `<td>${esc(f.reason_text)}</td>`,
    `<td>${LB.topics(f)}</td>`,
    `<td class="due nowrap">${esc(f.due_date)}${LB.isOverdue(f) ? '<span class="overdue-tag">逾期</span>' : ""}</td>`,
    `<td>${LB.status(f.status)}</td>`, `<td>${esc(f.assignee || "—")}</td>`];
  if (closed) cells.push(`<td class="note">${esc(f.outcome_note || "—")}</td>`, `<td>${LB.callLink(f.call_id)}</td>`);
  else cells.push(`<td>${LB.callLink(f.source_call_id)}</td>`);
  return cells.join("");
}

function render(view) {
  $("title").textContent = `客户 ${view.customer_id}`;
  document.title = `客户 ${view.customer_id} · 客户档案`;
  $("tier").innerHTML = LB.tierPill(view.tier);
  $("tier").dataset.tier = view.tier || "";
  $("tier-since").textContent = view.tier_since ? `自 ${LB.when(view.tier_since)} 起` : "";
  const current = view.tiers[view.tiers.length - 1];
  $("tier-reasons").innerHTML = (current ? current.reasons : []).map((r) => `<li>${esc(r)}</li>`).join("");
  tierTimeline(view.tiers);

  rows("never-clear", view.never_clear.map((t) => `<tr data-topic="${esc(t.topic)}" data-label="${esc(t.label)}">
      <td>${esc(t.name)}</td><td>${LB.labelBadge(t.label)}</td><td>${LB.callLink(t.call_id)}</td><td class="time">${LB.when(t.at)}</td></tr>`),
  4, "每个问题都已在之后的通话中说清");
  $("never-clear-count").textContent = view.never_clear.length;

  rows("mismatches", view.mismatches.map((m) => `<tr data-topic="${esc(m.topic)}" data-call="${esc(m.call_id)}">
      <td>${esc(m.name)}${m.field && LB.FIELDS[m.field] && LB.FIELDS[m.field][0] !== m.name ? `（${LB.FIELDS[m.field][0]}）` : ""}</td>
      <td class="num stated">${figure(m.field, m.stated)}</td><td class="num on-file">${figure(m.field, m.on_file)}</td>
      <td>${LB.callLink(m.call_id)}</td></tr>`), 4, "没有与档案矛盾的陈述");
  $("mismatch-count").textContent = view.mismatches.length;

  rows("calls", view.calls.map((c, i) => {
    const vague = c.unresolved.map((u) => `${esc(u.name)} ${LB.labelBadge(u.label)}`).join("<br>") || "—";
    const wrong = c.mismatched.map((m) => `${esc(m.name)}：${figure(m.field, m.stated)} / 档案 ${figure(m.field, m.on_file)}`).join("<br>") || "—";
    return `<tr data-call="${esc(c.call_id)}"><td class="num">${i + 1}</td>
      <td><a class="call-link" href="${esc(c.report_url)}">${esc(c.call_id)}</a></td><td class="time">${LB.when(c.at)}</td>
      <td>${esc(c.agent_id || "—")}</td><td>${esc(c.loan_id || "—")}</td>
      <td>${c.tier ? `<span class="pill ${esc(c.tier)}">${LB.TIERS[c.tier]} ${esc(c.risk_score ?? "")}</span>` : "—"}</td>
      <td>${vague}</td><td>${wrong}</td></tr>`;
  }), 8, "还没有回访通话");
  $("calls-count").textContent = view.calls.length;

  const open = view.followups.filter((f) => f.status === "open" || f.status === "assigned");
  const closed = view.followups.filter((f) => !(f.status === "open" || f.status === "assigned"));
  const tr = (f) => `<tr data-followup="${esc(f.id)}" data-status="${esc(f.status)}" data-channel="${esc(f.channel)}" class="${LB.isOverdue(f) ? "overdue" : ""}">`;
  rows("open-followups", open.map((f) => `${tr(f)}${followupCells(f, false)}</tr>`), 7, "没有未完成的跟进");
  rows("closed-followups", closed.map((f) => `${tr(f)}${followupCells(f, true)}</tr>`), 8, "暂无");
  $("open-count").textContent = open.length;
  $("closed-count").textContent = closed.length;
  $("queue-link").href = `/followups?customer_id=${encodeURIComponent(view.customer_id)}`;

  const reasonOf = Object.fromEntries(view.followups.map((f) => [f.id, f.reason_text]));
  rows("messages", view.messages.map((m) => {
    // The gateway's error is its own (English) words: under 详情.
    const error = m.last_error ? `<details class="detail"><summary>详情</summary><code>${esc(m.last_error)}</code></details>` : "";
    const why = m.status === "suppressed" ? `（${LB.SUPPRESSED[m.reason] || "未发送"}）`
      : m.status === "dead" || m.status === "failed" ? `（已尝试 ${m.attempts} 次）${error}` : "";
    return `<tr data-message="${esc(m.id)}" data-status="${esc(m.status)}"><td>${LB.CHANNELS[m.channel] || esc(m.channel)}</td>
      <td>${esc(reasonOf[m.followup_id] || m.action)}</td><td>${esc(m.destination_masked || "—")}</td>
      <td class="msg-status ${esc(m.status)}"><span class="nowrap">${LB.MESSAGE_STATUSES[m.status] || esc(m.status)}</span>${why}</td>
      <td class="time">${LB.when(m.sent_at || m.created_at)}</td></tr>`;
  }), 5, "没有消息");
  $("messages-count").textContent = view.messages.length;

  const c = view.contact;
  const channels = (list) => (list && list.length ? list.map((ch) => LB.CHANNELS[ch] || esc(ch)).join("、") : "无");
  $("contact").innerHTML = c ? `<dt>手机</dt><dd id="contact-phone">${esc(c.phone || "—")}</dd>
      <dt>邮箱</dt><dd id="contact-email">${esc(c.email || "—")}</dd>
      <dt>同意接收</dt><dd id="contact-consent">${channels(c.consent)}</dd>
      <dt>已退订</dt><dd id="contact-opted-out">${channels(c.opted_out)}</dd>`
    : "<dt>—</dt><dd>未登记联系方式</dd>";
}

async function loadCustomer() {
  $("title").textContent = `客户 ${customerId}`;
  const res = await HF.api(`/v1/customers/${encodeURIComponent(customerId)}`);
  if (!res.ok) {
    await LB.refused(res, `查看客户 ${customerId} `);
    return;
  }
  const view = await res.json();
  $("customer").hidden = false; // shown first: the timeline is drawn at the width it gets
  render(view);
  document.body.dataset.ready = "true";
}

if (customerId) {
  NAV.me.then(loadCustomer);
} else {
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; loadList(); });
  $("prev").onclick = () => { offset = Math.max(0, offset - PAGE); loadList(); };
  $("next").onclick = () => { offset += PAGE; loadList(); };
  NAV.me.then(loadList);
}
