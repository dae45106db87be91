// Quality engineer: versions of the validated cycle recipes (steam, EtO, radiation, heat treatment, cleaning) with
// their validated window; a draft is approved with the password again (P11 §11.200), shown with its signature.
"use strict";
(() => {
  const { $, el, api, say, session, fmtUtc, signatureLine } = amtrace;
  const words = s => String(s).replaceAll("_", " ");
  const value = v => Array.isArray(v) ? v.join(" – ") : (v !== null && typeof v === "object") ? JSON.stringify(v) : String(v);

  function signForm(r) {
    const id = `approve-${r.id}`;
    const form = el("form", { class: "sign", id, autocomplete: "off", "aria-labelledby": `${id}-title` },
      el("h4", { id: `${id}-title`, text: `Approve ${r.name} v${r.version}` }),
      el("p", { class: "hint", text: `Signing as ${session().me.name}. Your signature means "approved" and binds to ` +
                                     `content SHA-256 ${r.content_sha256}.` }),
      el("label", { for: `${id}-password`, text: "Password (entered again to sign)" }),
      el("input", { id: `${id}-password`, name: "password", type: "password", required: true }),
      el("button", { type: "submit", class: "button primary big", text: "Sign: approved" }),
      el("p", { class: "message", role: "alert", hidden: true }));
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      try {
        await api("POST", `/cycles/recipes/${r.id}/approve`, { json: { password: form.elements.password.value } });
      } catch (e) {
        form.elements.password.value = "";
        say(form.querySelector(".message"), e.message);
        form.elements.password.focus();
        return;
      }
      await load();
      const line = document.querySelector(`#recipe-${r.id} .approval`);
      if (line) line.focus();
    });
    return form;
  }

  function card(r) {
    const article = el("article", { class: "recipe", id: `recipe-${r.id}`, "data-recipe": `${r.name} v${r.version}` },
      el("h3", {}, `${r.name} v${r.version} `, el("span", { class: `badge ${r.state}`, "data-state": r.state, text: r.state })),
      el("dl", { class: "facts" },
        el("dt", { text: "Process" }), el("dd", { text: words(r.process) }),
        el("dt", { text: "Created" }), el("dd", { text: fmtUtc(r.created_at) }),
        el("dt", { text: "Content SHA-256" }), el("dd", { class: "mono", text: r.content_sha256 })),
      el("h4", { text: "Validated window" }),
      el("dl", { class: "facts window" }, Object.entries(r.parameters).filter(([k]) => k !== "process").flatMap(([k, v]) =>
        [el("dt", { text: words(k) }), el("dd", { "data-param": k, text: value(v) })])));
    if (r.approval) article.append(el("p", { class: "locked approval", tabindex: "-1", text: `${signatureLine(r.approval)}.` }));
    else if (r.state === "draft") article.append(signForm(r));
    return article;
  }

  async function load() {
    let rows;
    try { rows = await api("GET", "/recipe-approvals"); } catch (e) { say("#recipes-message", e.message); return; }
    const drafts = rows.filter(r => r.state === "draft").length;
    say("#recipes-message", `${rows.length} recipe version${rows.length === 1 ? "" : "s"}; ${drafts} waiting for approval.`, "info");
    $("#recipes").replaceChildren(...rows.map(card));
  }

  amtrace.start({ ready: load, logout: () => $("#recipes").replaceChildren() });
})();
