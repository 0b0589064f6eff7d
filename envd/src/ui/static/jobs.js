// The jobs page (admin): schedules, next and last runs, run now or as a dry run.
"use strict";
(() => {
  const { api, el, ago, toast } = envd;
  const body = document.querySelector("#jobs tbody");
  const count = (run, key) => {
    const found = run && run.result && run.result.found;
    if (!Array.isArray(found)) return "";
    return String(key === "found" ? found.length : found.filter((f) => f.freed).length);
  };

  async function run(name, dry) {
    try {
      const r = await api("POST", `/v1/jobs/${encodeURIComponent(name)}/run${dry ? "?dry_run=true" : ""}`);
      const report = document.getElementById("job-report");
      report.hidden = false;
      report.textContent = JSON.stringify(r, null, 2);
      toast(`${name}${dry ? " (dry run)" : ""}: ${r.found.length} found`);
      load();
    } catch (e) { toast(e.message, true); }
  }

  async function load() {
    try {
      const jobs = await api("GET", "/v1/jobs");
      body.replaceChildren(...jobs.map((j) => {
        const last = j.last_run;
        const when = last ? new Date(last.started_at).toISOString() : "";
        return el("tr", { "data-job": j.name },
          el("td", {}, j.name), el("td", { class: "mono" }, j.schedule),
          el("td", { title: j.next_run || "" }, j.next_run ? new Date(j.next_run).toLocaleString() : ""),
          el("td", { title: when }, last ? `${ago(when)} by ${last.runner}${last.dry_run ? " (dry)" : ""}${last.ok === false ? " — failed" : ""}` : "never"),
          el("td", {}, count(last, "found")), el("td", {}, count(last, "freed")),
          el("td", {}, el("button", { type: "button", onclick: () => run(j.name, false) }, "Run now"), " ",
            el("button", { type: "button", onclick: () => run(j.name, true) }, "Dry run")));
      }));
    } catch (e) { if (e.status !== 401) toast(e.message, true); }
  }
  load();
  setInterval(load, 10000);
})();
