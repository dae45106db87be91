// Design approval: each iteration with its files, SHA-256 and software; the design engineer and the clinician
// each sign with their password again (P11 §11.200); quality engineers review without signing here.
"use strict";
(() => {
  const { $, el, api, say, session, fmtUtc, signatureItem, signatureLine } = amtrace;
  const SIGNERS = ["design_engineer", "clinician"];
  const words = r => r.replaceAll("_", " ");

  function signForm(row, me) {
    const id = `sign-${row.iteration_id}`;
    const form = el("form", { class: "sign", id, autocomplete: "off", "aria-labelledby": `${id}-title` },
      el("h4", { id: `${id}-title`, text: `Sign as ${words(me.role)}: approve iteration ${row.number}` }),
      el("p", { class: "hint", text: `Signing as ${me.name} (${me.full_name}). Your signature means "approved" and ` +
                                     `binds to content SHA-256 ${row.content_sha256}.` }),
      el("label", { for: `${id}-password`, text: "Password (entered again to sign)" }),
      el("input", { id: `${id}-password`, name: "password", type: "password", required: true }),
      el("button", { type: "submit", class: "button primary big", text: "Sign: approved" }),
      el("p", { class: "message", role: "alert", hidden: true }));
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const box = form.querySelector(".message");
      let sig;
      try {
        sig = await api("POST", `/designs/iterations/${row.iteration_id}/signatures`,
                        { json: { password: form.elements.password.value } });
      } catch (e) {
        form.elements.password.value = "";
        say(box, e.message);
        form.elements.password.focus();
        return;
      }
      await load();
      const now = document.getElementById(`iteration-${row.iteration_id}`);
      const result = now.querySelector("[data-result]");
      say(result, `${signatureLine(sig)}.`, "ok");
      result.focus();
    });
    return form;
  }

  function card(row, me) {
    const done = row.status === "approved";
    const state = done ? "Approved: design engineer and clinician have both signed." :
      `Waiting for the signature of: ${row.awaiting.map(words).join(" and ")}.`;
    const article = el("article", { class: "iteration", id: `iteration-${row.iteration_id}`,
                                    "data-iteration": row.iteration_id },
      el("h3", {}, `${row.design_name} · iteration ${row.number}`,
         el("span", { class: "hint", text: ` case ${row.case_id}` })),
      el("p", {}, el("span", { class: `badge ${row.status}`, text: row.status }), " ",
         el("span", { class: "approval-state", text: state })),
      el("dl", { class: "facts" },
        el("dt", { text: "Product family" }), el("dd", { text: row.product_family }),
        el("dt", { text: "Category" }), el("dd", { text: words(row.regulatory_category) }),
        el("dt", { text: "Design software" }), el("dd", { class: "software", text: row.software }),
        el("dt", { text: "Change note" }), el("dd", { text: row.change_note }),
        el("dt", { text: "Content SHA-256" }), el("dd", { class: "mono", text: row.content_sha256 }),
        el("dt", { text: "Uploaded" }), el("dd", { text: fmtUtc(row.created_at) })),
      el("table", { class: "files" },
        el("thead", {}, el("tr", {}, el("th", { text: "File" }), el("th", { text: "SHA-256" }),
                                      el("th", { text: "Size" }))),
        el("tbody", {}, row.files.map(f => el("tr", {}, el("td", { text: f.file_name }),
          el("td", { class: "mono", text: f.sha256 }), el("td", { text: `${f.size_bytes.toLocaleString("en-GB")} bytes` }))))),
      el("h4", { text: "Signatures" }),
      row.signatures.length ? el("ul", { class: "signatures" }, row.signatures.map(signatureItem)) :
        el("p", { class: "hint no-signatures", text: "Not signed yet." }),
      el("p", { class: "message", "data-result": "", tabindex: "-1", role: "status", hidden: true }));
    const mine = row.signatures.find(s => s.signer_role === me.role);
    if (!done && SIGNERS.includes(me.role) && row.awaiting.includes(me.role)) article.append(signForm(row, me));
    else if (mine) article.append(el("p", { class: "hint", text: `You signed this iteration.` }));
    return article;
  }

  async function load() {
    const me = session().me;
    let rows;
    try { rows = await api("GET", "/design-approvals"); } catch (e) { say("#approvals-role", e.message); return; }
    const awaiting = rows.filter(r => r.status === "draft"), approved = rows.filter(r => r.status === "approved");
    $("#awaiting").replaceChildren(...(awaiting.length ? awaiting.map(r => card(r, me)) :
      [el("p", { class: "hint", text: "No design iteration is waiting for approval." })]));
    $("#approved").replaceChildren(...(approved.length ? approved.map(r => card(r, me)) :
      [el("p", { class: "hint", text: "No approved iteration yet." })]));
  }

  amtrace.start({
    ready: me => {
      say("#approvals-role", SIGNERS.includes(me.role) ?
        `You sign as ${words(me.role)}. An iteration is approved when the design engineer and the clinician have both signed.` :
        "You review here; the design engineer and the clinician sign. An iteration is approved when both have signed.", "info");
      load();
    },
    logout: () => { $("#awaiting").replaceChildren(); $("#approved").replaceChildren(); },
  });
})();
