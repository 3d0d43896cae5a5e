// What every page script shares (loaded after auth.js, before nav.js and the page's own script): HTML escaping,
// the SVG namespace and element helper of the drawn charts, a mm:ss clock, times in the bank's time zone and the
// error banner.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function clock(s) {
  s = Math.max(0, Math.floor(s));
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// -- times ---------------------------------------------------------------------------------------------------
// The service stores UTC; people read the bank's local time. The zone is the service's setting
// (HUIFANG_LOANBOOK__TIMEZONE, from GET /v1/me: nav.js sets it before a page draws), never the browser's own.
let bankZone = "Asia/Shanghai";

function setBankZone(zone) {
  try {
    new Intl.DateTimeFormat("zh-CN", { timeZone: zone });
    bankZone = zone;
  } catch (err) {
    console.warn("unknown time zone from the service, keeping", bankZone, zone);
  }
}

// A stored time ("2026-12-02T01:04:00.866905Z"; one without a zone is UTC too) as a Date, or null.
function parseTime(iso) {
  if (!iso) return null;
  let s = String(iso);
  if (!/(Z|[+-]\d\d:?\d\d)$/.test(s)) s += "Z";
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

function zoneParts(d) {
  const parts = new Intl.DateTimeFormat("en-GB", {
    timeZone: bankZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23",
  }).formatToParts(d);
  return Object.fromEntries(parts.map((p) => [p.type, p.value]));
}

// "2026-12-02T01:04:00Z" -> "2026-12-02 09:04" (Asia/Shanghai).
function when(iso) {
  const d = parseTime(iso);
  if (!d) return iso ? String(iso) : "—";
  const p = zoneParts(d);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

// The day of a stored time in the bank's zone, "12月2日".
function whenDay(iso) {
  const d = parseTime(iso);
  if (!d) return "";
  const p = zoneParts(d);
  return `${Number(p.month)}月${Number(p.day)}日`;
}

// Today on the bank's calendar, "2026-12-06" (due dates are days of that calendar).
function bankToday() {
  const p = zoneParts(new Date());
  return `${p.year}-${p.month}-${p.day}`;
}

// The zone's name as people say it ("中国标准时间"), for the navigation bar and column headings.
function zoneName() {
  const part = new Intl.DateTimeFormat("zh-CN", { timeZone: bankZone, timeZoneName: "long" })
    .formatToParts(new Date()).find((p) => p.type === "timeZoneName");
  return part ? part.value : bankZone;
}

// -- the error banner ------------------------------------------------------------------------------------------
// What a refusal means, in the words of the person reading it; the API's own (English) words are folded under
// 详情 for whoever reports the problem.
const REFUSALS = {
  unauthorized: "需要有效的访问令牌", forbidden: "无权限", not_found: "未找到", conflict: "状态已变化，请刷新",
  bad_page: "分页参数有误", storage_unavailable: "数据库暂不可用", starting: "服务正在启动",
};
const STATUS_REFUSALS = { 401: REFUSALS.unauthorized, 403: REFUSALS.forbidden, 404: REFUSALS.not_found,
  409: REFUSALS.conflict, 422: "输入有误", 429: "请求过于频繁，请稍后再试", 503: "服务暂不可用" };

function showBanner(text, detail) {
  const box = document.getElementById("banner");
  if (!box) return;
  box.hidden = !text;
  box.textContent = text || "";
  if (text && detail) {
    const more = document.createElement("details");
    more.className = "detail";
    more.innerHTML = `<summary>详情</summary><code>${esc(detail)}</code>`;
    box.append(" ", more);
  }
}

// The banner for a failed request `res`: "<doing>失败（<why>）", the API's detail under 详情.
async function refusedBanner(res, doing) {
  let body = {};
  try {
    body = await res.json();
  } catch (err) {
    body = {};
  }
  const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ")
    : body.detail;
  const why = REFUSALS[body.code] || STATUS_REFUSALS[res.status] || (res.status >= 500 ? "服务出错" : "请求未成功");
  showBanner(`${doing}失败（${why}）`, [res.status, body.code, detail].filter(Boolean).join(" · "));
}

// -- the evidence behind a verdict ------------------------------------------------------------------------------
const ANSWER_LABELS = { clear: "回答清晰", omission: "信息遗漏", unclear: "表述不清", evasive: "避而不答", mismatch: "与档案不符" };
// Figures a report compares with the loan file (nlu/assess.py): their names and units.
const FIELDS = { monthly_yuan: ["月供", "元"], amount_yuan: ["贷款金额", "元"], repay_day: ["还款日", "日"],
  term_years: ["期限", "年"], rate_pct: ["年利率", "%"] };
// What a question asks for (configs/call_script.yaml `slot`), when the answer did not give it.
const SLOT_NAMES = { amount_yuan: "金额", years: "年限", day: "日期", percent: "比例", yes_no: "明确的是或否",
  consent: "是否同意", text: "具体内容" };

// A figure with its unit: "4200 元", "15 日", "3.7%".
function figure(field, value) {
  if (value === null || value === undefined) return "—";
  const unit = (FIELDS[field] || [null, ""])[1];
  return unit === "%" ? `${esc(value)}%` : `${esc(value)}${unit ? ` ${unit}` : ""}`;
}

// A mismatch ({field, stated, on_file}) in words: "还款日：客户说 15 日，档案为 20 日".
function mismatchText(m) {
  const name = (FIELDS[m.field] || ["所述数字"])[0];
  return `${name}：客户说 ${figure(m.field, m.stated)}，档案为 ${figure(m.field, m.on_file)}`;
}

// One piece of a verdict's evidence ({kind, text, label}) in words, HTML-escaped; "" for what is shown elsewhere
// (the stated figures) or has no words for people (an unknown kind: the report keeps it under 详情).
function evidenceHtml(e, mismatch) {
  switch (e.kind) {
    case "cue":
      return `含糊用语“${esc(e.text)}”`;
    case "counter_question":
      return `以反问回避“${esc(e.text)}”`;
    case "missing_slot":
      return `未给出所问的${SLOT_NAMES[e.text] || "内容"}`;
    case "no_evidence":
      return `未听出是否给出所问的${SLOT_NAMES[e.text] || "内容"}，请再确认`;
    case "mismatch": {
      if (mismatch) return esc(mismatchText(mismatch));
      const m = /^(\w+): (\S+) vs (\S+)$/.exec(e.text); // nlu/assess.py's own wording, when the topic has none
      return m ? esc(mismatchText({ field: m[1], stated: m[2], on_file: m[3] })) : "与贷款档案不符";
    }
    case "silence": {
      const s = parseFloat(e.text);
      return Number.isFinite(s) ? `提问后 ${s.toFixed(1)} 秒无回答` : "提问后无回答";
    }
    case "learned": {
      const p = parseFloat(String(e.text).replace(/^p=/, ""));
      return `模型判断为${ANSWER_LABELS[e.label] || "此结论"}${Number.isFinite(p) ? `（把握 ${Math.round(p * 100)}%）` : ""}`;
    }
    case "example":
      return `相近说法“${esc(e.text)}”`;
    default:
      return "";
  }
}

// -- where a stored call came from (#29) -------------------------------------------------------------------------
// `source` and `complete` of /v1/calls and of a report, in the same words on the list and the report page.
const SOURCES = { upload: "上传录音", live: "实时通话", demo: "演示" };
const INCOMPLETE = "未完整结束";
const INCOMPLETE_WHY = "通话未正常结束（连接中断或处理出错），内容截至最后一句转写";
const DEMO_WHY = "演示通话：样例录音的回放，不是客户的通话，不计入坐席辅导和客户档案";

// The report page of a call (the HTML page, not the JSON API).
function reportPath(callId) {
  return `/calls/${encodeURIComponent(callId)}`;
}

// A call's source as a small label, then "未完整结束" for a call that did not end cleanly (their reasons as
// tooltips). A demo is marked so that nobody takes it for a customer's call.
function sourceHtml(call) {
  const why = call.source === "demo" ? ` title="${esc(DEMO_WHY)}"` : "";
  const label = `<span class="source ${esc(call.source)}" data-source="${esc(call.source)}"${why}>${esc(SOURCES[call.source] || call.source)}</span>`;
  return call.complete === false ? `${label}<span class="incomplete" title="${esc(INCOMPLETE_WHY)}">${INCOMPLETE}</span>` : label;
}
