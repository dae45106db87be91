// Quality engineer: build history search, the device history record with its plots, JSON and PDF downloads.
"use strict";
(() => {
  const { $, el, api, blob, say, fmtTime, fmtDay } = amtrace;
  const SVG = "http://www.w3.org/2000/svg";
  let current = null;

  async function search(form) {
    const query = {};
    for (const name of ["device_code", "machine_id", "material_lot", "job", "status"]) {
      const v = form.elements[name].value.trim();
      if (v) query[name] = v;
    }
    if (form.elements.since.value) query.since = form.elements.since.value + "T00:00:00Z";
    if (form.elements.until.value) query.until = form.elements.until.value + "T23:59:59Z";
    let page;
    try { page = await api("GET", "/history/builds", { query }); } catch (e) { say("#search-message", e.message); return; }
    say("#search-message", `${page.total} build record${page.total === 1 ? "" : "s"} found.`, "info");
    $("#results").replaceChildren(...page.items.map(r => el("tr", { "data-device": r.device_code },
      el("td", { text: r.device_code }), el("td", { text: r.machine_id }), el("td", { text: `JOB-${r.job_id}` }),
      el("td", { text: r.material_lot }),
      el("td", { text: r.design_name ? `${r.design_name} it. ${r.design_iteration}` : "test coupon" }),
      el("td", { text: fmtTime(r.build_started_at) }), el("td", { text: r.status.replace("_", " ") }),
      el("td", {}, el("button", { type: "button", class: "button secondary", onclick: () => openDhr(r.device_code) },
                      `Open DHR`)))));
  }

  function plot(series) {
    const w = 640, h = 180, pad = 36;
    const t = series.times_ns, v = series.values;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${series.label} (${series.unit}) over the build`);
    svg.setAttribute("class", "plot");
    if (!t.length) return svg;
    const lim = Object.values(series.limits);
    // The min–max envelope of each interval: a one-sample spike shows even where the mean cannot.
    const lows = series.lows && series.lows.length === t.length ? series.lows : v;
    const highs = series.highs && series.highs.length === t.length ? series.highs : v;
    const lo = Math.min(...lows, ...lim), hi = Math.max(...highs, ...lim), t0 = t[0], t1 = t[t.length - 1] || t0 + 1;
    const x = tt => pad + (w - 2 * pad) * ((tt - t0) / Math.max(1, t1 - t0));
    const y = vv => h - pad - (h - 2 * pad) * ((vv - lo) / Math.max(1e-9, hi - lo));
    for (const e of series.excursions || []) {
      const band = document.createElementNS(SVG, "rect");
      const x0 = x(e.start_ns), x1 = Math.max(x0 + 2, x(Math.min(e.end_ns, t1)));
      band.setAttribute("x", x0.toFixed(1)); band.setAttribute("width", (x1 - x0).toFixed(1));
      band.setAttribute("y", pad); band.setAttribute("height", h - 2 * pad);
      band.setAttribute("class", `plot-excursion ${e.severity}`);
      band.dataset.severity = e.severity; band.dataset.extreme = e.extreme;
      const tip = document.createElementNS(SVG, "title");
      tip.textContent = `${e.severity}: ${series.label} ${e.side === "high" ? "rose to" : "fell to"} ${e.extreme} ` +
                        `${series.unit} (limit ${e.limit}) at ${fmtTime(new Date(e.start_ns / 1e6).toISOString())}`;
      band.append(tip);
      svg.append(band);
    }
    const envelope = document.createElementNS(SVG, "polygon");
    envelope.setAttribute("points", [...t.map((tt, i) => `${x(tt).toFixed(1)},${y(highs[i]).toFixed(1)}`),
      ...t.map((tt, i) => `${x(tt).toFixed(1)},${y(lows[i]).toFixed(1)}`).reverse()].join(" "));
    envelope.setAttribute("class", "plot-envelope");
    svg.append(envelope);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", t.map((tt, i) => `${x(tt).toFixed(1)},${y(v[i]).toFixed(1)}`).join(" "));
    line.setAttribute("class", "plot-line");
    svg.append(line);
    for (const [name, value] of Object.entries(series.limits)) {
      const l = document.createElementNS(SVG, "line");
      l.setAttribute("x1", pad); l.setAttribute("x2", w - pad); l.setAttribute("y1", y(value)); l.setAttribute("y2", y(value));
      l.setAttribute("class", name.startsWith("alarm") ? "plot-alarm" : "plot-warn");
      svg.append(l);
    }
    for (const [text, yy] of [[`${hi.toFixed(1)}`, pad], [`${lo.toFixed(1)}`, h - pad]]) {
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", 2); label.setAttribute("y", yy); label.textContent = text;
      svg.append(label);
    }
    // A time axis: start, middle and end of the plotted span in UTC (a plot without one cannot be read against
    // the events and gaps listed beside it).
    for (const [tt, anchor] of [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]) {
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", x(tt)); label.setAttribute("y", h - 8); label.setAttribute("text-anchor", anchor);
      label.setAttribute("class", "plot-time");
      label.textContent = new Date(tt / 1e6).toISOString().slice(11, 16) + (anchor === "end" ? " UTC" : "");
      svg.append(label);
    }
    return svg;
  }

  function sig(s) { return s ? `${s.printed_name} (${s.role}), ${s.meaning}, ${fmtTime(s.signed_at)}` : "–"; }

  async function openDhr(code) {
    let d;
    say("#dhr-message", "Loading the device history record…", "info");
    $("#dhr").hidden = false;
    try { d = await api("GET", `/history/devices/${encodeURIComponent(code)}/dhr`); }
    catch (e) { say("#dhr-message", e.message); return; }
    current = { code, data: d };
    say("#dhr-message", "");
    $("#dhr-title").textContent = `Device history record of ${code}`;
    const pm = d.process_monitoring;
    $("#dhr-body").replaceChildren(
      el("dl", { class: "facts" },
        el("dt", { text: "Device" }), el("dd", { text: `${d.device.device_code} · ${d.device.status}` +
                                               (d.device.udi_hri ? ` · ${d.device.udi_hri}` : "") }),
        d.case ? [el("dt", { text: "Case" }), el("dd", { text: `${d.case.patient_ref} (pseudonymous) · ${d.case.institution} · surgery ${fmtDay(d.case.surgery_date)}` })] : null,
        d.design ? [el("dt", { text: "Design" }), el("dd", { text: `${d.design.name} iteration ${d.design.iteration} (${d.design.status}); approved by ${d.design.approvals.map(sig).join("; ") || "nobody"}` })] : null,
        d.machine ? [el("dt", { text: "Machine" }), el("dd", { text: `${d.machine.machine_id} · ${d.machine.manufacturer} ${d.machine.model} · software ${d.machine.software_at_build || "–"}` })] : null),
      el("h3", { text: "Stages" }),
      el("table", {}, el("thead", {}, el("tr", {}, ["Stage", "State", "Result", "Performed", "Accepted"].map(t => el("th", { text: t })))),
        el("tbody", {}, (d.stages || []).map(s => el("tr", {}, el("td", { text: s.stage.replace("_", "-") }),
          el("td", { text: s.state.replace("_", " ") }), el("td", { text: s.result || "" }), el("td", { text: sig(s.performed) }),
          el("td", { text: sig(s.accepted) }))))),
      el("h3", { text: "Process monitoring" }),
      pm ? el("p", { id: "pm-source", class: "hint", text: pm.source === "live"
        ? `Computed live from InfluxDB for this view: provisional until the device is released and sealed.${pm.note ? " " + pm.note : ""}`
        : `Stored at release (computed ${fmtDay(pm.computed_at)}, SHA-256 ${(pm.summary_sha256 || "").slice(0, 12)}…, checked against the audit trail).` }) : null,
      pm ? el("table", { id: "signals" }, el("thead", {}, el("tr", {}, ["Signal", "Unit", "Samples", "Min", "Max", "Mean", "Outside alarm (s)"].map(t => el("th", { text: t })))),
        el("tbody", {}, pm.signals.map(s => s.samples ? el("tr", { "data-signal": s.signal }, el("td", { text: s.signal }), el("td", { text: s.unit }),
          el("td", { text: s.samples }), el("td", { text: s.min }), el("td", { text: s.max }),
          el("td", { text: s.mean == null ? "–" : s.mean.toFixed(2) }), el("td", { text: s.seconds_outside_alarm }))
          // A signal the machine map has but that sent nothing during the build: said, not a blank row.
          : el("tr", { "data-signal": s.signal, class: "no-data" }, el("td", { text: s.signal }), el("td", { text: s.unit }),
              el("td", { text: "0" }), el("td", { colspan: 4, text: "no data during the build" }))))) :
        el("p", { text: "No process data recorded." }),
      pm ? el("div", { class: "plots" }, pm.plots.map(p => el("figure", {}, plot(p),
        el("figcaption", { text: `${p.label} (${p.unit}); dashed lines: limits` })))) : null,
      (d.unrecorded_process_data || []).length ? el("div", { id: "unrecorded", class: "message warn" },
        el("p", { text: "Process data without a recorded cycle: a step may have run without its cycle record." }),
        el("ul", {}, d.unrecorded_process_data.map(u => el("li", { "data-machine": u.machine_id,
          text: `${u.machine_id} (${u.measurement}): ${fmtTime(u.start)} to ${fmtTime(u.end)}, ${u.minutes} minute(s) with data` })))) : null,
      (d.local_overrides || []).length ? el("div", { id: "local-overrides", class: "message warn" },
        el("p", { text: "Data tagged by a local override of the server's job context (each a nonconformity):" }),
        el("ul", {}, d.local_overrides.map(o => el("li", { "data-nc": o.nonconformity_id,
          text: `${o.machine_id || ""} job ${o.job}: ${fmtTime(o.start)} to ` +
                `${o.end ? fmtTime(o.end) : "not reported ended"} — ${o.reason} (NC ${o.nonconformity_id}, ${o.state})` })))) : null,
      (d.retained_samples || []).length ? el("div", { id: "retained-samples" }, el("h3", { text: "Retained samples of the job" }),
        el("ul", {}, d.retained_samples.map(x => el("li", { "data-sample": x.sample_id,
          text: `${x.device_code} (${x.kind}) ${x.state} — ${x.location}, ${x.condition}, kept until ${x.retain_until}; ${x.last_step}` })))) : null,
      d.archive ? el("p", { id: "archive", class: d.archive.state === "written" ? "" : "message warn",
        text: d.archive.state === "written"
          ? `Archive ${d.archive.archive_id} written ${fmtTime(d.archive.written_at)}: ${d.archive.files} files, ` +
            `${(d.archive.size_bytes / 1e6).toFixed(1)} MB, manifest SHA-256 ${d.archive.manifest_sha256}. ` +
            `Every point at full resolution: ${d.archive.full_resolution}.`
          : d.archive.state === "missing" ? `No archive written yet: ${d.archive.full_resolution}.`
          : `ARCHIVE DAMAGED: ${d.archive.problems.join("; ")}` }) : null,
      d.retention ? el("p", { id: "retention", text: `Records kept until ${d.retention.retain_until} ` +
        `(${d.retention.rule}: lifetime ${d.retention.lifetime_years} + ${d.retention.extra_years} years).` }) : null,
      el("div", { id: "data-gaps" }, el("h3", { text: "Data gaps" }),
        gapsOf(d.machine ? d.machine.machine_id : "the build machine", "the build", pm ? pm.data_gaps : []),
        (d.cycles || []).filter(c => c.ended_at).map(c =>
          gapsOf(c.machine_id, `cycle ${c.cycle_id} (${c.process.replace("_", " ")})`, c.data_gaps))));
  }

  // Never let "no gaps" be read from silence: each machine window says what its agent recorded.
  function gapsOf(machine, what, gaps) {
    if (!gaps || !gaps.length) {
      return el("p", { class: "gaps-none", text: `${machine} during ${what}: no data gaps recorded by its edge agent.` });
    }
    const lost = gaps.filter(g => g.outcome !== "recovered").length;
    return el("div", { class: "gaps" },
      el("p", { text: `${machine} during ${what}: ${gaps.length} data gap(s), ${lost} with values lost.` }),
      el("table", { class: "gap-table" }, el("thead", {}, el("tr", {}, ["From", "To", "Seconds", "Outcome", "Cause"].map(t => el("th", { text: t })))),
        el("tbody", {}, gaps.map(g => el("tr", { class: g.outcome === "recovered" ? "" : "gap-lost" },
          el("td", { text: fmtTime(g.start) }), el("td", { text: fmtTime(g.end) }), el("td", { text: g.seconds }),
          el("td", { text: g.outcome }), el("td", { text: g.cause }))))));
  }

  async function download(kind) {
    if (!current) return;
    const path = `/history/devices/${encodeURIComponent(current.code)}/dhr${kind === "pdf" ? ".pdf" : ""}`;
    let r;
    try { r = await blob(path); } catch (e) { say("#dhr-message", e.message); return; }
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: `DHR-${current.code}.${kind}` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say("#dhr-message", `Downloaded DHR-${current.code}.${kind}.`, "ok");
  }

  // Every retained sample (coupons and retained devices) with where it is and its last custody step.
  async function listSamples(form) {
    const query = {};
    if (form && form.elements.state.value) query.state = form.elements.state.value;
    let rows;
    try { rows = await api("GET", "/samples", { query }); } catch (e) { say("#samples-message", e.message); return; }
    say("#samples-message", `${rows.length} retained sample${rows.length === 1 ? "" : "s"}.`, "info");
    $("#sample-rows").replaceChildren(...rows.map(x => {
      const last = x.custody[x.custody.length - 1];
      return el("tr", { "data-sample": x.id, "data-device": x.device_code },
        el("td", { text: x.id }), el("td", { text: x.device_code }), el("td", { text: x.kind }),
        el("td", { text: `JOB-${x.job_id}` }), el("td", { text: x.location }), el("td", { text: x.condition }),
        el("td", { text: fmtDay(x.retain_until) }), el("td", { text: x.state }),
        el("td", { text: last ? `${last.action} ${fmtTime(last.at)}: ${last.reason}` : "" }));
    }));
  }

  $("#search-form").addEventListener("submit", ev => { ev.preventDefault(); search(ev.target); });
  $("#samples-form").addEventListener("submit", ev => { ev.preventDefault(); listSamples(ev.target); });
  $("#dl-json").addEventListener("click", () => download("json"));
  $("#dl-pdf").addEventListener("click", () => download("pdf"));
  amtrace.start({ ready: () => listSamples($("#samples-form")) });
})();
