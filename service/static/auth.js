// Access token for the pages: taken from ?token= once (then kept for this browser tab only and removed from the
// address bar), sent as a bearer header on requests and as ?token= where browsers cannot set headers
// (websockets, <audio src>). Without one, the page asks for it.
"use strict";

const HF = (() => {
  const KEY = "huifang_token";
  const params = new URLSearchParams(location.search);
  const given = params.get("token");
  if (given) {
    sessionStorage.setItem(KEY, given);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : ""));
  }
  const token = () => sessionStorage.getItem(KEY) || "";
  const withToken = (url) => `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token())}`;

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
    document.body.insertBefore(form, document.body.children[1] || null);
  }

  async function api(url, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const res = await fetch(url, { ...opts, headers });
    if (res.status === 401) askForToken("需要有效的访问令牌。");
    if (res.status === 403) askForToken("当前令牌无权查看此内容。");
    return res;
  }

  function socket(path) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return new WebSocket(withToken(`${scheme}://${location.host}${path}`));
  }

  return { token, api, socket, withToken, askForToken };
})();
