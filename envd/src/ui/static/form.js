// Question forms (create and config set): show_if applied live, generated passwords,
// answers collected as the API wants them, and a 422's errors shown beside their fields.
"use strict";
envd.forms = (() => {
  const value = (input) => (input.dataset.kind === "bool" ? String(input.checked) : input.value);

  // `a=x && b=y`: every clause must hold, comparing the other question's current value.
  function holds(form, cond) {
    return cond.split("&&").every((clause) => {
      const [name, want] = clause.split("=").map((s) => s.trim());
      const other = form.querySelector(`[data-var="${CSS.escape(name)}"]`);
      return other && value(other) === want;
    });
  }

  function applyShowIf(form) {
    form.querySelectorAll("[data-show-if]").forEach((field) => {
      const show = holds(form, field.dataset.showIf);
      field.hidden = !show;
      field.querySelectorAll("input, select, textarea").forEach((i) => { i.disabled = !show; });
    });
  }

  function generate(len = 20) {
    const abc = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    const bytes = crypto.getRandomValues(new Uint8Array(len));
    return [...bytes].map((b) => abc[b % abc.length]).join("");
  }

  function wire(form) {
    form.addEventListener("input", () => applyShowIf(form));
    form.addEventListener("change", () => applyShowIf(form));
    form.querySelectorAll("[data-generate]").forEach((b) => b.addEventListener("click", () => {
      const input = document.getElementById(b.dataset.generate);
      const min = Number(input.getAttribute("minlength")) || 0;
      const max = Number(input.getAttribute("maxlength")) || 64;
      input.value = generate(Math.min(Math.max(20, min), max));
      input.type = "text";
      applyShowIf(form);
    }));
    form.querySelectorAll("[data-reveal]").forEach((b) => b.addEventListener("click", () => {
      const input = document.getElementById(b.dataset.reveal);
      input.type = input.type === "password" ? "text" : "password";
      b.textContent = input.type === "password" ? "show" : "hide";
    }));
    applyShowIf(form);
  }

  // Answers of the visible questions; an empty text field is left to the template (its
  // default, or a generated password), as the CLI does.
  function answers(form, previous = {}) {
    const out = {};
    form.querySelectorAll("[data-var]").forEach((input) => {
      if (input.disabled) return;
      const v = value(input);
      if (v === "" || (previous[input.dataset.var] !== undefined && previous[input.dataset.var] === v)) return;
      out[input.dataset.var] = v;
    });
    return out;
  }

  function clearErrors(form) {
    form.querySelectorAll("[data-error-for]").forEach((p) => { p.hidden = true; p.textContent = ""; });
    form.querySelectorAll(".field.bad").forEach((f) => f.classList.remove("bad"));
  }

  // A problem names one `field`, or lists `errors: [{field, reason}]`.
  function showErrors(form, err) {
    const p = (err && err.problem) || {};
    const list = p.errors && p.errors.length ? p.errors.map((e) => [e.field, e.reason])
      : [[p.field || "", p.detail || err.message]];
    let first = null;
    for (const [field, reason] of list) {
      let slot = form.querySelector(`[data-error-for="${CSS.escape(field || "")}"]`);
      if (!slot) slot = form.querySelector('[data-error-for=""]');
      slot.textContent = field && slot.dataset.errorFor === "" ? `${field}: ${reason}` : reason;
      slot.hidden = false;
      const wrap = slot.closest(".field");
      if (wrap) wrap.classList.add("bad");
      first = first || wrap || slot;
    }
    if (first) first.scrollIntoView({ block: "center" });
  }

  return { wire, answers, clearErrors, showErrors, generate };
})();

(() => {
  const form = document.getElementById("create");
  if (!form) return;
  envd.forms.wire(form);
  const $ = (x) => document.getElementById(x);

  async function initFiles() {
    const files = [...$("f-init").files];
    if (!files.length) return undefined;
    const pod = $("f-init-pod").value.trim();
    if (!pod) throw Object.assign(new Error("name the pod the init files are for"), { problem: { field: "init", detail: "name the pod the init files are for, e.g. mysql" } });
    return { [pod]: await Promise.all(files.map(async (f) => ({ name: f.name, content: await f.text() }))) };
  }

  function labels() {
    const out = {};
    for (const line of $("f-labels").value.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const i = line.indexOf("=");
      if (i < 1) throw Object.assign(new Error("bad label"), { problem: { field: "labels", detail: `\`${line}\` is not name=value` } });
      out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    return out;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    envd.forms.clearErrors(form);
    const submit = $("submit");
    submit.disabled = true;
    try {
      const body = {
        template: `${form.dataset.template}:${$("f-version").value}`,
        answers: envd.forms.answers(form),
        labels: labels(),
      };
      for (const k of ["name", "key", "ttl"]) {
        const v = $(`f-${k}`).value.trim();
        if (v) body[k] = v;
      }
      const init = await initFiles();
      if (init) body.init = init;
      const env = await envd.api("POST", "/v1/envs", body);
      location.href = `/envs/${encodeURIComponent(env.id)}`;
    } catch (e) {
      envd.forms.showErrors(form, e);
    } finally {
      submit.disabled = false;
    }
  });
})();
