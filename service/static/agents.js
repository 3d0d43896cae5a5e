// Coaching pages: /agents (GET /v1/agents, every agent against the team's median, sortable) and /agents/{id}
// (GET /v1/agents/{id}: figures, trend, coverage per topic, prompts followed, coaching list, the moments behind
// each figure). Charts are SVG drawn here; no chart library.
"use strict";

const $ = (id) => document.getElementById(id);
// name, how to show it, which way is better (1 higher, -1 lower, 0 neither)
const FIGURES = {
  calls: ["通话数", "n", 0],
  coverage: ["清单覆盖率", "pct", 1],
  high_skipped_per_call: ["高敏感项漏问（每通）", "f2", -1],
  prompts_shown: ["系统提示次数", "n", 0],
  prompts_followed_ratio: ["提示后跟进率", "pct", 1],
  prompts_clarified_ratio: ["提示后问清率", "pct", 1],
  vague_unresolved_per_call: ["遗留含糊回答（每通）", "f2", -1],
  mismatches_standing_per_call: ["档案不符未更正（每通）", "f2", -1],
  talk_ratio: ["坐席说话占比", "pct", 0],
  question_silence_s: ["提问后沉默（秒）", "f1", -1],
  duration_s: ["平均通话时长（秒）", "f0", 0],
};
const MOMENT_KINDS = { skipped: "未询问", prompt_ignored: "提示未跟进", unresolved: "含糊未澄清", mismatch_standing: "不符未更正", silence: "冷场" };
const LABELS = { clear: "回答清晰", omission: "信息遗漏", unclear: "表述不清", evasive: "避而不答" };

function fmt(value, kind) {
  if (value === null || value === undefined) return "—";
  if (kind === "pct") return `${(value * 100).toFixed(0)}%`;
  if (kind === "f2") return value.toFixed(2);
  if (kind === "f1") return value.toFixed(1);
  return String(Math.round(value));
}
function tone(name, diff) {
  const better = FIGURES[name][2];
  if (!better || diff === null || diff === undefined || diff === 0) return "";
  return diff * better > 0 ? "better" : "worse";
}

const agentId = location.pathname.startsWith("/agents/") ? decodeURIComponent(location.pathname.slice(8)) : null;
const params = new URLSearchParams(location.search);
let sort = params.get("sort") || "agent_id";
let order = params.get("order") || "asc";

function query(extra = {}) {
  const form = new FormData($("controls"));
  const q = new URLSearchParams();
  q.set("period", form.get("period"));
  if (form.get("date")) q.set("date", form.get("date"));
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q;
}
function apiUrl(extra) {
  return (agentId ? `/v1/agents/${encodeURIComponent(agentId)}` : "/v1/agents") + `?${query(extra)}`;
}

// -- all agents ----------------------------------------------------------------------------------------------
function medianBar(value, median, all) {
  // A bar for the agent's value and a tick for the team's median, on the scale of the largest value shown.
  const max = Math.max(...all.filter((v) => v !== null), median || 0, 1e-9);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 70 6");
  el("rect", { x: 0, y: 1, width: 70, height: 4, fill: "#e2e6ec" }, svg);
  if (value !== null) el("rect", { x: 0, y: 1, width: (70 * value) / max, height: 4, fill: "#2f6fd6" }, svg);
  if (median !== null) el("rect", { x: Math.min(69, (70 * median) / max), y: 0, width: 1.5, height: 6, fill: "#1d2733", class: "tick" }, svg);
  return svg;
}

