// dlbox dashboard: live job logs, state polling and small form helpers. No framework, no build.
"use strict";

const FINISHED = ["succeeded", "failed", "cancelled", "oom-killed", "lost"];

async function followLogs(pre) {
  // The API streams a running job's output as it comes (chunked text); the cookie signs us in.
  try {
    const response = await fetch(pre.dataset.logs, { credentials: "same-origin" });
    if (!response.ok) { pre.textContent = `logs: HTTP ${response.status}`; return; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(decoder.decode(value, { stream: true }));
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
    pre.append(decoder.decode());
    pre.dataset.done = "true";
  } catch (err) {
    pre.dataset.done = "error";
  }
}

async function pollJob(state) {
  const url = `/api/jobs/${state.dataset.job}`;
  while (!FINISHED.includes(state.textContent.trim())) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) continue;
      const job = await response.json();
      state.textContent = job.state;
      document.getElementById("reason").textContent = job.reason || "";
      document.getElementById("exit-code").textContent = job.exit_code ?? "-";
    } catch (err) { /* the server restarts: try again */ }
  }
  const cancel = document.getElementById("cancel");
  if (cancel) cancel.remove();
}

async function pollWorkspaces(table) {
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 5000));
    try {
      const response = await fetch(table.dataset.poll, { credentials: "same-origin" });
      if (!response.ok) continue;
      for (const ws of await response.json()) {
        const cell = table.querySelector(`[data-state-of="${CSS.escape(ws.name)}"]`);
        if (cell) cell.textContent = (ws.stopped && ws.stopped.text) || ws.state;  // "stopped: idle for 2h"
      }
    } catch (err) { /* the server restarts: try again */ }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("pre[data-logs]").forEach(followLogs);
  document.querySelectorAll("[data-job]").forEach(pollJob);
  document.querySelectorAll("table[data-poll]").forEach(pollWorkspaces);
  document.querySelectorAll("[data-back]").forEach((a) => a.addEventListener("click", (event) => {
    if (history.length > 1) { event.preventDefault(); history.back(); }
  }));
  document.querySelectorAll("form").forEach((form) => form.addEventListener("submit", (event) => {
    if (form.dataset.confirm && !confirm(form.dataset.confirm)) { event.preventDefault(); return; }
    if (form.method === "get") return;  // a search: coming back to the page must find its button working
    const button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; button.textContent += "…"; }
  }));
});
