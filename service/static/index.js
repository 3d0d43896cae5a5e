// The landing page `/`: the pages this token may open (GET /v1/me, as the navigation bar), each with what it is
// for, and the way to a demo call for those who may open the console.
"use strict";

(async () => {
  const me = await NAV.me;
  if (!me) {
    document.getElementById("no-token").hidden = false;
    return;
  }
  const entries = me.docs ? [...me.pages, me.docs] : me.pages;
  document.getElementById("pages").innerHTML = entries.map((p) => `<li data-path="${esc(p.path)}">
    <a href="${esc(p.path)}">${esc(p.title)}</a><p>${esc(p.summary)}</p></li>`).join("");
  document.getElementById("no-pages").hidden = me.pages.length > 0;
  document.getElementById("pages-panel").hidden = false;
  document.getElementById("demo-line").hidden = !me.pages.some((p) => p.path === "/console");
  document.body.dataset.ready = "true";
})();
