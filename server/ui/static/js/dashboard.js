// Production manager's dashboard: machines with live state (server-sent events, read with fetch so the bearer
// token travels in a header, never in the URL), qualification, jobs, deadlines at risk, nonconformities.
"use strict";
(() => {
  const { $, el, api, say, session, sse, fmtTime, fmtDay } = amtrace;
  let overview = null;
  let stream = null;   // AbortController of the live stream

  function machineCard(m) {
    const live = m.live;
    const state = live ? live.state : "unknown";
    const card = el("article", { class: "machine", id: `machine-${m.id}`, "data-machine": m.id },
      el("h3", {}, m.id, " ", el("span", { class: "hint", text: m.name })),
      el("p", {}, el("span", { class: `badge ${state}`, "data-live-state": state, text: state }),
        live && live.job ? ` job ${live.job}` : ""),
      live && live.layer != null && live.layers_total ? [
        el("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                    "aria-valuenow": live.progress_pct, "aria-label": `Build progress of ${m.id}` },
          el("span", { style: null })),
        el("p", { class: "layer", text: `Layer ${live.layer} of ${live.layers_total} (${live.progress_pct} %)` })] : null,
      el("p", { class: "hint", text: `Software ${(live && live.software_revision) || m.software_revision || "not reported"}` +
                                    (live ? ` · last report ${fmtTime(live.received_at)}` : " · no live report yet") }),
      el("ul", { class: "scopes" }, m.scopes.map(s => el("li", {},
        el("span", { class: `badge ${s.state}`, text: s.state.replaceAll("_", " ") }), " ", s.label,
        s.valid_until ? el("span", { class: "hint" }, ` · valid until ${fmtDay(s.valid_until)}` +
          (s.expires_in_days != null && s.expires_in_days <= 30 ? ` (${s.expires_in_days} days left)` : "")) : null))),
      live && live.alerts.length ? el("ul", { class: "alerts" }, live.alerts.map(a =>
        el("li", { text: `${a.severity}: ${a.message}` }))) : null,
      m.open_nonconformities ? el("p", { class: "overdue", text: `${m.open_nonconformities} open nonconformit` +
                                                                  (m.open_nonconformities === 1 ? "y" : "ies") }) : null);
    const bar = card.querySelector(".progress > span");
    if (bar) bar.style.width = `${live.progress_pct}%`;  // CSSOM, allowed by the style-src 'self' policy
    return card;
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

  // Live machine states by server-sent events (amtrace.sse); a refused stream is said, a broken one reconnects.
  async function listen() {
    if (stream) stream.abort();
    const mine = stream = new AbortController();
    if (!session()) return;
    let refused = false;
    const aborted = await sse("/live/machines/stream", (name, data) => {
      if (name === "snapshot") for (const [id, live] of Object.entries(data)) applyLive(id, live);
      else if (name === "machine") applyLive(data.machine_id, data);
    }, mine.signal, r => {
      refused = !r.ok;
      if (refused) say("#live-status", r.status === 401 ? "Your session ended. Please log in again." :
                                       `Live updates refused (${r.status}).`);
      else say("#live-status", "Live: machine states update by themselves.", "ok");
    });
    if (aborted || refused) return;
    if (session()) {
      say("#live-status", "Live updates interrupted; reconnecting…");
      setTimeout(() => { if (session()) listen(); }, 3000);
    }
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

  amtrace.start({
    ready: () => { load().then(listen); },
    logout: () => { if (stream) stream.abort(); overview = null; },
  });
})();
