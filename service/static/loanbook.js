// What the loan book's pages (/customers, /customers/{id}, /followups) share: the Chinese names of tiers, labels,
// channels and statuses and a follow-up's cells (escaping, times and the error banner are page.js's). One home, so
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
  // Dates, figures and the error banner are every page's (page.js); the two pages use them under these names.
  const banner = (text) => showBanner(text);
  const refused = refusedBanner;

  const tierPill = (tier) => (tier ? `<span class="pill ${esc(tier)}">${TIERS[tier] || esc(tier)}风险</span>` : '<span class="pill none">未分级</span>');
  const labelBadge = (label) => `<span class="badge ${esc(label)}">${LABELS[label] || esc(label)}</span>`;
  const callLink = (callId) => (callId ? `<a class="call-link" href="/calls/${encodeURIComponent(callId)}">${esc(callId)}</a>` : "—");
  const customerLink = (id) => `<a class="customer-link" href="/customers/${encodeURIComponent(id)}">${esc(id)}</a>`;
  const status = (s) => `<span class="status-tag ${esc(s)}">${STATUSES[s] || esc(s)}</span>`;
  const isOverdue = (f) => (f.status === "open" || f.status === "assigned") && f.due_date < bankToday();
  const topics = (f) => (f.topic_names || f.topics || []).map(esc).join("、") || "—";

  return { TIERS, LABELS, CHANNELS, STATUSES, OUTCOMES, MESSAGE_STATUSES, SUPPRESSED, FIELDS, when, banner, refused, tierPill, labelBadge, callLink, customerLink, status, isOverdue, topics };
})();
