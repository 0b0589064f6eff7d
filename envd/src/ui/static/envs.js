// The env list: fetched from /v1/envs (live envs; with the history when the state filter
// asks for it), filtered here, refreshed every 2 s; countdowns tick.
"use strict";
(() => {
  const { api, el, copyButton, ago, countdown, stateBadge, LIVE } = envd;
  const body = document.querySelector("#envs tbody");
  const f = {
    q: document.getElementById("q"),
    state: document.getElementById("f-state"),
    template: document.getElementById("f-template"),
    owner: document.getElementById("f-owner"),
  };
  let envs = [];

  function fillSelect(select, values) {
    const keep = select.value;
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of values) if (!have.has(v)) select.append(el("option", { value: v }, v));
    select.value = keep;
  }

  const text = (e) => [e.name, e.id, e.key, e.node_ip, e.template, e.owner,
    ...Object.entries(e.labels || {}).map(([k, v]) => `${k}=${v}`)].join(" ").toLowerCase();

  function matches(e) {
    const st = f.state.value;
    if (st === "" && !LIVE.includes(e.state)) return false;
    if (st && st !== "all" && e.state !== st) return false;
    if (f.template.value && e.template.split(":")[0] !== f.template.value) return false;
    if (f.owner.value && e.owner !== f.owner.value) return false;
    const q = f.q.value.trim().toLowerCase();
    return !q || q.split(/\s+/).every((w) => text(e).includes(w));
  }

  function endpoints(e) {
    const td = el("td", { class: "eps" });
    for (const [name, ep] of Object.entries(e.endpoints || {})) {
      td.append(el("span", { class: "ep" }, el("span", { class: "ep-name" }, name), copyButton(ep.url || `${ep.host}:${ep.port}`, "copy")));
    }
    return td;
  }

  function render() {
    const shown = envs.filter(matches);
    body.replaceChildren(...shown.map((e) => el("tr", { "data-id": e.id },
      el("td", { class: "ellipsis name" }, el("a", { href: `/envs/${encodeURIComponent(e.id)}`, title: e.name }, e.name)),
      el("td", {}, stateBadge(e.state)),
      el("td", { class: "ellipsis" }, e.template),
      el("td", { class: "ellipsis" }, e.owner),
      el("td", { class: "ellipsis", title: e.key || "" }, e.key || ""),
      el("td", { class: "mono" }, e.node_ip || ""),
      el("td", { title: e.created_at }, ago(e.created_at)),
      el("td", { class: "countdown", "data-expires": LIVE.includes(e.state) ? e.expires_at : "" },
        LIVE.includes(e.state) ? countdown(e.expires_at) : ""),
      endpoints(e))));
    document.getElementById("empty").hidden = shown.length > 0;
    // When the first list was on screen, for the page-weight figure (tests/ui.rs).
    if (!performance.getEntriesByName("envs-rendered").length) performance.mark("envs-rendered");
  }

  async function load() {
    try {
      // Live envs unless the state filter asks for the history (gone, failed) too.
      const history = f.state.value !== "" && !LIVE.includes(f.state.value);
      envs = await api("GET", `/v1/envs?limit=1000${history ? "&all=true" : ""}`);
      envs.sort((a, b) => b.created_at.localeCompare(a.created_at));
      fillSelect(f.template, [...new Set(envs.map((e) => e.template.split(":")[0]))].sort());
      fillSelect(f.owner, [...new Set(envs.map((e) => e.owner))].sort());
      render();
    } catch (e) {
      if (e.status !== 401) envd.toast(`could not list environments: ${e.message}`, true);
    }
  }

  for (const input of Object.values(f)) input.addEventListener("input", render);
  f.state.addEventListener("change", load);
  document.getElementById("filters").addEventListener("submit", (ev) => ev.preventDefault());
  load();
  setInterval(load, 2000);
  setInterval(() => {
    document.querySelectorAll("td.countdown[data-expires]").forEach((td) => {
      if (td.dataset.expires) td.textContent = countdown(td.dataset.expires);
    });
  }, 1000);
})();
