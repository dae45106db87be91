// Live machine cards, shared by the production dashboard and the wall display: the machine's own phase, how long
// it has been silent, its key signals' last 30 minutes as sparklines (min–max band, last value, limit lines, points
// beyond a limit marked), and its alerts with their state (active / cleared with the time / one-off event).
"use strict";
amtrace.live = (() => {
  const { el, fmtTime } = amtrace;
  const SVG = "http://www.w3.org/2000/svg";
  const SILENT_AFTER_S = 30;  // server/live/schemas.py SILENT_AFTER_S
  const W = 180, H = 40;

  function svg(name, attrs, ...kids) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...kids);
    return node;
  }

  const time = ns => fmtTime(new Date(ns / 1e6).toISOString());
  const num = v => Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toPrecision(3);

  // A 30-minute sparkline; every point beyond a limit is a red dot, so a one-minute spike is not lost.
  function sparkline(t) {
    const pts = t.points;
    const lim = t.limits || {};
    const values = pts.flatMap(p => [p[1], p[2]]).concat(Object.values(lim));
    const lo = Math.min(...values), hi = Math.max(...values);
    const span = hi - lo || 1;
    const t1 = pts.length ? pts[pts.length - 1][0] : 0, t0 = t1 - 29 * 60;
    const x = s => ((s - t0) / (29 * 60)) * (W - 4) + 2;
    const y = v => H - 2 - ((v - lo) / span) * (H - 4);
    const kids = [];
    for (const [name, v] of Object.entries(lim)) {
      kids.push(svg("line", { x1: 0, x2: W, y1: y(v), y2: y(v),
                              class: name.startsWith("alarm") ? "limit alarm" : "limit warn" }));
    }
    if (pts.length) {
      const band = pts.map(p => `${x(p[0])},${y(p[2])}`).concat(pts.slice().reverse().map(p => `${x(p[0])},${y(p[1])}`));
      kids.push(svg("polygon", { points: band.join(" "), class: "band" }));
      kids.push(svg("polyline", { points: pts.map(p => `${x(p[0])},${y(p[3])}`).join(" "), class: "last" }));
      const beyond = (v, side) => (side === "high" ? ["alarm_high", "warn_high"] : ["alarm_low", "warn_low"])
        .some(k => lim[k] != null && (side === "high" ? v > lim[k] : v < lim[k]));
      for (const p of pts) {
        if (beyond(p[2], "high")) kids.push(svg("circle", { cx: x(p[0]), cy: y(p[2]), r: 2.5, class: "excursion" }));
        if (beyond(p[1], "low")) kids.push(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, class: "excursion" }));
      }
    }
    const last = pts.length ? pts[pts.length - 1] : null;
    const peak = pts.length ? [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[2]))] : null;
    const label = `${t.signal}: ` + (last ? `${num(last[3])} ${t.unit}` : "no value in the last 30 min");
    const summary = peak ? `30 min min ${num(peak[0])}, max ${num(peak[1])} ${t.unit}` : "";
    return el("figure", { class: "trend", "data-trend": t.signal },
      el("figcaption", {}, el("span", { text: label }), " ", el("span", { class: "hint", text: summary })),
      svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                   "aria-label": `${t.signal} over the last 30 minutes; ${summary}` }, ...kids));
  }

  function alertItem(a) {
    const sev = a.severity === "alarm" ? "ALARM" : "warning";
    if (a.state === "active") {
      return el("li", { class: `alert active ${a.severity}`, "data-alert-state": "active", "data-key": a.key || "" },
        `${sev} since ${time(a.since_ns || a.ts_ns)}: ${a.message}`);
    }
    if (a.state === "cleared") {
      return el("li", { class: "alert cleared", "data-alert-state": "cleared", "data-key": a.key || "" },
        `cleared ${time(a.cleared_ns)} (${sev} from ${time(a.since_ns || a.ts_ns)}): ${a.message}`);
    }
    return el("li", { class: `alert event ${a.severity}`, "data-alert-state": "event" },
      `${time(a.ts_ns)} ${sev}: ${a.message}`);
  }

  // Every active alert; of the cleared ones and events only the newest few, so a card stays readable.
  const KEEP_PAST = 3;
  const shownAlerts = alerts => alerts.filter(a => a.state === "active")
    .concat(alerts.filter(a => a.state !== "active").slice(0, KEEP_PAST));
  const hiddenCount = alerts => Math.max(0, alerts.filter(a => a.state !== "active").length - KEEP_PAST);

  // What the machine is doing in its own word (heating, holding, washing, printing …) when it says it.
  function stateWord(live) {
    if (!live) return "unknown";
    if (live.state === "offline" || !live.phase) return live.state;
    return live.phase.toLowerCase().replaceAll("_", " ");
  }

  function silence(live) {
    if (!live || live.stale || !live.connected) return null;
    if (live.last_data_ns == null) return "no data since the agent started";
    const s = Math.round(Date.now() / 1000 - live.last_data_ns / 1e9);
    return s > SILENT_AFTER_S ? `no data for ${s} s` : null;
  }

  // m: a DashboardOverview machine (id, name, scopes, live …); extra: nodes the caller adds (scopes, NCs).
  function machineCard(m, extra) {
    const live = m.live;
    const state = live ? live.state : "unknown";
    const silent = silence(live);
    const alerts = live ? live.alerts : [];
    const card = el("article", { class: "machine", id: `machine-${m.id}`, "data-machine": m.id },
      el("h3", {}, m.id, " ", el("span", { class: "hint", text: m.name })),
      el("p", {}, el("span", { class: `badge ${state}`, "data-live-state": state, "data-phase": live && live.phase || "",
                               text: stateWord(live) }),
        live && live.job ? ` job ${live.job}` : ""),
      el("p", { class: "silence", "data-silence": "", hidden: silent ? null : "", text: silent || "" }),
      live && live.stale ? el("p", { class: "silence", text: `agent ${live.agent} silent since ${fmtTime(live.received_at)}` }) : null,
      live && live.layer != null && live.layers_total ? [
        el("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                    "aria-valuenow": live.progress_pct, "aria-label": `Build progress of ${m.id}` },
          el("span", { style: null })),
        el("p", { class: "layer", text: `Layer ${live.layer} of ${live.layers_total} (${live.progress_pct} %)` })] : null,
      live && live.trends && live.trends.length ? el("div", { class: "trends" }, live.trends.map(sparkline)) : null,
      alerts.length ? el("ul", { class: "alerts" }, shownAlerts(alerts).map(alertItem)) : null,
      hiddenCount(alerts) ? el("p", { class: "hint", text: `+ ${hiddenCount(alerts)} more cleared or past in the last 30 min` }) : null,
      el("p", { class: "hint", text: `Software ${(live && live.software_revision) || m.software_revision || "not reported"}` +
                                    (live ? ` · last report ${fmtTime(live.received_at)}` : " · no live report yet") }),
      extra || null);
    const bar = card.querySelector(".progress > span");
    if (bar) bar.style.width = `${live.progress_pct}%`;  // CSSOM, allowed by the style-src 'self' policy
    card._live = live;
    return card;
  }

  // "no data for N s" counts on between reports.
  setInterval(() => {
    for (const card of document.querySelectorAll(".machine[data-machine]")) {
      const p = card.querySelector("[data-silence]");
      if (!p) continue;
      const s = silence(card._live);
      p.textContent = s || "";
      p.hidden = !s;
    }
  }, 1000);

  // The live stream: calls onMachine(id, live) for the snapshot and every change; says the state of the link in
  // the status line (never "Live" once the stream or the session has ended). token(): the bearer token to use.
  async function listen(opts) {
    const { path = "/live/machines/stream", token, onMachine, status, signal, onEnded } = opts;
    let ended = null, refused = false;
    const aborted = await amtrace.sse(path, (name, data) => {
      if (name === "snapshot") for (const [id, live] of Object.entries(data)) onMachine(id, live);
      else if (name === "machine") onMachine(data.machine_id, data);
      else if (name === "session_ended") ended = data;
    }, signal, r => {
      refused = !r.ok;
      if (!r.ok) {
        r.clone().json().then(body => onEnded({ code: body.code, detail: body.detail, status: r.status }))
          .catch(() => onEnded({ code: "refused", detail: `Live updates refused (${r.status}).`, status: r.status }));
      } else status("Live: machine states update by themselves.", "ok");
    }, token);
    if (aborted || refused) return "stopped";
    if (ended) { onEnded(ended); return "ended"; }
    status("Live updates interrupted; reconnecting…", "error");
    return "broken";
  }

  return { machineCard, sparkline, listen, stateWord };
})();
