// Access token for the pages. It arrives once in the URL fragment (#token=..., which browsers never send to the
// server), is kept for this browser tab only and removed from the address bar. Requests carry it as a bearer
// header; a websocket, which cannot carry a header, gets a ticket for its call (POST /v1/tickets, valid 60 s);
// audio is fetched with the header and played from memory. The token never appears in a URL the server sees.
// Without one, the page asks for it.
"use strict";

const HF = (() => {
  const KEY = "huifang_token";
  const fragment = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const given = fragment.get("token") || query.get("token"); // ?token= only from old bookmarks
  if (given) {
    sessionStorage.setItem(KEY, given);
    fragment.delete("token");
    query.delete("token");
    const q = query.toString();
    const f = fragment.toString();
    history.replaceState(null, "", location.pathname + (q ? `?${q}` : "") + (f ? `#${f}` : ""));
  }
  const token = () => sessionStorage.getItem(KEY) || "";

  function askForToken(message) {
    if (document.getElementById("token-form")) return;
    const form = document.createElement("form");
    form.id = "token-form";
    form.className = "banner";
    form.innerHTML = `<span>${message}</span> <input name="t" size="36" placeholder="访问令牌（启动服务时打印的 token）">
      <button type="submit">确定</button>`;
    form.onsubmit = (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, form.t.value.trim());
      location.reload();
    };
    const header = document.querySelector(".topbar"); // under the page's title, as the error banner
    if (header) header.after(form);
    else document.body.prepend(form);
  }

  async function api(url, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const res = await fetch(url, { ...opts, headers });
    if (res.status === 401) askForToken("需要有效的访问令牌。");
    if (res.status === 403) askForToken("当前令牌无权查看此内容。");
    return res;
  }

  // A websocket for one call's path, opened with a fresh ticket for that call. Resolves to the socket, or to
  // null when no ticket could be had (the page has then asked for a token).
  async function socket(path, callId) {
    const res = await api("/v1/tickets", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ call_id: callId }),
    });
    if (!res.ok) return null;
    const { ticket } = await res.json();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return new WebSocket(`${scheme}://${location.host}${path}?ticket=${encodeURIComponent(ticket)}`);
  }

  // A stored recording as an object URL for <audio>: fetched with the header, never with a credential in the URL.
  async function audioUrl(url) {
    const res = await api(url);
    if (!res.ok) return null;
    return URL.createObjectURL(await res.blob());
  }

  return { token, api, socket, audioUrl, askForToken };
})();
