// The dashboard's only script: keeps <main> live from /ui/events and sends
// the buttons' forms after a confirmation. Every piece of HTML it inserts
// was rendered (and escaped) by the registry.
"use strict";
(function () {
  const main = document.getElementById("live");
  const status = document.getElementById("live-state");
  const result = document.getElementById("action-result");
  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const answer = await fetch(location.pathname + location.search, {
        headers: { "X-Switchyard-Fragment": "1" },
        credentials: "same-origin",
      });
      if (answer.status === 401) { location.assign("/ui/login"); return; }
      main.innerHTML = await answer.text();
      status.textContent = "live";
    } catch (error) {
      status.textContent = "reconnecting…";
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  function show(ok, message) {
    result.hidden = false;
    result.className = ok ? "ok" : "failed";
    result.textContent = message;
  }

  // Forms with data-confirm ask first, then post without leaving the page.
  document.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!form.dataset || !form.dataset.confirm) { return; }
    event.preventDefault();
    if (!window.confirm(form.dataset.confirm)) { return; }
    // The last button's answer goes: what shows next answers this one.
    result.hidden = true;
    result.textContent = "";
    try {
      const answer = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "Accept": "application/json" },
        credentials: "same-origin",
      });
      const body = await answer.json().catch(() => ({ ok: false, message: "HTTP " + answer.status }));
      show(body.ok, body.message);
    } catch (error) {
      show(false, "the registry did not answer: " + error);
    }
  });

  if (main && window.EventSource) {
    const events = new EventSource("/ui/events");
    events.addEventListener("change", refresh);
    events.onopen = function () { status.textContent = "live"; };
    events.onerror = function () { status.textContent = "reconnecting…"; };
  }
})();
