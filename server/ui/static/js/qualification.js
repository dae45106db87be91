// Quality engineer: a scope's (re)qualification record — triggers, risk decision, protocol; acceptance criteria
// editable until locked, then shown with their lock hash; artefact results judged by the server against the
// locked criteria; approval signed with the password again (the scope becomes qualified) or rejection.
"use strict";
(() => {
  const { $, el, api, say, fmtUtc, fmtDay, signatureLine } = amtrace;
  const TYPES = ["tensile_bar", "density_cube", "geometry_artefact", "surface_roughness", "other"];
  const words = s => String(s).replaceAll("_", " ");
  let scopes = [];
  let view = null;     // the open record, as /qualification-records/{id} returns it
  let dirty = false;   // criteria edited but not saved

  function renderScopes() {
    $("#scopes").replaceChildren(...(scopes.length ? scopes.map(s => el("tr", { "data-scope": s.id },
      el("td", { text: s.machine_id }), el("td", { text: s.label }),
      el("td", {}, el("span", { class: `badge ${s.state}`, "data-scope-state": s.state, text: words(s.state) })),
      el("td", { text: s.valid_until ? fmtDay(s.valid_until) : "–" }),
      el("td", {}, s.records.length ? s.records.map(r => el("button", {
        type: "button", class: "button secondary", "data-open": r.id, onclick: () => open(r.id),
        text: `Open ${r.kind} ${r.id} (${words(r.state)})` })) : el("span", { class: "hint", text: "none yet" })))) :
      [el("tr", {}, el("td", { colspan: 5, text: "No qualification scopes." }))]));
    const sel = $("#start-scope"), keep = sel.value;
    sel.replaceChildren(...scopes.map(s => el("option", { value: s.id, text: `${s.machine_id}: ${s.label} (${words(s.state)})` })));
    if (keep) sel.value = keep;
  }

  async function loadScopes() {
    try { scopes = await api("GET", "/qualification-records/scopes"); renderScopes(); }
    catch (e) { say("#scopes-message", e.message); }
  }

  function criterionRow(c) {
    const cell = (name, label, attrs) => el("td", {}, el("input", { name, "aria-label": label, value: c[name] ?? "",
                                                                   ...attrs }));
    const type = el("select", { name: "artefact_type", "aria-label": "Artefact type" },
      TYPES.map(t => el("option", { value: t, text: words(t), selected: t === c.artefact_type })));
    const tr = el("tr", {}, el("td", {}, type), cell("property", "Property"),
      cell("min", "Minimum", { type: "number", step: "any" }), cell("max", "Maximum", { type: "number", step: "any" }),
      cell("unit", "Unit"), cell("min_count", "Results needed", { type: "number", min: 1, step: 1 }),
      el("td", {}, el("button", { type: "button", class: "button secondary", text: "Remove",
                                  onclick: () => { tr.remove(); dirty = true; } })));
    tr.addEventListener("input", () => { dirty = true; });
    return tr;
  }

  function editedCriteria() {
    return [...$("#criteria-edit").rows].map(tr => {
      const v = n => tr.querySelector(`[name=${n}]`).value.trim();
      return { artefact_type: v("artefact_type"), property: v("property"), unit: v("unit"),
               min: v("min") === "" ? null : Number(v("min")), max: v("max") === "" ? null : Number(v("max")),
               min_count: v("min_count") === "" ? 1 : Number(v("min_count")) };
    });
  }

  function fact(dt, dd, cls) { return [el("dt", { text: dt }), el("dd", { class: cls || null, text: dd })]; }

  function render() {
    const r = view.record, s = view.scope;
    $("#record-title").textContent = `${r.kind === "initial" ? "Initial qualification" : "Requalification"} ${r.id} · ` +
                                     `${s.machine_id} · ${s.label}`;
    $("#record-facts").replaceChildren(
      ...fact("Record state", words(r.state), "record-state"), ...fact("Scope state", words(s.state), "scope-state"),
      ...fact("Risk decision", r.risk_decision), ...fact("Rationale", r.rationale), ...fact("Protocol", r.protocol),
      ...fact("Valid until", fmtDay(r.valid_until)),
      ...fact("Started", `${fmtUtc(r.started_at)} by ${view.started_by}`),
      ...(r.closing_note ? fact("Closing note", r.closing_note) : []));
    $("#triggers").replaceChildren(...(view.triggers.length ? view.triggers.map(t => el("li", { "data-trigger": t.kind },
      el("strong", { text: words(t.kind) }), `: ${t.detail} `, el("span", { class: "hint", text: `(${fmtUtc(t.occurred_at)}, ${t.source})` }))) :
      [el("li", { class: "hint", text: "No trigger attached to this record (a trigger goes to the first record opened after it)." })]));

    const editable = r.state === "open";
    $("#criteria-open").hidden = !editable;
    $("#criteria-closed").hidden = editable;
    if (editable) {
      if (!dirty) $("#criteria-edit").replaceChildren(...r.acceptance_criteria.map(criterionRow));
    } else {
      $("#criteria-view").replaceChildren(...r.acceptance_criteria.map(c => el("tr", {},
        el("td", { text: words(c.artefact_type) }), el("td", { text: c.property }), el("td", { text: c.min ?? "–" }),
        el("td", { text: c.max ?? "–" }), el("td", { text: c.unit }), el("td", { text: c.min_count }))));
      $("#lock-line").textContent = r.criteria_sha256 ?
        `Locked on ${fmtUtc(r.criteria_locked_at)} by ${view.criteria_locked_by}. SHA-256 ${r.criteria_sha256}` :
        `Not locked (record ${words(r.state)}).`;
    }
    $("#artefacts").replaceChildren(...(r.artefacts.length ? r.artefacts.map(a => el("tr", {
      "data-artefact": a.label, class: a.passed ? "" : "failed" },
      el("td", { text: a.label }), el("td", { text: words(a.artefact_type) }),
      el("td", { text: `${a.x_mm} / ${a.y_mm} / ${a.z_mm}` }), el("td", { text: a.orientation }),
      el("td", { text: a.property }), el("td", { text: `${a.measured_value} ${a.unit}` }),
      el("td", {}, el("span", { class: `badge ${a.passed ? "pass" : "fail"}`, text: a.passed ? "PASS" : "FAIL" })))) :
      [el("tr", {}, el("td", { colspan: 7, text: "No results entered yet." }))]));
    $("#artefact-form").hidden = ["approved", "rejected"].includes(r.state);

    const closed = ["approved", "rejected"].includes(r.state);
    $("#approval-open").hidden = closed;
    if (!closed) {
      say("#approval-readiness", view.blockers.length ? "Approval is not possible yet:" :
          "Ready to sign: every criterion has its results and all passed.", view.blockers.length ? "error" : "ok");
      $("#blockers").replaceChildren(...view.blockers.map(b => el("li", { text: b })));
      $("#approve-hint").textContent = "Your signature (meaning: approved) binds to the whole record: triggers, " +
        "risk decision, protocol, locked criteria and every result. The scope becomes qualified until " +
        `${fmtDay(r.valid_until)}.`;
    }
    const line = $("#approval-line");
    line.hidden = !view.approval && r.state !== "rejected";
    line.textContent = view.approval ? `${signatureLine(view.approval)}. The scope is ${words(s.state)}.` :
      r.state === "rejected" ? `Rejected: ${r.closing_note}. The scope is ${words(s.state)}.` : "";
  }

  async function open(id, focus = true) {
    try { view = await api("GET", `/qualification-records/${id}`); }
    catch (e) { say("#scopes-message", e.message); return; }
    dirty = false;
    for (const m of ["#criteria-message", "#artefact-message", "#approve-message"]) say(m, "");
    $("#record").hidden = false;
    render();
    if (focus) $("#record-title").focus();
  }

  async function refresh() { await open(view.record.id, false); await loadScopes(); }

  async function act(box, fn) {
    try { return await fn(); } catch (e) { say(box, e.message); return null; }
  }

  $("#add-criterion").addEventListener("click", () => {
    const tr = criterionRow({ artefact_type: "tensile_bar", min_count: 1 });
    $("#criteria-edit").append(tr);
    dirty = true;
    tr.querySelector("select").focus();
  });
  $("#save-criteria").addEventListener("click", async () => {
    const criteria = editedCriteria();
    const out = await act("#criteria-message", () => api("PUT", `/qualification/requalifications/${view.record.id}/criteria`,
                                                         { json: { criteria } }));
    if (!out) return;
    dirty = false;
    await refresh();
    say("#criteria-message", `${criteria.length} criteri${criteria.length === 1 ? "on" : "a"} saved; lock them before entering results.`, "ok");
  });
  $("#lock-criteria").addEventListener("click", async () => {
    if (dirty) { say("#criteria-message", "Save the criteria before locking them: the lock covers the saved criteria."); return; }
    const out = await act("#criteria-message", () => api("POST", `/qualification/requalifications/${view.record.id}/criteria/lock`));
    if (!out) return;
    await refresh();
    say("#criteria-message", "Criteria locked. They can no longer change; results are judged against them.", "ok");
  });
  $("#artefact-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target.elements;
    const body = { artefact_type: f.artefact_type.value, label: f.label.value.trim(), x_mm: Number(f.x_mm.value),
                   y_mm: Number(f.y_mm.value), z_mm: Number(f.z_mm.value), orientation: f.orientation.value.trim(),
                   property: f.property.value.trim(), measured_value: Number(f.measured_value.value), unit: f.unit.value.trim() };
    const a = await act("#artefact-message", () => api("POST", `/qualification/requalifications/${view.record.id}/artefacts`,
                                                      { json: body }));
    if (!a) return;
    await refresh();
    say("#artefact-message", `${a.label}: ${a.property} ${a.measured_value} ${a.unit} — ` +
        (a.passed ? "PASS against the locked criterion." : "FAIL against the locked criterion."), a.passed ? "ok" : "error");
    f.label.value = ""; f.measured_value.value = "";
    f.label.focus();
  });
  $("#approve-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target.elements;
    const out = await act("#approve-message", () => api("POST", `/qualification/requalifications/${view.record.id}/approve`,
      { json: { password: f.password.value, material_supplier: f.material_supplier.value.trim() || null } }));
    f.password.value = "";
    if (!out) { $("#approve-message").focus(); return; }
    await refresh();
    $("#approval-line").focus();
  });
  $("#reject-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target.elements;
    const out = await act("#approve-message", () => api("POST", `/qualification/requalifications/${view.record.id}/reject`,
                                                       { json: { reason: f.reason.value.trim() } }));
    if (!out) return;
    f.reason.value = "";
    await refresh();
  });
  $("#start-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target.elements;
    const r = await act("#start-message", () => api("POST", "/qualification/requalifications", { json: {
      scope_id: Number(f.scope.value), risk_decision: f.risk.value, rationale: f.rationale.value.trim(),
      protocol: f.protocol.value.trim(), valid_until: f.valid_until.value } }));
    if (!r) return;
    say("#start-message", `${r.kind === "initial" ? "Initial qualification" : "Requalification"} ${r.id} started.`, "ok");
    await loadScopes();
    await open(r.id);
  });

  $("#a-type").replaceChildren(...TYPES.map(t => el("option", { value: t, text: words(t) })));
  amtrace.start({
    ready: () => { loadScopes(); },
    logout: () => { view = null; $("#record").hidden = true; },
  });
})();
