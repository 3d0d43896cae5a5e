// The navigation bar of every page, in one place (loaded after page.js, before the page's own script): the pages
// this token may open (GET /v1/me), the current one marked, who is signed in and the time zone every time on the
// page is shown in. NAV.me resolves to /v1/me's answer, or null without a usable token, once the bank's zone is
// set: a page awaits it before drawing times.
"use strict";

const NAV = (() => {
  const ROLES = { admin: "管理员", supervisor: "主管", agent: "坐席", ingest: "接入系统" };
  const bar = document.createElement("nav");
  bar.id = "sitenav";
  bar.className = "sitenav";
  bar.setAttribute("aria-label", "页面导航");
  bar.innerHTML = '<a class="brand" href="/">回访助手</a><span class="links"></span><span class="who"></span>';
  document.body.prepend(bar);

  // The link of the page being shown: its own path, or the list a detail page belongs to (/calls/X: /calls).
  function current(path) {
    const here = location.pathname;
    return here === path || (path !== "/" && here.startsWith(`${path}/`));
  }

  const me = (async () => {
    let body = null;
    try {
      const res = await HF.api("/v1/me");
      if (res.ok) body = await res.json();
    } catch (err) {
      console.warn("could not read /v1/me", err);
    }
    if (!body) return null;
    setBankZone(body.timezone);
    const links = [{ path: "/", title: "首页" }, ...body.pages];
    bar.querySelector(".links").innerHTML = links.map((p) => `<a href="${esc(p.path)}"${current(p.path)
      ? ' aria-current="page"' : ""}>${esc(p.title)}</a>`).join("");
    const who = body.agent_id ? `${ROLES[body.role] || "用户"} ${body.agent_id}` : ROLES[body.role] || "用户";
    const whoBox = bar.querySelector(".who");
    whoBox.textContent = `${who} · 时间为${zoneName()}`;
    whoBox.title = `${body.name}（${body.timezone}）`;
    return body;
  })();

  return { me, ROLES };
})();
