// Production manager's dashboard: machines with live state (server-sent events, read with fetch so the bearer
// token travels in a header, never in the URL), qualification, jobs, deadlines at risk, nonconformities.
"use strict";
(() => {
  const { $, el, api, say, session, fmtTime, fmtDay } = amtrace;
  let overview = null;
  let stream = null;   // AbortController of the live stream

  // The live part of a card is amtrace.live's (shared with the wall display); qualification and NCs are added here.
  function machineCard(m) {
    return amtrace.live.machineCard(m, [
      el("ul", { class: "scopes" }, m.scopes.map(s => el("li", {},
        el("span", { class: `badge ${s.state}`, text: s.state.replaceAll("_", " ") }), " ", s.label,
        s.valid_until ? el("span", { class: "hint" }, ` · valid until ${fmtDay(s.valid_until)}` +
          (s.expires_in_days != null && s.expires_in_days <= 30 ? ` (${s.expires_in_days} days left)` : "")) : null))),
      m.open_nonconformities ? el("p", { class: "overdue", text: `${m.open_nonconformities} open nonconformit` +
                                                                  (m.open_nonconformities === 1 ? "y" : "ies") }) : null]);
  }

  // The photo is fetched with the bearer token and shown from a blob: URL; there is no public path to it.
  function photoButton(n) {
    const holder = el("div", { class: "nc-photo" });
    const button = el("button", { type: "button", class: "button secondary", "data-photo": n.id,
                                  text: "Show photo" });
    button.addEventListener("click", async () => {
      let r;
      try { r = await amtrace.blob(`/nonconformities/${n.id}/photo`); }
      catch (e) { holder.replaceChildren(el("p", { class: "message error", role: "alert", text: e.message })); return; }
      const url = URL.createObjectURL(await r.blob());
      const img = el("img", { src: url, alt: `Photo of nonconformity ${n.id}: ${n.description}`, class: "photo" });
      img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      holder.replaceChildren(img, el("p", { class: "hint", text: `SHA-256 ${n.photo_sha256} (checked by the server)` }));
      button.hidden = true;
    });
    return el("div", {}, button, holder);
  }

  function render() {
    $("#machines").replaceChildren(...overview.machines.map(machineCard));
    $("#at-risk").replaceChildren(...(overview.at_risk.length ? overview.at_risk.map(r => el("tr", {},
      el("td", { text: r.device_code }), el("td", { text: r.what }), el("td", { text: r.state.replace("_", " ") }),
      el("td", { class: r.overdue ? "overdue" : "" }, r.overdue ? `OVERDUE since ${fmtTime(r.deadline)}` :
        `${fmtTime(r.deadline)} (${r.hours_left} h left)`))) : [el("tr", {}, el("td", { colspan: 4, text: "Nothing at risk." }))]));
    $("#jobs").replaceChildren(...(overview.jobs.length ? overview.jobs.map(j => el("tr", {},
      el("td", { text: j.label }), el("td", { text: j.machine_id }), el("td", { text: j.state }),
      el("td", { text: j.stage_summary }))) : [el("tr", {}, el("td", { colspan: 4, text: "No open jobs." }))]));
    $("#ncs").replaceChildren(...(overview.nonconformities.length ? overview.nonconformities.map(n => el("tr", {},
      el("td", { text: n.id }), el("td", { text: n.kind.replaceAll("_", " ") }),
      el("td", { text: [n.machine_id, n.job_id ? `JOB-${n.job_id}` : null, n.device_code].filter(Boolean).join(" · ") }),
      el("td", {}, n.description, n.photo_sha256 ? photoButton(n) : null),
      el("td", { text: `${fmtTime(n.raised_at)} by ${n.raised_by}` }))) :
      [el("tr", {}, el("td", { colspan: 5, text: "No open nonconformities." }))]));
    const machineSel = $("#maint-machine"), scopeSel = $("#requal-scope");
    const keepM = machineSel.value, keepS = scopeSel.value;
    machineSel.replaceChildren(...overview.machines.map(m => el("option", { value: m.id, text: `${m.id} (${m.name})` })));
    scopeSel.replaceChildren(...overview.machines.flatMap(m => m.scopes.map(s =>
      el("option", { value: s.id, text: `${m.id}: ${s.label} (${s.state.replaceAll("_", " ")})` }))));
    if (keepM) machineSel.value = keepM;
    if (keepS) scopeSel.value = keepS;
  }

  // The kinds the plant configured (AMTRACE_MAINTENANCE_KINDS): the server refuses any other.
  async function loadKinds() {
    const kinds = await api("GET", "/machines/maintenance/kinds");
    $("#maint-kind").replaceChildren(...kinds.map(k => el("option", { value: k.kind, text: k.label +
      (k.requalifying ? " (needs requalification)" : k.preventive ? " (sets the next due date)" : "") })));
  }

  async function load() {
    if (!$("#maint-kind").options.length) loadKinds().catch(e => say("#maint-message", e.message));
    try { overview = await api("GET", "/dashboard/overview"); render(); }
    catch (e) { say("#live-status", e.message); }
  }

  function applyLive(machineId, live) {
    if (!overview) return;
    const m = overview.machines.find(x => x.id === machineId);
    if (!m) { load(); return; }  // a machine registered since the page loaded
    m.live = live;
    const old = document.getElementById(`machine-${machineId}`);
    if (old) old.replaceWith(machineCard(m));
  }

  // Live machine states by server-sent events; a session that ends (expired, logged out elsewhere) says so and
  // returns to the log-in, a broken stream reconnects, the status line never says "Live" for a stream that ended.
  async function listen() {
    if (stream) stream.abort();
    const mine = stream = new AbortController();
    if (!session()) return;
    const how = await amtrace.live.listen({ onMachine: applyLive, signal: mine.signal,
      status: (text, kind) => say("#live-status", text, kind),
      onEnded: e => {
        say("#live-status", `Live updates stopped: ${e.detail}`);
        if (e.status === 401 || e.code) amtrace.logout(`Your session ended: ${e.detail}`);
      } });
    if (how === "broken" && session() && stream === mine) setTimeout(() => { if (session()) listen(); }, 3000);
  }

  // Wall displays: read-only links a manager creates here and can revoke; the secret is shown once.
  async function loadDisplays() {
    let rows;
    try { rows = await api("GET", "/display-tokens"); } catch (e) { say("#display-message", e.message); return; }
    $("#displays").replaceChildren(...(rows.length ? rows.map(d => el("tr", { "data-display": d.id },
      el("td", { text: d.label }), el("td", { text: fmtTime(d.created_at) }),
      el("td", { text: d.revoked_at ? `revoked ${fmtTime(d.revoked_at)}: ${d.revoke_reason}` : "active" }),
      el("td", {}, d.revoked_at ? null : el("button", { type: "button", class: "button secondary", text: "Revoke",
        onclick: async () => {
          const reason = window.prompt(`Why is the display "${d.label}" revoked?`);
          if (!reason) return;
          try { await api("POST", `/display-tokens/${d.id}/revoke`, { json: { reason } }); }
          catch (e) { say("#display-message", e.message); return; }
          say("#display-message", `Display "${d.label}" revoked: its screen stops within seconds.`, "ok");
          loadDisplays();
        } })))) : [el("tr", {}, el("td", { colspan: 4, text: "No wall displays." }))]));
  }

  $("#maint-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target.elements;
    try {
      await api("POST", `/machines/${encodeURIComponent(f.machine.value)}/maintenance`,
                { json: { kind: f.kind.value, description: f.description.value.trim() } });
    } catch (e) { say("#maint-message", e.message); return; }
    say("#maint-message", `Maintenance logged on ${f.machine.value}.`, "ok");
    f.description.value = "";
    load();
  });
  $("#requal-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target.elements;
    let r;
    try {
      r = await api("POST", "/qualification/requalifications", { json: { scope_id: Number(f.scope.value),
        risk_decision: f.risk.value, rationale: f.rationale.value.trim(), protocol: f.protocol.value.trim(),
        valid_until: f.valid_until.value } });
    } catch (e) { say("#requal-message", e.message); return; }
    say("#requal-message", `Requalification ${r.id} started (${r.kind}); quality engineering continues it on the Qualification page.`, "ok");
    load();
  });

  $("#display-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target.elements;
    let out;
    try { out = await api("POST", "/display-tokens", { json: { label: f.label.value.trim() } }); }
    catch (e) { say("#display-message", e.message); return; }
    const link = `${location.origin}${out.url}`;
    $("#display-link").replaceChildren(el("p", { text: "Open this link on the wall display (shown once; it works " +
      "until revoked):" }), el("code", { class: "display-link", text: link }));
    f.label.value = "";
    loadDisplays();
  });

  amtrace.start({
    ready: me => { load().then(listen); if (me.role !== "quality_engineer") { $("#displays-card").hidden = false; loadDisplays(); } },
    logout: () => { if (stream) stream.abort(); overview = null; },
  });
})();
