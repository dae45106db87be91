// Delivery (R17). Production puts released devices on a delivery list for one clinician and dispatches it with
// a signature (each device's delivery signed as performed); the case's clinician, or their delegate, reads the
// label data and the device history record and signs for the list on receipt. Either prints the list (PDF with
// each UDI as a GS1-128 barcode).
"use strict";
(() => {
  const { $, el, api, blob, say, session, fmtUtc, fmtDay, signatureLine } = amtrace;
  const plural = (n, w) => `${n} ${w}${n === 1 ? "" : "s"}`;
  const manifest = m => m ? signatureLine({ ...m, signer_role: m.role }) + "." : "";

  async function openPdf(path, box) {
    let r;
    try { r = await blob(path); } catch (e) { say(box, e.message); return; }
    window.open(URL.createObjectURL(await r.blob()), "_blank", "noopener");
  }

  function signForm(list, me, kind) {
    const id = `${kind}-${list.id}`;
    const dispatch = kind === "dispatch";
    const form = el("form", { class: "sign", id, autocomplete: "off", "aria-labelledby": `${id}-title` },
      el("h4", { id: `${id}-title`, text: dispatch ? `Dispatch delivery list ${list.id}` :
                                                     `Sign for delivery list ${list.id}` }),
      el("p", { class: "hint", text: dispatch ?
        `Signing as ${me.full_name}: your signature means "performed" for the delivery of each device on the list; ` +
        `the labels are fixed as they are now and ${list.clinician} is told.` :
        `Signing as ${me.full_name}: your signature means "reviewed": each device received and accepted, bound to ` +
        `the list as dispatched (SHA-256 ${list.list_sha256}).` }));
    if (!dispatch) form.append(el("label", { for: `${id}-judgement`, text: "What you found on receipt" }),
      el("input", { id: `${id}-judgement`, name: "judgement", required: true, minlength: 3,
                    value: "received intact, labels checked" }));
    form.append(el("label", { for: `${id}-password`, text: "Password (entered again to sign)" }),
      el("input", { id: `${id}-password`, name: "password", type: "password", required: true }),
      el("button", { type: "submit", class: "button primary big", text: dispatch ? "Sign: dispatched" : "Sign: received" }),
      el("p", { class: "message", role: "alert", hidden: true }));
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const f = form.elements;
      try {
        await api("POST", `/shipments/${list.id}/${dispatch ? "dispatch" : "acceptance"}`, { json: dispatch ?
          { password: f.password.value } : { judgement: f.judgement.value, password: f.password.value } });
      } catch (e) {
        f.password.value = "";
        say(form.querySelector(".message"), e.message);
        f.password.focus();
        return;
      }
      await load();
      const now = document.querySelector(`#list-${list.id} h3`);
      if (now) now.focus();
    });
    return form;
  }

  function item(i, me) {
    const l = i.label;
    const facts = [["UDI", l.udi_hri], ["Intended use", l.intended_use], ["Anatomical site", l.anatomical_site],
                   ["Imaging date", fmtDay(l.imaging_date)], ["Design completed", fmtDay(l.design_completed_on)],
                   ["Surgery", fmtDay(l.surgery_date)], ["", l.statement]];
    const li = el("li", { class: "delivery-item", "data-device": i.device_code },
      el("h4", {}, `${i.device_code} · ${l.design} (iteration ${l.design_iteration}) `,
         el("span", { class: `badge ${i.delivery_state}`, "data-state": i.delivery_state, text: i.delivery_state })),
      el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v || "–" })])));
    if (i.dispatched) li.append(el("p", { class: "locked", text: `Dispatched: ${manifest(i.dispatched)}` }));
    if (i.accepted) li.append(el("p", { class: "locked received", text: `Received: ${manifest(i.accepted)}` }));
    if (me.role === "clinician") {
      const box = el("p", { class: "message", role: "alert", hidden: true });
      li.append(el("button", { type: "button", class: "button secondary", text: "Device history record (PDF)",
        onclick: () => openPdf(`/history/devices/${encodeURIComponent(i.device_code)}/dhr.pdf`, box) }), box);
    }
    return li;
  }

  function card(list, me) {
    const box = el("p", { class: "message", role: "alert", hidden: true });
    const article = el("article", { class: "shipment", id: `list-${list.id}`, "data-shipment": list.id },
      el("h3", { tabindex: "-1" }, `Delivery list ${list.id} to ${list.clinician}, ${list.institution} `,
         el("span", { class: `badge ${list.state}`, "data-state": list.state, text: list.state })),
      el("p", { class: "hint", text: [`Made ${fmtUtc(list.created_at)}`,
        list.dispatched_at && `dispatched ${fmtUtc(list.dispatched_at)}`,
        list.accepted_at && `received ${fmtUtc(list.accepted_at)}`, list.note].filter(Boolean).join(" · ") }),
      el("button", { type: "button", class: "button secondary", text: "Print delivery list (PDF)",
                     onclick: () => openPdf(`/shipments/${list.id}/delivery-list.pdf`, box) }), box,
      el("ul", { class: "delivery-items" }, list.items.map(i => item(i, me))));
    if (me.role === "production_manager" && list.state === "open") article.append(signForm(list, me, "dispatch"));
    if (me.role === "clinician" && list.state === "dispatched") article.append(signForm(list, me, "accept"));
    return article;
  }

  function readyRow(d) {
    const blocked = d.missing.length > 0;
    return el("tr", { "data-device": d.device_code },
      el("td", {}, el("input", { type: "checkbox", name: "device", value: d.device_code, disabled: blocked,
                                 "aria-label": `Put ${d.device_code} on the list` })),
      el("td", { class: "mono", text: d.device_code }), el("td", { text: d.design }),
      el("td", { text: d.clinician }), el("td", { text: d.institution }), el("td", { text: fmtDay(d.surgery_date) }),
      el("td", { text: blocked ? `missing: ${d.missing.join(", ")}` : "complete" }));
  }

  async function load() {
    const me = session().me;
    say("#delivery-role", me.role === "clinician" ?
      "Lists addressed to you or to a clinician you act for. Read each device's record, then sign for the list." :
      "Make a list of released devices for one clinician, print it, and dispatch it with your signature.", "info");
    $("#ready-card").hidden = me.role !== "production_manager";
    if (me.role === "production_manager") {
      let ready;
      try { ready = await api("GET", "/delivery/ready"); } catch (e) { say("#ready-message", e.message); return; }
      $("#ready").replaceChildren(...(ready.length ? ready.map(readyRow) :
        [el("tr", {}, el("td", { colspan: 7, text: "No released device is waiting." }))]));
    }
    let lists;
    try { lists = await api("GET", "/shipments"); } catch (e) { say("#lists-message", e.message); return; }
    say("#lists-message", lists.length ? plural(lists.length, "delivery list") : "No delivery list yet.", "info");
    $("#lists").replaceChildren(...lists.map(l => card(l, me)));
  }

  $("#ready-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const codes = [...document.querySelectorAll("#ready input[name=device]:checked")].map(c => c.value);
    if (!codes.length) { say("#ready-message", "Choose the devices for the list first."); return; }
    let list;
    try {
      list = await api("POST", "/shipments", { json: { device_codes: codes, note: $("#ready-note").value } });
    } catch (e) { say("#ready-message", e.message); return; }
    $("#ready-note").value = "";
    say("#ready-message", "");
    await load();
    const h = document.querySelector(`#list-${list.id} h3`);
    if (h) h.focus();
  });

  amtrace.start({ ready: load, logout: () => {
    $("#lists").replaceChildren(); $("#ready").replaceChildren(); $("#ready-card").hidden = true; } });
})();
