// Call list: GET /v1/calls with the filters of the form, paged.
"use strict";

const TIERS = { low: "低", medium: "中", high: "高" };
const $ = (id) => document.getElementById(id);
const PAGE = 50;
let offset = 0;

async function load() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("filters"))) if (v) params.set(k, v);
  params.set("limit", PAGE);
  params.set("offset", offset);
  const res = await HF.api(`/v1/calls?${params}`);
  if (!res.ok) {
    await refusedBanner(res, "加载通话记录");
    return;
  }
  const body = await res.json();
  showBanner("");
  const rows = $("calls").querySelector("tbody");
  rows.innerHTML = "";
  for (const c of body.items) {
    const vague = ["omission", "unclear", "evasive"].reduce((n, k) => n + (c.labels[k] || 0), 0);
    const tr = document.createElement("tr");
    tr.dataset.callId = c.call_id;
    tr.dataset.source = c.source;
    tr.innerHTML = `<td><a href="${reportPath(c.call_id)}">${esc(c.call_id)}</a></td><td class="origin">${sourceHtml(c)}</td>
      <td class="time">${when(c.created_at)}</td><td>${esc(c.agent_id || "—")}</td>
      <td>${Math.round(c.duration_s)} 秒</td><td><span class="pill ${c.tier}">${TIERS[c.tier]} ${c.risk_score}</span></td><td>${vague}</td>`;
    rows.appendChild(tr);
  }
  if (!body.items.length) rows.innerHTML = '<tr><td colspan="7">没有符合条件的通话</td></tr>';
  $("page").textContent = `${body.total ? offset + 1 : 0}-${offset + body.items.length} / ${body.total}`;
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + PAGE >= body.total;
  document.body.dataset.ready = "true";
}

$("filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
$("prev").onclick = () => { offset = Math.max(0, offset - PAGE); load(); };
$("next").onclick = () => { offset += PAGE; load(); };
NAV.me.then(load);
