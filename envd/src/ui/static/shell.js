// The web shell: a real terminal (term.js) on the exec WebSocket, with a TTY, stdin,
// colours and resize. Frames: see the API's exec route.
"use strict";
(() => {
  const $ = (x) => document.getElementById(x);
  let ws = null, term = null;
  const status = (t) => { $("shell-status").textContent = t; };

  // The terminal's size in cells from its box and the width of one character.
  function cells(box) {
    const probe = document.createElement("span");
    probe.className = "term-probe";
    probe.textContent = "MMMMMMMMMM";
    box.append(probe);
    const w = probe.getBoundingClientRect().width / 10 || 7.2;
    const h = probe.getBoundingClientRect().height || 15;
    probe.remove();
    return [Math.max(20, Math.floor((box.clientWidth - 24) / w) - 1), Math.max(8, Math.floor(420 / h))];
  }

  function close() {
    if (ws) ws.close();
    ws = null;
    $("shell-close").hidden = true;
    $("shell-connect").hidden = false;
  }

  function connect(ev) {
    ev.preventDefault();
    close();
    const page = window.envPage;
    const box = $("terminal");
    box.replaceChildren();
    const [cols, rows] = cells(box);
    term = new Terminal({ cols, rows, useStyle: true, screenKeys: true, cursorBlink: true });
    term.open(box);
    const q = new URLSearchParams({ tty: "true", stdin: "true" });
    for (const arg of $("shell-cmd").value.trim().split(/\s+/).filter(Boolean)) q.append("cmd", arg);
    if ($("shell-container").value.trim()) q.set("container", $("shell-container").value.trim());
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const pod = encodeURIComponent($("shell-pod").value);
    ws = new WebSocket(`${proto}//${location.host}${page.base}/pods/${pod}/exec?${q}`);
    ws.binaryType = "arraybuffer";
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    status("connecting…");
    ws.onopen = () => {
      status(`connected to ${$("shell-pod").value}`);
      ws.send(JSON.stringify({ resize: [cols, rows] }));
      box.focus();
    };
    ws.onmessage = (m) => {
      if (typeof m.data === "string") {
        const end = JSON.parse(m.data);
        status(end.error ? `error: ${end.error}` : `exited with code ${end.exit_code}`);
        return;
      }
      const bytes = new Uint8Array(m.data);
      term.write(decoder.decode(bytes.subarray(1), { stream: true }));
    };
    ws.onclose = () => { if (!$("shell-status").textContent.startsWith("exited")) status("disconnected"); close(); };
    term.on("data", (d) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
    $("shell-close").hidden = false;
    $("shell-connect").hidden = true;
  }

  window.addEventListener("resize", () => {
    if (!term || !ws || ws.readyState !== WebSocket.OPEN) return;
    const [cols, rows] = cells($("terminal"));
    term.resize(cols, rows);
    ws.send(JSON.stringify({ resize: [cols, rows] }));
  });
  $("shell-form").addEventListener("submit", connect);
  $("shell-close").addEventListener("click", close);
})();
