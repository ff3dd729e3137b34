// Vigil's pages: the feedback and finish buttons of a release page call the JSON API
// (the browser's sign-in cookie goes along; the page never sees a token), and pages
// with data-refresh reload themselves while nobody is reading a detail or typing.
"use strict";
(() => {
  const main = document.getElementById("main");
  if (!main) return;
  const status = document.getElementById("action-status");
  const release = main.dataset.release;
  const STORED = "vigil-action-status";

  const say = (text, bad) => {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("bad", Boolean(bad));
  };

  // A message left by the action that reloaded the page.
  try {
    const left = sessionStorage.getItem(STORED);
    if (left) {
      sessionStorage.removeItem(STORED);
      say(left, false);
    }
  } catch (_) { /* storage may be disabled */ }

  const post = async (path, body) => {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let answer = null;
    try { answer = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      throw new Error((answer && answer.error) || `${response.status} ${response.statusText}`);
    }
    return answer;
  };

  const buttons = () => Array.from(document.querySelectorAll("button[data-action]"));

  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-action]") : null;
    if (!button || !release) return;
    let path;
    let body;
    let done;
    if (button.dataset.action === "feedback") {
      const note = document.getElementById("feedback-note");
      path = `/api/v1/releases/${release}/feedback`;
      body = { label: button.dataset.label };
      if (note && note.value.trim()) body.note = note.value.trim();
      done = `Feedback recorded: ${button.textContent.trim()}.`;
    } else if (button.dataset.action === "finish") {
      path = `/api/v1/releases/${release}/finish`;
      body = { outcome: button.dataset.outcome };
      done = `Release finished: ${button.textContent.trim()}.`;
    } else {
      return;
    }
    buttons().forEach((b) => { b.disabled = true; });
    say("Sending…", false);
    try {
      await post(path, body);
      try { sessionStorage.setItem(STORED, done); } catch (_) { /* shown below instead */ }
      say(done, false);
      window.location.reload();
    } catch (error) {
      say(`Not done: ${error.message}`, true);
      buttons().forEach((b) => { b.disabled = false; });
      button.focus();
    }
  });

  const every = Number(main.dataset.refresh);
  if (every > 0) {
    window.setInterval(() => {
      const active = document.activeElement;
      const reading = active && active !== document.body && active !== main;
      const opened = document.querySelector("details.data[open]");
      if (!reading && !opened && document.visibilityState === "visible") {
        window.location.reload();
      }
    }, every * 1000);
  }
})();
