// The operator kiosk: scan a code, see the verdict with every reason, request the start, record and sign steps
// with the PIN, report a problem. Everything is reachable with the keyboard (a barcode scanner is a keyboard).
"use strict";
(() => {
  const { $, el, api, say, fmtTime, fmtDay } = amtrace;
  let view = null;

  const STATE_WORDS = { pending: "waiting", in_progress: "in progress", completed: "done, waiting for review",
                        accepted: "accepted" };

  async function lookup(code) {
    say("#scan-message", "");
    try {
      view = await api("GET", "/kiosk/lookup", { query: { code } });
    } catch (e) {
      $("#result").hidden = true;
      say("#scan-message", e.message);
      return;
    }
    render();
    // An operator who scans a job is at its machine: the edge agent may then name them when it asks the release
    // gate for this job. Other roles are not operators of the build: the server refuses them, which changes nothing.
    if (view.job) api("POST", `/kiosk/jobs/${view.job.id}/presence`).catch(() => {});
  }

  function render() {
    $("#result").hidden = false;
    const v = view.verdict;
    const box = $("#verdict");
    box.className = "verdict " + (v.cleared ? "cleared" : "blocked");
    $("#verdict-title").textContent = v.cleared ? "✔ Cleared to build" : "✖ Not cleared to build";
    const reasons = $("#verdict-reasons");
    reasons.replaceChildren(...v.reasons.map(r => el("li", { "data-code": r.code, text: r.message })));

    const live = view.machine.live;
    const liveText = live ? `${live.state}${live.layer != null && live.layers_total ?
      ` · layer ${live.layer} of ${live.layers_total}` : ""}` : "no report from the machine";
    const facts = [
      ["Machine", `${view.machine.id} · ${view.machine.manufacturer} ${view.machine.model}`],
      ["Room", `${view.machine.site} / ${view.machine.room}`],
      ["Software", view.machine.software_revision || "not reported"],
      ["Now", liveText],
      ["Job", `${view.job.label} · ${view.job.state}`],
      ["Process", `${view.job.process} · ${view.job.material} · ${view.job.product_family}`],
    ];
    $("#job-facts").replaceChildren(...facts.flatMap(([k, val]) => [el("dt", { text: k }), el("dd", { text: val })]));
    const start = $("#start-button");
    start.disabled = !(v.cleared && view.job.state === "planned");
    start.textContent = view.job.state === "planned" ? "Request start" : `Job is ${view.job.state}`;

    const checks = view.build_file_checks;
    $("#file-checks").replaceChildren(...(checks.length ? checks.map(c => el("div",
      { class: "filecheck " + (c.identical ? "ok" : "bad") },
      el("p", { class: "filecheck-title", text: (c.identical ? "✔ Identical to the approved design" :
                                                                "✖ Different from the approved design") }),
      el("p", { text: c.file_name }),
      el("p", { class: "hint", text: c.detail || "" }),
      el("p", { class: "hint", text: `Checked ${fmtTime(c.checked_at)} · SHA-256 ${c.sha256.slice(0, 12)}…` }))) :
      [el("p", { class: "filecheck bad", text: "Not checked yet: load the build file on the machine." })]));

    $("#devices").replaceChildren(...view.devices.map(deviceCard));
  }

  function deviceCard(d) {
    const card = el("article", { class: "device", "data-device": d.device_code },
      el("h3", {}, d.device_code, d.kind === "coupon" ? " (test coupon)" : ""),
      d.udi_hri ? el("p", { class: "hint", text: d.udi_hri }) : null,
      el("p", { class: "stage-now", text: d.current_stage ? `Now: ${d.current_stage}` : "All steps accepted" }),
      d.open_nonconformities.length ? el("ul", { class: "reasons warn" },
        d.open_nonconformities.map(t => el("li", { text: t }))) : null,
      el("ol", { class: "steps" }, d.steps.map(s => el("li", { class: "step " + s.state, "data-stage": s.stage },
        el("span", { class: "step-name", text: s.label }),
        el("span", { class: "step-state", text: STATE_WORDS[s.state] + (s.overdue ? " · OVERDUE" : "") }),
        el("span", { class: "hint", text: `due ${fmtTime(s.deadline)}` })))));
    for (const s of d.steps) {
      if (s.startable) {
        card.append(el("button", { type: "button", class: "button primary big", "data-start-step": s.id,
                                   onclick: () => startStep(s) }, `Start ${s.label.toLowerCase()}`));
      }
      if (s.signable) card.append(signForm(d, s));
    }
    return card;
  }

  function signForm(d, s) {
    const id = `s${s.id}`;
    const form = el("form", { class: "sign", "data-sign-step": s.id, autocomplete: "off" },
      el("h4", { text: `Record ${s.label.toLowerCase()} of ${d.device_code}` }),
      el("label", { for: `${id}-cycle`, text: "Cycle or batch number" }),
      el("input", { id: `${id}-cycle`, name: "cycle", required: true }),
      el("label", { for: `${id}-outcome`, text: "Result" }),
      el("select", { id: `${id}-outcome`, name: "outcome" },
        el("option", { value: "passed", text: "Passed: within the validated limits" }),
        el("option", { value: "failed", text: "Failed: outside the limits or stopped" })),
      el("label", { for: `${id}-note`, text: "Notes (optional)" }),
      el("input", { id: `${id}-note`, name: "note" }),
      el("label", { for: `${id}-pin`, text: "Your PIN, to sign as performed" }),
      el("input", { id: `${id}-pin`, name: "pin", type: "password", inputmode: "numeric", required: true }),
      el("button", { type: "submit", class: "button primary big" }, "Sign"),
      el("p", { class: "message", role: "alert", hidden: true }));
    form.addEventListener("submit", ev => { ev.preventDefault(); sign(form, s); });
    return form;
  }

  async function sign(form, s) {
    const f = form.elements;
    const result = `${s.label} cycle ${f.cycle.value.trim()}: ${f.outcome.value}` +
                   (f.note.value.trim() ? `. ${f.note.value.trim()}` : "");
    const msg = form.querySelector(".message");
    try {
      await api("POST", `/kiosk/steps/${s.id}/complete`, { json: { result, pin: f.pin.value } });
    } catch (e) {
      f.pin.value = "";
      say(msg, e.message);
      f.pin.focus();
      return;
    }
    const code = view.scanned;
    await lookup(code);
    say("#start-message", `${s.label} signed as performed. It now waits for review.`, "ok");
    $("#code").focus();
  }

  async function startStep(s) {
    try {
      await api("POST", `/kiosk/steps/${s.id}/start`);
    } catch (e) { say("#start-message", e.message); return; }
    await lookup(view.scanned);
    const first = document.querySelector(`[data-sign-step="${s.id}"] input`);
    if (first) first.focus();
  }

  async function requestStart() {
    let out;
    try { out = await api("POST", `/kiosk/jobs/${view.job.id}/start-request`); }
    catch (e) { say("#start-message", e.message); return; }
    await lookup(view.scanned);
    if (out.verdict.cleared) {
      say("#start-message", `Start cleared for ${view.job.label} (gate decision ${out.verdict.recorded_decision_id}). ` +
                            `Build started for ${out.started_devices.join(", ") || "no new device"}.`, "ok");
    } else {
      say("#start-message", "The start was refused: " + out.verdict.reasons.map(r => r.message).join("; "));
    }
    $("#start-message").focus();
  }

  function openNc() {
    $("#nc-subject").textContent = `About ${view.scanned} (${view.job.label})`;
    say("#nc-message", "");
    $("#nc-dialog").showModal();
    $("#nc-kind").focus();
  }

  async function sendNc(ev) {
    ev.preventDefault();
    const form = $("#nc-form");
    const data = new FormData();
    data.set("code", view.scanned);
    data.set("kind", form.elements.kind.value);
    data.set("description", form.elements.description.value.trim());
    const photo = form.elements.photo.files[0];
    if (photo) data.set("photo", photo);
    let out;
    try { out = await api("POST", "/kiosk/nonconformities", { form: data }); }
    catch (e) { say("#nc-message", e.message); return; }
    $("#nc-dialog").close();
    form.reset();
    await lookup(view.scanned);
    say("#start-message", `Problem reported as nonconformity ${out.id}. The device is blocked until quality ` +
                          `decides.`, "ok");
  }

  $("#scan-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const code = $("#code").value.trim();
    say("#start-message", "");  // a message about the previous code must not stay under a new one
    if (code) lookup(code);
    $("#code").select();
  });
  $("#start-button").addEventListener("click", requestStart);
  $("#nc-button").addEventListener("click", openNc);
  $("#nc-form").addEventListener("submit", sendNc);
  $("#nc-cancel").addEventListener("click", () => $("#nc-dialog").close());
  $("#start-message").setAttribute("tabindex", "-1");

  amtrace.start({
    ready: () => { $("#code").focus(); },
    logout: () => { view = null; $("#result").hidden = true; $("#code").value = ""; say("#scan-message", "");
                     say("#start-message", ""); },
  });
})();