function renderBoard(body) {
  const head = $("board").querySelector("thead tr");
  head.innerHTML = "";
  for (const key of ["agent_id", ...Object.keys(FIGURES)]) {
    const th = document.createElement("th");
    th.dataset.sort = key;
    th.textContent = key === "agent_id" ? "坐席" : FIGURES[key][0];
    if (key === body.sort) th.dataset.sorted = body.order;
    th.addEventListener("click", () => {
      order = sort === key && order === "asc" ? "desc" : sort === key ? "asc" : FIGURES[key]?.[2] === 1 ? "asc" : "desc";
      sort = key;
      load();
    });
    head.appendChild(th);
  }
  const rows = $("board").querySelector("tbody");
  rows.innerHTML = "";
  const median = document.createElement("tr");
  median.className = "median";
  median.innerHTML = `<td>团队中位数</td>` + Object.entries(FIGURES).map(([k, [, kind]]) => `<td>${fmt(body.team_median[k], kind)}</td>`).join("");
  rows.appendChild(median);
  for (const a of body.agents) {
    const tr = document.createElement("tr");
    tr.dataset.agent = a.agent_id;
    const link = document.createElement("td");
    link.innerHTML = `<a href="/agents/${encodeURIComponent(a.agent_id)}">${esc(a.agent_id)}</a>${verdictsLine(a.prompt_verdicts)}`;
    tr.appendChild(link);
    for (const [k, [, kind]] of Object.entries(FIGURES)) {
      const td = document.createElement("td");
      td.dataset.figure = k;
      const cell = document.createElement("div");
      cell.className = `cell ${tone(k, a.vs_median[k])}`;
      cell.innerHTML = `<span>${fmt(a.figures[k], kind)}</span>`;
      cell.appendChild(medianBar(a.figures[k], body.team_median[k], body.agents.map((x) => x.figures[k])));
      td.appendChild(cell);
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
  if (!body.agents.length) rows.insertAdjacentHTML("beforeend", `<tr><td colspan="12">本期没有坐席通话</td></tr>`);
  $("board").hidden = false;
}

// -- one agent -----------------------------------------------------------------------------------------------
let card = null;

function renderFigures() {
  const rows = $("figures").querySelector("tbody");
  rows.innerHTML = "";
  for (const [k, [name, kind]] of Object.entries(FIGURES)) {
    const tr = document.createElement("tr");
    tr.dataset.figure = k;
    const diff = card.vs_median[k];
    const moments = card.moments[k];
    const listen = moments ? `<button type="button" class="listen" data-figure="${k}">听录音（${moments.length}）</button>`
      : `<a class="listen" href="#calls-panel">看通话</a>`;
    tr.innerHTML = `<td>${name}</td><td class="value">${fmt(card.figures[k], kind)}</td><td>${fmt(card.team_median[k], kind)}</td>
      <td class="${tone(k, diff)}">${diff === null ? "—" : (diff > 0 ? "+" : "") + fmt(diff, kind === "pct" ? "pct" : kind === "n" ? "f1" : kind)}</td><td>${listen}</td>`;
    rows.appendChild(tr);
  }
  rows.querySelectorAll("button.listen").forEach((b) => b.addEventListener("click", () => showMoments(b.dataset.figure)));
  verdictRows(rows, card.prompt_verdicts);
}

// The agent's verdicts on prompts in the period (issue #31): disputed, of which a reviewer upheld (the assessor
// was wrong) and overturned, and asked again. Counts, not figures against the median: beside them, not among them.
function verdictsLine(v) {
  if (!v || !(v.disputed || v.asked_again)) return "";
  return `<div class="hint verdicts">提示有误 ${v.disputed}（采纳 ${v.upheld}）· 已追问 ${v.asked_again}</div>`;
}

function verdictRows(rows, v) {
  if (!v) return;
  const items = [["提示有误（坐席反馈）", v.disputed], ["其中复核采纳", v.upheld], ["其中维持原评估", v.overturned], ["已追问（坐席反馈）", v.asked_again]];
  for (const [name, n] of items) {
    const tr = document.createElement("tr");
    tr.dataset.verdicts = name;
    tr.innerHTML = `<td>${name}</td><td class="value">${n}</td><td>—</td><td>—</td><td></td>`;
    rows.appendChild(tr);
  }
}

function showMoments(figure) {
  const list = card.moments[figure] || [];
  $("moments-title").textContent = `${FIGURES[figure][0]}：背后的通话与录音片段（${list.length}）`;
  const ul = $("moments");
  ul.innerHTML = "";
  ul.dataset.figure = figure;
  for (const m of list) {
    const li = document.createElement("li");
    li.dataset.call = m.call_id;
    const where = m.start_s === null ? "（未问及，无录音片段）" : `${clock(m.start_s)}–${clock(m.end_s)}`;
    li.innerHTML = `<a href="${esc(m.url)}">${esc(m.call_id)}</a> · ${esc(MOMENT_KINDS[m.kind] || m.kind)} · ${esc(m.name)}
      ${m.label ? `· ${esc(LABELS[m.label] || m.label)}` : ""} · <a href="${esc(m.url)}">${where}</a>`;
    ul.appendChild(li);
  }
  if (!list.length) ul.innerHTML = "<li>本期没有</li>";
  $("moments-panel").hidden = false;
  $("moments-panel").scrollIntoView({ block: "nearest" });
}

function renderReview() {
  const ol = $("review");
  ol.innerHTML = "";
  for (const r of card.review) {
    const li = document.createElement("li");
    li.dataset.call = r.call_id;
    const reasons = r.findings.map((f) => `<li class="why" data-rule="${esc(f.rule)}">${esc(f.reason)}
      ${f.start_s === null ? "" : `<a class="listen" href="${esc(f.url)}">▶ ${clock(f.start_s)}</a>`}</li>`).join("");
    li.innerHTML = `<a href="${esc(r.url)}">${esc(r.call_id)}</a> <span class="points">${when(r.at)} · ${r.points} 分</span><ul>${reasons}</ul>`;
    ol.appendChild(li);
  }
  if (!card.review.length) ol.innerHTML = "<li>本期没有需要复盘的通话</li>";
}

function renderTrend(figure) {
  const svg = $("trend");
  svg.innerHTML = "";
  const [W, H, L, R, T, B] = [720, 220, 50, 30, 14, 30];
  const points = card.trend;
  const values = points.flatMap((p) => [p.figures[figure], p.team_median[figure]]).filter((v) => v !== null);
  const max = Math.max(...values, FIGURES[figure][1] === "pct" ? 1 : 1e-9);
  const x = (i) => L + ((W - L - R) * i) / Math.max(1, points.length - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  for (const frac of [0, 0.5, 1]) {
    el("line", { x1: L, x2: W - R, y1: y(max * frac), y2: y(max * frac), stroke: "#e2e6ec" }, svg);
    el("text", { x: L - 6, y: y(max * frac) + 4, "text-anchor": "end" }, svg).textContent = fmt(max * frac, FIGURES[figure][1]);
  }
  points.forEach((p, i) => { el("text", { x: x(i), y: H - 10, "text-anchor": "middle" }, svg).textContent = p.start.slice(5); });
  const line = (key, cls) => {
    const d = points.map((p, i) => [i, p[key][figure]]).filter(([, v]) => v !== null)
      .map(([i, v], j) => `${j ? "L" : "M"} ${x(i)} ${y(v)}`).join(" ");
    if (d) el("path", { d, class: cls }, svg);
  };
  line("team_median", "median");
  line("figures", "agent");
  points.forEach((p, i) => {
    const v = p.figures[figure];
    if (v === null) return;
    const dot = el("circle", { cx: x(i), cy: y(v), r: 4, fill: "#2f6fd6", class: "point", "data-start": p.start }, svg);
    el("title", {}, dot).textContent = `${p.start}–${p.end}：${fmt(v, FIGURES[figure][1])}（团队 ${fmt(p.team_median[figure], FIGURES[figure][1])}）`;
  });
}

function bars(svgId, rows, draw) {
  // Horizontal bars, one row per topic; a click lists the moments of that topic.
  const svg = $(svgId);
  svg.innerHTML = "";
  const [W, row, L] = [420, 24, 110];
  svg.setAttribute("viewBox", `0 0 ${W} ${row * rows.length + 8}`);
  rows.forEach((t, i) => {
    el("text", { x: L - 8, y: i * row + 17, "text-anchor": "end" }, svg).textContent = t.name;
    draw(svg, t, i * row + 6, L, W - L - 84);
  });
  if (!rows.length) el("text", { x: 10, y: 20 }, svg).textContent = "本期没有通话";
}

function renderTopics() {
  bars("coverage", card.topics, (svg, t, y, x0, width) => {
    el("rect", { x: x0, y, width, height: 14, fill: "#eef1f5" }, svg);
    const bar = el("rect", { x: x0, y, width: width * (t.coverage || 0), height: 14, class: "bar", "data-topic": t.topic }, svg);
    el("title", {}, bar).textContent = `${t.name}：${t.asked}/${t.calls} 通问及`;
    el("text", { x: x0 + width + 6, y: y + 11 }, svg).textContent = `${fmt(t.coverage, "pct")} (${t.asked}/${t.calls})`;
  });
  const prompted = card.topics.filter((t) => t.prompts_shown);
  const most = Math.max(1, ...prompted.map((t) => t.prompts_shown));
  bars("prompts", prompted, (svg, t, y, x0, width) => {
    el("rect", { x: x0, y, width: (width * t.prompts_shown) / most, height: 14, class: "shown", "data-topic": t.topic }, svg);
    el("rect", { x: x0, y, width: (width * t.prompts_followed) / most, height: 14, class: "bar followed", "data-topic": t.topic }, svg);
    el("text", { x: x0 + width + 6, y: y + 11 }, svg).textContent = `${t.prompts_followed}/${t.prompts_shown}`;
  });
}

function renderCalls() {
  $("calls-count").textContent = card.calls_total > card.calls.length ? `${card.calls.length} / ${card.calls_total}` : card.calls_total;
  const rows = $("calls").querySelector("tbody");
  rows.innerHTML = "";
  for (const c of card.calls) {
    const tr = document.createElement("tr");
    tr.dataset.call = c.call_id;
    tr.innerHTML = `<td><a href="${esc(c.url)}">${esc(c.call_id)}</a></td><td class="time">${when(c.at)}</td>
      <td>${clock(c.duration_s)}</td><td>${fmt(c.coverage, "pct")}</td><td>${c.high_skipped}</td>
      <td>${c.prompts_shown} / ${c.prompts_followed}</td><td>${c.vague_unresolved}</td><td>${c.mismatches_standing}</td>`;
    rows.appendChild(tr);
  }
  if (!card.calls.length) rows.innerHTML = '<tr><td colspan="8">本期没有通话</td></tr>';
}

function renderCard(body) {
  card = body;
  $("title").textContent = `坐席 ${body.agent_id}`;
  document.title = `坐席辅导 ${body.agent_id}`;
  renderFigures();
  renderReview();
  const select = $("trend-figure");
  if (!select.options.length) {
    for (const [k, [name]] of Object.entries(FIGURES)) select.add(new Option(name, k));
    select.value = "coverage";
    select.addEventListener("change", () => renderTrend(select.value));
  }
  renderTrend(select.value);
  renderTopics();
  renderCalls();
  $("moments-panel").hidden = true;
  $("card").hidden = false;
}

// -- loading -------------------------------------------------------------------------------------------------
async function load() {
  document.body.dataset.ready = "false";
  const res = await HF.api(apiUrl(agentId ? {} : { sort, order }));
  if (!res.ok) {
    await refusedBanner(res, agentId ? `打开坐席 ${agentId} 的辅导卡` : "加载坐席列表");
    return;
  }
  const body = await res.json();
  if (agentId && !body.calls_total && !(await knownAgent(agentId))) {
    showBanner(`未找到坐席 ${agentId}：没有该工号的通话记录，请检查链接中的工号。`);
    $("card").hidden = true;
    document.body.dataset.notFound = "true";
    return;
  }
  showBanner("");
  $("span").textContent = `${body.start} 至 ${body.end}`;
  if (agentId) renderCard(body);
  else renderBoard(body);
  document.body.dataset.ready = "true";
}

// An agent is known by their calls: an id with none stored at all is a mistyped link, not an empty scorecard.
async function knownAgent(id) {
  const res = await HF.api(`/v1/calls?agent=${encodeURIComponent(id)}&limit=1`);
  if (!res.ok) return true; // cannot tell: show the card as it is
  return (await res.json()).total > 0;
}

async function downloadCsv() {
  const res = await HF.api(apiUrl(agentId ? { format: "csv" } : { sort, order, format: "csv" }));
  if (!res.ok) return refusedBanner(res, "导出");
  const name = (res.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await res.blob());
  a.download = name ? name[1] : "agents.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

$("controls").period.value = params.get("period") || "month";
if (params.get("date")) $("controls").date.value = params.get("date");
$("controls").addEventListener("submit", (e) => { e.preventDefault(); load(); });
$("csv").addEventListener("click", downloadCsv);
NAV.me.then(load);
