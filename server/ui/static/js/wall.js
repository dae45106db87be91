// Wall display: the machines, read-only, with a display token a production manager created (no person logs in,
// no idle log-out). The token arrives in the link's fragment (#token=…, never sent to a server or a log), is kept
// in sessionStorage and removed from the address bar. The status line says what is true: live, reconnecting, or
// ended with the reason (revoked) — never "Live" for a stream that stopped.
"use strict";
(() => {
  const { $, say } = amtrace;
  const KEY = "amtrace.display";
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) {
    sessionStorage.setItem(KEY, fragment);
    history.replaceState(null, "", location.pathname);
  }
  const token = sessionStorage.getItem(KEY);
  const machines = new Map();  // id -> overview machine with .live
  let names = {};

  function render() {
    $("#machines").replaceChildren(...[...machines.values()].sort((a, b) => a.id.localeCompare(b.id))
      .map(m => amtrace.live.machineCard(m)));
  }

  function onMachine(id, live) {
    const m = machines.get(id) || { id, name: names[id] || "", scopes: [] };
    m.live = live;
    machines.set(id, m);
    const old = document.getElementById(`machine-${id}`);
    if (old) old.replaceWith(amtrace.live.machineCard(m)); else render();
  }

  function ended(e) {
    say("#live-status", `Not live: ${e.detail}`);
    document.body.classList.add("ended");
  }

  async function load() {
    const r = await fetch("/api/v1/dashboard/overview", { headers: { Authorization: `Bearer ${token}` },
                                                         cache: "no-store", credentials: "omit" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { ended({ detail: body.detail || `the server answered ${r.status}` }); return false; }
    names = Object.fromEntries(body.machines.map(m => [m.id, m.name]));
    for (const m of body.machines) machines.set(m.id, m);
    render();
    return true;
  }

  async function run() {
    if (!token) { ended({ detail: "this page needs a display link (…/ui/wall#token=…) from a production manager" }); return; }
    if (!(await load())) return;
    for (;;) {
      const how = await amtrace.live.listen({ token, onMachine, onEnded: ended,
                                              status: (text, kind) => say("#live-status", text, kind) });
      if (how !== "broken") return;
      await new Promise(res => setTimeout(res, 3000));
    }
  }

  setInterval(() => { $("#clock").textContent = new Date().toLocaleTimeString("en-GB"); }, 1000);
  run();
})();
