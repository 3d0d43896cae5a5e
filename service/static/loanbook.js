// What the loan book's pages (/customers, /customers/{id}, /followups) share: the Chinese names of tiers, labels,
// channels and statuses, dates, the error banner and a follow-up's cells (escaping is page.js's). One home, so
// the two pages never name a status differently.
"use strict";

const LB = (() => {
  const TIERS = { low: "低", medium: "中", high: "高" };
  const LABELS = { omission: "信息遗漏", unclear: "表述不清", evasive: "避而不答", mismatch: "与档案不符", followup: "待回访", clear: "回答清晰" };
  const CHANNELS = { call: "电话", sms: "短信", email: "邮件", letter: "信函" };
  const STATUSES = { open: "待分配", assigned: "已分配", done: "已完成", unreachable: "未联系上", refused: "客户拒绝", cancelled: "已取消" };
  const OUTCOMES = ["done", "unreachable", "refused", "cancelled"];
  const MESSAGE_STATUSES = { queued: "排队待发", sending: "发送中", sent: "已送达", failed: "发送失败，将重试", dead: "投递失败", suppressed: "未发送" };
  const SUPPRESSED = {
    no_contact: "无联系方式", opted_out: "客户已退订", no_consent: "客户未授权此渠道", no_address: "缺少地址",
    no_template: "无消息模板", personal_number: "正文含个人号码", template_error: "模板错误",
  };
  // Figures a report compares with the loan file (nlu/assess.py), as the page names them.
  const FIELDS = { monthly_yuan: ["月供", "元"], amount_yuan: ["贷款金额", "元"], repay_day: ["还款日", "日"], term_years: ["期限", "年"], rate_pct: ["年利率", "%"] };
  // Refusals of the API ({detail, code}) as a person reads them; the API's own words follow.
  const CODES = { forbidden: "无权限", not_found: "未找到", conflict: "状态已变化，请刷新", bad_page: "分页参数有误", unauthorized: "需要登录" };

  // "2026-12-02T01:04:00.866905Z" -> "2026-12-02 09:04" in the browser's zone (the bank's, at the bank).
  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  function today() {
    const d = new Date();
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  }

  function banner(text) {
    const el = document.getElementById("banner");
    el.textContent = text || "";
    el.hidden = !text;
  }

  // The banner for a failed request: what was being done, the code in Chinese, the API's detail.
  async function refused(res, doing) {
    let body = {};
    try {
      body = await res.json();
    } catch (err) {
      body = {};
    }
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg || JSON.stringify(d)).join("；") : body.detail;
    const why = CODES[body.code] || (res.status === 403 ? CODES.forbidden : res.status === 422 ? "输入有误" : `HTTP ${res.status}`);
    banner(`${doing}失败（${why}）：${detail || res.statusText || res.status}`);
  }

  const tierPill = (tier) => (tier ? `<span class="pill ${esc(tier)}">${TIERS[tier] || esc(tier)}风险</span>` : '<span class="pill none">未分级</span>');
  const labelBadge = (label) => `<span class="badge ${esc(label)}">${LABELS[label] || esc(label)}</span>`;
  const callLink = (callId) => (callId ? `<a class="call-link" href="/calls/${encodeURIComponent(callId)}">${esc(callId)}</a>` : "—");
  const customerLink = (id) => `<a class="customer-link" href="/customers/${encodeURIComponent(id)}">${esc(id)}</a>`;
  const status = (s) => `<span class="status-tag ${esc(s)}">${STATUSES[s] || esc(s)}</span>`;
  const isOverdue = (f) => (f.status === "open" || f.status === "assigned") && f.due_date < today();
  const topics = (f) => (f.topic_names || f.topics || []).map(esc).join("、") || "—";

  return { TIERS, LABELS, CHANNELS, STATUSES, OUTCOMES, MESSAGE_STATUSES, SUPPRESSED, FIELDS, when, today, banner, refused, tierPill, labelBadge, callLink, customerLink, status, isOverdue, topics };
})();
