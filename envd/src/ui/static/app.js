// Shared by every page: the API client (cookie session + CSRF header), small formatters,
// copy buttons and the toast.
"use strict";

const envd = (() => {
  const cookie = (name) => {
    const hit = document.cookie.split(";").map((c) => c.trim().split("=")).find(([k]) => k === name);
    return hit ? decodeURIComponent(hit.slice(1).join("=")) : "";
  };
  const csrf = () => cookie("envd_csrf");

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  // fetch with the session; a 401 sends the browser to sign in, a problem becomes an ApiError.
  async function api(method, path, body) {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new ApiError(401, { detail: "signed out" });
    }
    const type = r.headers.get("content-type") || "";
    const data = type.includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new ApiError(r.status, typeof data === "object" ? data : { detail: data });
    return data;
  }

  function toast(text, bad) {
    const t = document.getElementById("toast");
    t.textContent = text;
    t.className = bad ? "bad" : "";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 3000);
  }

  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  };

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
      toast("copied");
    } catch {
      // Without clipboard permission (plain http on another host): select a text box instead.
      const box = el("textarea", { class: "offscreen" });
      box.value = text;
      document.body.append(box);
      box.select();
      document.execCommand("copy");
      box.remove();
      toast("copied");
    }
  }
  const copyButton = (text, label = "copy") =>
    el("button", { type: "button", class: "small", onclick: () => copy(text), title: text }, label);

  function ago(iso) {
    if (!iso) return "";
    const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
    return `${Math.floor(s / 86400)}d ago`;
  }
  function countdown(iso) {
    let s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    if (s <= 0) return "expired";
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${String(s).padStart(2, "0")}s`;
  }
  const ms = (n) => (n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n} ms`);
  const stateBadge = (state) => el("span", { class: `state s-${state}` }, state);
  const LIVE = ["requested", "creating", "ready", "collecting", "freeing"];

  document.addEventListener("DOMContentLoaded", () => {
    const lc = document.getElementById("logout-csrf");
    if (lc) lc.value = csrf();
    const page = location.pathname === "/" || location.pathname.startsWith("/envs") ? "envs"
      : location.pathname.split("/")[1];
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("on", a.dataset.nav === page));
  });

  return { api, ApiError, toast, el, copy, copyButton, ago, countdown, ms, stateBadge, LIVE, csrf };
})();
