// Audit trail review and chain verification (quality engineers, administrators).
"use strict";
(() => {
  const { $, el, api, say, fmtTime } = amtrace;

  function change(e) {
    const oldV = e.old_values === "{}" ? "" : `before ${e.old_values}`;
    const newV = e.new_values === "{}" ? "" : `after ${e.new_values}`;
    return [oldV, newV, e.reason ? `reason: ${e.reason}` : ""].filter(Boolean).join("\n");
  }

  async function verify(expectHead) {
    let r;
    try { r = await api("GET", "/audit/verify", { query: expectHead ? { expect_head: expectHead } : undefined }); }
    catch (e) { say("#verify-result", e.message); return null; }
    // Only nodes: replaceChildren writes a null as the text "null".
    $("#verify-result").replaceChildren(...[
      el("p", { class: "message " + (r.ok ? "ok" : "error"), "data-verified": r.ok ? "intact" : "broken",
                text: r.ok ? `Intact: ${r.entries_checked} entries, ${r.signatures_checked} signatures and ` +
                             `${r.rows_checked} record rows checked.` :
                             `Broken in ${r.breaks.length} place${r.breaks.length === 1 ? "" : "s"}:` }),
      r.ok ? null : el("ul", { class: "reasons warn" }, r.breaks.map(b => el("li", { text: b.problem }))),
      el("p", { class: "hint", text: `Head: entry ${r.head_seq}, hash ${r.head_hash}. Keep this hash outside ` +
                                     `the database and enter it next time to detect deleted newest entries.` }),
    ].filter(Boolean));
    return r;
  }

  async function entries(recordType, recordId) {
    const query = { limit: 200 };
    if (recordType) query.record_type = recordType;
    if (recordId) query.record_id = recordId;
    if (!recordType && !recordId) {  // newest page first when not looking at one record
      const head = await api("GET", "/audit/verify").catch(() => null);
      if (head) query.after_seq = Math.max(0, head.head_seq - 200);
    }
    let rows;
    try { rows = await api("GET", "/audit/entries", { query }); } catch (e) { say("#entries-message", e.message); return; }
    say("#entries-message", rows.length ? "" : "No entries for this record.", "info");
    $("#entries").replaceChildren(...rows.reverse().map(e => el("tr", { "data-seq": e.seq },
      el("td", { text: e.seq }), el("td", { text: fmtTime(e.at) }), el("td", { text: e.actor }),
      el("td", { text: e.action.replaceAll("_", " ") }), el("td", { text: `${e.record_type} ${e.record_id}` }),
      el("td", { class: "pre", text: change(e) }))));
  }

  $("#verify-form").addEventListener("submit", ev => { ev.preventDefault(); verify(ev.target.elements.expect_head.value.trim()); });
  $("#entries-form").addEventListener("submit", ev => {
    ev.preventDefault();
    entries(ev.target.elements.record_type.value.trim(), ev.target.elements.record_id.value.trim());
  });
  amtrace.start({ ready: () => { entries(); } });
})();
