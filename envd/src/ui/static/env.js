// The env page: state and endpoints, pod progress and the timeline fed by the SSE event
// stream, live logs, actions (extend, clone, delete), config set and the archive.
"use strict";
(() => {
  const { api, el, copyButton, ms, toast, LIVE } = envd;
  const id = document.getElementById("env").dataset.id;
  // Lifecycle values as the server names them (lifecycle.rs), rendered into the page:
  // the event kinds, and the states in which an env has ended.
  const words = (name) => (document.getElementById("env").dataset[name] || "").split(" ").filter(Boolean);
  const KINDS = words("kinds");
  const ENDED = words("ended");
  const base = `/v1/envs/${encodeURIComponent(id)}`;
  const $ = (x) => document.getElementById(x);
  let env = null;
  const events = [];
  const pods = new Map(); // pod -> {stage, check, ms}

  // "started:redis" / "ready:redis" (or a typed {kind, pod}) -> [kind, pod]
  const split = (e) => (e.pod ? [e.kind || e.step.split(":")[0], e.pod] : (e.step.includes(":") ? e.step.split(/:(.*)/s).slice(0, 2) : [e.step, null]));

  function renderEnv() {
    document.title = `${env.name} · envd`;
    $("env-name").textContent = env.name;
    $("env-name").title = env.name;
    $("crumb").textContent = env.name;
    const st = $("env-state");
    st.textContent = env.state;
    st.className = `state s-${env.state}`;
    const meta = [`template ${env.template}`, `owner ${env.owner}`];
    if (env.key) meta.push(`key ${env.key}`);
    if (env.node_ip) meta.push(`node ${env.node_ip}`);
    if (LIVE.includes(env.state)) meta.push(`expires in ${envd.countdown(env.expires_at)}`);
    if (env.clone_of) meta.push(`clone of ${env.clone_of}`);
    $("env-meta").textContent = meta.join(" · ");
    const live = LIVE.includes(env.state) && !["collecting", "freeing"].includes(env.state);
    document.querySelectorAll("[data-live]").forEach((b) => { b.disabled = !live; });
    $("archive").hidden = LIVE.includes(env.state);
    $("archive").href = `${base}/logs`;
    renderEndpoints();
    renderFailure();
    if (pods.size === 0) for (const p of env.pods || []) pods.set(p.name, { stage: "waiting" });
    renderPods();
    fillPodSelects();
  }

  function renderEndpoints() {
    const eps = Object.entries(env.endpoints || {});
    $("no-endpoints").hidden = eps.length > 0;
    $("endpoints").tBodies[0].replaceChildren(...eps.map(([name, ep]) => el("tr", {},
      el("th", {}, name), el("td", { class: "mono ellipsis", title: ep.url }, ep.url), el("td", {}, copyButton(ep.url)))));
    const lines = eps.map(([name, ep]) => `${name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_URL=${ep.url}`);
    if (env.node_ip) lines.unshift(`NODE_IP=${env.node_ip}`);
    $("dotenv").href = "data:text/plain;charset=utf-8," + encodeURIComponent(lines.join("\n") + "\n");
    $("dotenv").setAttribute("download", `${env.name}.env`);
  }

  let failureLogs = false;
  async function renderFailure() {
    const box = $("failure");
    if (!env.error) { box.hidden = true; return; }
    box.hidden = false;
    $("failure-cause").textContent = `step ${env.step}: ${env.error}`;
    // Once torn down, the archive holds the pods' last words.
    if (failureLogs || !ENDED.includes(env.state)) return;
    failureLogs = true;
    const parts = await lastLogLines().catch(() => []);
    if (parts.length) {
      $("failure-logs").textContent = parts.join("\n\n");
      $("failure-logs").hidden = false;
    }
  }

  // The last lines of the failed pods' logs, read from the teardown archive (gzip tar)
  // in the browser; only the first 8 MiB of the archive are read.
  async function lastLogLines() {
    const r = await fetch(`${base}/logs`, { credentials: "same-origin" });
    if (!r.ok || !("DecompressionStream" in window)) return [];
    const reader = r.body.pipeThrough(new DecompressionStream("gzip")).getReader();
    const chunks = [];
    let size = 0;
    while (size < 8 << 20) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
    reader.cancel().catch(() => {});
    const tar = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) { tar.set(c, at); at += c.length; }
    const text = (a, b) => new TextDecoder().decode(tar.subarray(a, b)).replace(/\0.*$/s, "");
    const files = [];
    for (let off = 0; off + 512 <= tar.length;) {
      const name = text(off, off + 100);
      if (!name) break;
      const prefix = text(off + 345, off + 500);
      const len = parseInt(text(off + 124, off + 136).trim(), 8) || 0;
      const body = off + 512;
      if (name.endsWith(".log") && body + len <= tar.length) {
        files.push({ name: prefix ? `${prefix}/${name}` : name, text: new TextDecoder().decode(tar.subarray(body, body + len)) });
      }
      off = body + Math.ceil(len / 512) * 512;
    }
    const named = files.filter((f) => env.error.includes(f.name.split("/")[0]));
    return (named.length ? named : files).slice(0, 3).map((f) => {
      const lines = f.text.trimEnd().split("\n").slice(-20);
      return `== ${f.name} (last ${lines.length} lines)\n${lines.join("\n")}`;
    });
  }


  function renderPods() {
    $("pods").replaceChildren(...[...pods.entries()].map(([name, p]) => el("li", { class: `pod p-${p.stage}`, "data-pod": name },
      el("span", { class: "pod-name" }, name),
      el("span", { class: `stage st-${p.stage}` }, p.stage),
      el("span", { class: "muted" }, [p.check, p.ms !== undefined ? ms(p.ms) : ""].filter(Boolean).join(" · ")))));
  }

  function onEvent(e) {
    events.push(e);
    const [kind, pod] = split(e);
    if (kind === "pods" && e.message !== "done") for (const p of pods.values()) if (p.stage === "waiting") p.stage = "starting";
    if (pod && (kind === "started" || kind === "ready")) {
      const p = pods.get(pod) || {};
      p.stage = kind;
      if (kind === "ready") { p.check = e.message; p.ms = e.duration_ms; }
      pods.set(pod, p);
    }
    renderPods();
    $("events").tBodies[0].append(el("tr", {},
      el("td", { class: "mono" }, new Date(e.at).toLocaleTimeString()),
      el("td", {}, e.step), el("td", { class: "ellipsis", title: e.message }, e.message),
      el("td", {}, e.duration_ms != null ? ms(e.duration_ms) : "")));
    drawTimeline();
  }

  // A bar per recorded step and per pod (started -> ready), on one time axis from the create.
  function drawTimeline() {
    const t0 = env ? Date.parse(env.created_at) : (events[0] ? events[0].at : 0);
    const bars = [];
    const started = {};
    for (const e of events) {
      const [kind, pod] = split(e);
      if (kind === "started" && pod) started[pod] = e.at;
      else if (kind === "ready" && pod) bars.push({ label: pod, from: started[pod] ?? e.at - (e.duration_ms || 0), to: e.at, cls: "pod" });
      else if (e.duration_ms != null && !pod && kind !== "ready") bars.push({ label: e.step, from: e.at - e.duration_ms, to: e.at, cls: "step" });
    }
    bars.sort((a, b) => a.from - b.from);
    const svgNS = "http://www.w3.org/2000/svg";
    const box = $("timeline");
    if (!bars.length) { box.textContent = "No step recorded yet."; return; }
    const end = Math.max(...bars.map((b) => b.to), t0 + 1);
    const W = Math.max(box.clientWidth || 800, 400), L = 130, R = 70, H = 20;
    const x = (t) => L + ((t - t0) / (end - t0)) * (W - L - R);
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${bars.length * H + 24}`);
    svg.setAttribute("width", "100%");
    const add = (tag, attrs, text) => {
      const n = document.createElementNS(svgNS, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      svg.append(n);
      return n;
    };
    bars.forEach((b, i) => {
      const y = i * H + 4;
      add("text", { x: 4, y: y + 13, class: "tl-label" }, b.label.length > 18 ? b.label.slice(0, 17) + "…" : b.label);
      const w = Math.max(x(b.to) - x(b.from), 2);
      add("rect", { x: x(b.from), y, width: w, height: H - 6, rx: 3, class: `tl-${b.cls}` });
      add("text", { x: x(b.from) + w + 4, y: y + 13, class: "tl-time" }, ms(b.to - b.from));
    });
    add("text", { x: L, y: bars.length * H + 20, class: "tl-axis" }, "0");
    add("text", { x: W - R, y: bars.length * H + 20, class: "tl-axis", "text-anchor": "end" }, ms(end - t0));
    box.replaceChildren(svg);
  }

  async function refresh() {
    try {
      env = await api("GET", base);
      renderEnv();
    } catch (e) {
      if (e.status === 404) { $("env-meta").textContent = "No such environment (or not yours)."; }
      else if (e.status !== 401) toast(e.message, true);
    }
  }

  // SSE events are named after their step; EventSource hands named events only to
  // listeners of that name, so listen to every step an env records (per pod too).
  function follow() {
    const src = new EventSource(`${base}/events`);
    const seen = new Set();
    const handle = (m) => {
      const e = JSON.parse(m.data);
      if (e.id === undefined || seen.has(e.id)) return;
      seen.add(e.id);
      onEvent(e);
      const kind = split(e)[0];
      if (["ready", "failed", "freeing", "collecting", "claimed", "expired", "config", "network"].includes(kind)) refresh();
    };
    const names = [...KINDS];
    for (const p of (env && env.pods) || []) names.push(...KINDS.map((k) => `${k}:${p.name}`));
    for (const n of names) src.addEventListener(n, handle);
    src.addEventListener("end", () => { src.close(); refresh(); });
    src.onerror = () => { if (src.readyState === EventSource.CLOSED) refresh(); };
  }

  // --- actions ---------------------------------------------------------------
  $("extend").addEventListener("click", async () => {
    try {
      env = await api("POST", `${base}/extend`, { ttl: $("extend-ttl").value });
      renderEnv();
      toast(`extended: expires in ${envd.countdown(env.expires_at)}`);
    } catch (e) { toast(e.message, true); }
  });
  $("delete").addEventListener("click", async () => {
    if (!confirm(`Delete ${env.name}? Its logs are archived first.`)) return;
    try {
      env = await api("DELETE", base);
      renderEnv();
      toast("teardown started");
    } catch (e) { toast(e.message, true); }
  });
  $("clone").addEventListener("click", async () => {
    try {
      const c = await api("POST", `${base}/clone`, { with_data: $("clone-data").checked });
      location.href = `/envs/${encodeURIComponent(c.id)}`;
    } catch (e) { toast(e.message, true); }
  });

  // --- logs ------------------------------------------------------------------
  let logAbort = null;
  const sources = new Set();
  async function followLogs() {
    if (logAbort || !env || env.state !== "ready" || !$("log-follow").checked) return;
    logAbort = new AbortController();
    const out = $("logs");
    try {
      const r = await fetch(`${base}/logs?follow=true&tail=200`, { signal: logAbort.signal, credentials: "same-origin" });
      if (!r.ok) return;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const lines = (rest + value).split("\n");
        rest = lines.pop();
        for (const line of lines) addLogLine(out, line);
      }
    } catch { /* aborted, or the env went away */ } finally { logAbort = null; }
  }
  function addLogLine(out, line) {
    const src = line.split(" | ")[0];
    if (!sources.has(src)) { sources.add(src); $("log-source").append(el("option", { value: src }, src)); }
    const n = el("div", { "data-src": src }, line);
    n.hidden = !logVisible(src, line);
    out.append(n);
    while (out.childElementCount > 5000) out.firstElementChild.remove();
    if ($("log-follow").checked) out.scrollTop = out.scrollHeight;
  }
  const logVisible = (src, line) => (!$("log-source").value || src === $("log-source").value)
    && (!$("log-filter").value || line.toLowerCase().includes($("log-filter").value.toLowerCase()));
  const refilter = () => { for (const n of $("logs").children) n.hidden = !logVisible(n.dataset.src, n.textContent); };
  $("log-source").addEventListener("change", refilter);
  $("log-filter").addEventListener("input", refilter);
  $("log-follow").addEventListener("change", () => { if ($("log-follow").checked) followLogs(); else if (logAbort) logAbort.abort(); });

  // --- tabs, pods in selects, config set --------------------------------------
  document.querySelectorAll("[data-tab]").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll("[data-tab]").forEach((x) => x.setAttribute("aria-selected", String(x === b)));
    document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== `tab-${b.dataset.tab}`; });
    if (b.dataset.tab === "config") loadConfigFields();
  }));
  function fillPodSelects() {
    for (const sel of [$("shell-pod"), $("config-pod")]) {
      if (sel.options.length) continue;
      for (const p of env.pods || []) sel.append(el("option", { value: p.name }, p.name));
    }
  }
  let configLoaded = false;
  async function loadConfigFields() {
    if (configLoaded || !env) return;
    configLoaded = true;
    const [name, version] = env.template.split(":");
    const r = await fetch(`/ui/fields/${encodeURIComponent(name)}?version=${encodeURIComponent(version || "")}`, { credentials: "same-origin" });
    $("config-fields").innerHTML = r.ok ? await r.text() : "";
    for (const [k, v] of Object.entries(env.answers || {})) {
      const input = $("config-fields").querySelector(`[data-var="${CSS.escape(k)}"]`);
      if (!input || v === "******") continue;
      if (input.type === "checkbox") input.checked = v === "true"; else input.value = v;
    }
    envd.forms.wire($("config"));
  }
  $("config").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = $("config");
    envd.forms.clearErrors(form);
    const answers = envd.forms.answers(form, env.answers || {});
    $("config-result").textContent = "applying…";
    try {
      const r = await api("PATCH", `${base}/pods/${encodeURIComponent($("config-pod").value)}`, { answers });
      $("config-result").textContent = `applied${r.pods ? ` to ${r.pods.join(", ")}` : ""}`;
      refresh();
    } catch (e) {
      $("config-result").textContent = "";
      envd.forms.showErrors(form, e);
    }
  });

  refresh().then(() => { follow(); followLogs(); });
  setInterval(() => { refresh().then(followLogs); }, 5000);
  window.addEventListener("resize", drawTimeline);
  window.envPage = { get env() { return env; }, base };
})();
