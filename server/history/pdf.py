"""The device history record as PDF for people: readable tables, plots with limits drawn, and each signature's
manifestation (printed name, role, meaning, date and time) as 21 CFR 11.50 requires in print."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")  # no display on a server
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from reportlab.lib.pagesizes import A4  # noqa: E402
from reportlab.lib.units import mm  # noqa: E402
from reportlab.platypus import Image, SimpleDocTemplate, Spacer  # noqa: E402

from server.history.schemas import DeviceHistoryRecord, PlotSeries  # noqa: E402
from server.pdfkit import para as _p, signature as _sig, table as _table, text as _t  # noqa: E402

LIMIT_STYLE = {"warn": ("#d08000", "--"), "alarm": ("#c00000", "-")}


def _words(value: str | None) -> str | None:
    """An enumerated value (stage, state, kind) as words: "post_processing" is one unbreakable token in a narrow
    column and was split mid-word ("post_processi/ng")."""
    return value.replace("_", " ") if isinstance(value, str) else value


def _plot(series: list[PlotSeries], title: str) -> Image | None:
    series = [s for s in series if s.values]
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(7.2, 1.6 * len(series) + 0.4), sharex=True, squeeze=False)
    for ax, s in zip(axes[:, 0], series):
        times = [datetime.fromtimestamp(t / 1e9, tz=timezone.utc) for t in s.times_ns]
        if len(s.lows) == len(times) == len(s.highs):
            # The min–max envelope: a one-sample spike stays visible where the mean would hide it.
            ax.fill_between(times, s.lows, s.highs, color="#1f4e79", alpha=0.25, linewidth=0)
        for e in s.excursions:
            ax.axvspan(datetime.fromtimestamp(e.start_ns / 1e9, tz=timezone.utc),
                       datetime.fromtimestamp(e.end_ns / 1e9, tz=timezone.utc),
                       color=LIMIT_STYLE["alarm" if e.severity == "alarm" else "warn"][0], alpha=0.25, linewidth=0)
        ax.plot(times, s.values, linewidth=0.8, color="#1f4e79")
        for key, value in sorted(s.limits.items()):
            color, style = LIMIT_STYLE["alarm" if key.startswith("alarm") else "warn"]
            ax.axhline(value, color=color, linestyle=style, linewidth=0.8, label=f"{key} {value:g}")
        ax.set_ylabel(f"{s.label}\n{s.unit}".strip(), fontsize=7)
        ax.tick_params(labelsize=6)
        if s.limits:
            ax.legend(fontsize=5.5, loc="upper right")
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
    axes[-1, 0].set_xlabel("time (UTC)", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    buf.seek(0)
    width = 170 * mm
    return Image(buf, width=width, height=width * fig.get_figheight() / fig.get_figwidth())


def render_dhr_pdf(d: DeviceHistoryRecord) -> bytes:
    """Render the DHR to PDF bytes."""
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=15 * mm, title=f"Device history record {d.device.device_code}",
                            author="amtrace")
    h1, h2 = "Heading1", "Heading2"
    story: list = [_p(f"Device history record {d.device.device_code}", h1),
                   _p(f"Schema {d.schema_version}; generated {_t(d.generated_at)} by {d.generated_by}. "
                      f"Status: {d.device.status}.")]
    dev = d.device
    story += [_p("Device", h2), _table(["field", "value"], [
        ["device code", dev.device_code], ["UDI", dev.udi_hri], ["kind", _words(dev.kind)],
        ["regulatory category", _words(dev.regulatory_category)], ["position on plate", dev.position], ["job", d.job_id],
        ["build parameters", d.build_parameters]], [45, 135])]
    if d.case:
        story += [_p("Case (pseudonymous)", h2), _table(["patient reference", "institution", "clinician", "surgery"], [
            [d.case.patient_ref, d.case.institution, d.case.clinician, d.case.surgery_date]])]
    if d.design:
        g = d.design
        story += [_p("Design", h2), _table(["design", "iteration", "status", "software", "content SHA-256"], [
            [g.name, g.iteration, g.status, g.software, g.content_sha256]], [35, 18, 20, 35, 72]),
            Spacer(0, 2 * mm), _table(["file", "SHA-256", "bytes"], [[f.file_name, f.sha256, f.size_bytes]
                                                                     for f in g.files], [35, 120, 25]),
            Spacer(0, 2 * mm), _table(["approval signature"], [[_sig(s)] for s in g.approvals])]
    lot = d.material_lot
    story += [_p("Material lot", h2), _table(["lot", "material", "supplier", "certificate", "type", "reuse count"], [
        [lot.lot_number, lot.material, lot.supplier, lot.certificate_ref, lot.lot_type, lot.reuse_count]])]
    m = d.machine
    q = m.qualification_at_build or {}
    story += [_p("Machine at build time", h2), _table(["field", "value"], [
        ["machine", f"{m.machine_id}: {m.manufacturer} {m.model}, serial {m.serial_number}"],
        ["location", f"{m.site}, {m.room}"],
        ["software / firmware", f"{_t(m.software_at_build)} / {_t(m.firmware_at_build)}"],
        ["build preparation software", m.build_prep_software_at_build],
        ["qualification", f"{q.get('state', '—')} (scope {q.get('id', '—')}, valid until {q.get('valid_until', '—')})"]],
        [45, 135])]
    story += [_p("Build-file checks", h2), _table(["file", "SHA-256", "result", "detail", "checked"], [
        [c.file_name, c.sha256, "passed" if c.passed else "FAILED", c.detail, c.checked_at]
        for c in d.build_file_checks] or [["none recorded", "", "", "", ""]], [25, 60, 15, 45, 35])]
    story += [_p("Release gate", h2), _table(["decision", "allowed", "reasons", "decided", "asked by"], [
        [g.decision_id, "yes" if g.allowed else "no", "; ".join(r.get("message", "") for r in g.reasons) or "—",
         g.decided_at, g.requested_by] for g in d.release_gate] or [["none", "", "", "", ""]], [18, 15, 77, 35, 35])]
    pm = d.process_monitoring
    if pm.source == "stored at release":
        source = (f"Summary stored at release: computed from InfluxDB on {_t(pm.computed_at)}, SHA-256 "
                  f"{pm.summary_sha256} (in the audit chain).")
    else:
        source = "Summary LIVE: computed from InfluxDB for this document; provisional until the device is released."
        if pm.note:
            source += f" {pm.note}."
    story += [_p("Process monitoring", h2), _p(f"Build from {_t(pm.start)} to {_t(pm.end)}. {source}"),
              _table(["signal", "unit", "samples", "min", "max", "mean", "s outside warn", "s outside alarm"], [
                  [s.signal, s.unit, s.samples, s.min, s.max, s.mean, s.seconds_outside_warning,
                   s.seconds_outside_alarm] if s.samples else
                  # A mapped signal that sent nothing during the build is said, not left out.
                  [s.signal, s.unit, 0, "no data", "no data", "no data", "—", "—"]
                  for s in pm.signals], [38, 14, 18, 20, 20, 20, 25, 25])]
    img = _plot(pm.plots, f"Build {d.job_id} on {m.machine_id}: key signals with limits")
    if img:
        story += [Spacer(0, 2 * mm), img]
    if pm.events:
        story += [_p("Events", "Heading3"), _table(["time", "kind", "severity", "message"], [
            [e.at, _words(e.kind), e.severity, e.message] for e in pm.events], [35, 25, 18, 102])]
    story += [_p("Data gaps", "Heading3"), _p(_gaps_text(pm.data_gaps, m.machine_id, "the build")),
              *_gaps_table(pm.data_gaps)]
    story.append(_p("Post-processing, cleaning and sterilization cycles", h2))
    for c in d.cycles:
        story += [_p(f"Cycle {c.cycle_id}: {c.process.replace('_', ' ')} on {c.machine_id}, recipe {c.recipe} "
                     f"v{c.recipe_version}, {_t(c.started_at)} to {_t(c.ended_at)}. Verdict: "
                     f"{(c.verdict or 'not evaluated').upper()}. Load: {', '.join(c.load)}. "
                     f"Performed: {_sig(c.performed_by)}."),
                  _table(["criterion", "measured", "limit", "result", "reason"], [
                      [k["name"], k["measured"], k["limit"], "pass" if k["passed"] else "FAIL", k["reason"]]
                      for k in c.criteria], [40, 18, 30, 12, 80])]
        img = _plot(c.plot, f"Cycle {c.cycle_id} ({c.recipe} v{c.recipe_version})")
        if img:
            story += [Spacer(0, 2 * mm), img]
        if c.ended_at:
            story += [_p(_gaps_text(c.data_gaps, c.machine_id, f"cycle {c.cycle_id}")), *_gaps_table(c.data_gaps)]
    if d.unrecorded_process_data:
        # Data under this device code that no recorded cycle covers: said, never silence (issue 13).
        story += [_p("Process data without a recorded cycle", "Heading3"),
                  _p("Data was stored under this device code on these machines at times no recorded cycle covers: "
                     "a process step may have run without its cycle record."),
                  _table(["machine", "measurement", "from", "to", "minutes with data"],
                         [[u.machine_id, u.measurement, u.start, u.end, u.minutes] for u in d.unrecorded_process_data],
                         [35, 35, 40, 40, 30])]
    if d.local_overrides:
        # Data tagged by a local assignment instead of the server's job context: named with its interval.
        story += [_p("Data tagged by a local override", "Heading3"),
                  _p("In these intervals the agent tagged this device's data by a local assignment, not by the "
                     "server's job context; each is a nonconformity."),
                  _table(["NC", "machine", "local job", "from", "to", "reason", "state"],
                         [[o.nonconformity_id, o.machine_id or "", o.job, o.start, o.end or "not reported ended",
                           o.reason, o.state] for o in d.local_overrides], [12, 25, 22, 32, 32, 45, 22])]
    if d.unrecorded_check and d.unrecorded_check.startswith("not checked"):
        story.append(_p(f"Process data without a recorded cycle: {d.unrecorded_check}."))
    if not d.cycles:
        story.append(_p("No cycles recorded." if not d.unrecorded_process_data else
                        "No cycles recorded, although process data exists (above)."))
    story.append(_p("Manual steps", h2))
    story.append(_table(["step", "kind", "description", "result", "measurements", "signature"], [
        [s.step_id, _words(s.kind), s.description, s.result, "; ".join(
            f"{x['name']} {x['measured']:g} {x['unit']} ({'ok' if x['passed'] else 'OUT'})" for x in s.measurements),
         _sig(s.signature)] for s in d.manual_steps] or [["none", "", "", "", "", ""]], [12, 22, 40, 12, 45, 49]))
    story += [_p("Stage gates", h2), _table(["stage", "state", "performed", "result", "accepted", "judgement"], [
        [_words(s.stage), _words(s.state), _sig(s.performed), s.result, _sig(s.accepted), s.judgement]
        for s in d.stages],
        [22, 18, 45, 25, 45, 25])]
    story += [_p("Nonconformities", h2), _table(["id", "kind", "description", "state", "disposition", "signature"], [
        [n.nonconformity_id, _words(n.kind), n.description, _words(n.state),
         f"{n.disposition or '—'}: {n.rationale or ''}",
         _sig(n.signature)] for n in d.nonconformities] or [["none", "", "", "", "", ""]], [10, 22, 60, 18, 30, 40])]
    if d.related_nonconformities:
        story += [_p("Nonconformities of its machine, material lot or design", "Heading3"),
                  _table(["id", "on", "description", "state", "disposition", "signature"], [
                      [n.nonconformity_id, n.scope, n.description, n.state,
                       f"{n.disposition or '—'}: {n.rationale or ''}", _sig(n.signature)]
                      for n in d.related_nonconformities], [10, 22, 60, 18, 30, 40])]
    dl = d.delivery
    story += [_p("Delivery", h2), _p("not yet delivered" if dl is None or dl.state != "accepted" else
                                      f"delivered; accepted {_sig(dl.accepted)}: {dl.judgement}")]
    if d.retained_samples:
        story += [_p("Retained samples of the job", h2),
                  _table(["sample", "device code", "kind", "location", "condition", "kept until", "state", "last step"],
                         [[x.sample_id, x.device_code, x.kind, x.location, x.condition, x.retain_until, x.state,
                           x.last_step] for x in d.retained_samples], [12, 30, 14, 30, 25, 20, 16, 33])]
    if d.retention:
        r = d.retention
        story += [_p("Retention", h2), _p(f"Records kept until {r.retain_until} ({r.rule}: lifetime "
                                          f"{r.lifetime_years:g} years + {r.extra_years:g} years; {r.basis}).")]
    if d.seal:
        s = d.seal
        story += [_p("Sealed record", h2), _table(["field", "value"], [
            ["sealed", s.sealed_at], ["time range", f"{_t(s.range_start)} to {_t(s.range_end)}"],
            ["points", s.point_count], ["series SHA-256", s.series_sha256], ["records SHA-256", s.records_sha256],
            ["audit entry", s.audit_seq]], [35, 145])]
    if d.archive:
        a = d.archive
        if a.state == "missing":
            story += [_p("Archive", h2), _p(f"NOT WRITTEN YET. {a.full_resolution}.")]
        else:
            story += [_p("Archive", h2), _table(["field", "value"], [
                ["state", a.state.upper() if a.state != "written" else a.state], ["archive", a.archive_id],
                ["written", a.written_at], ["files", f"{a.files} ({(a.size_bytes or 0) / 1e6:.1f} MB)"],
                ["manifest SHA-256", a.manifest_sha256], ["location", a.location],
                ["full resolution", a.full_resolution]] + [["problem", p] for p in a.problems], [35, 145])]

    def _footer(canvas, document):
        canvas.setFont("Helvetica", 7)
        canvas.drawString(15 * mm, 8 * mm, f"DHR {d.device.device_code} - page {document.page} - generated "
                                           f"{_t(d.generated_at)}")

    doc.build(story, onFirstPage=_footer, onLaterPages=_footer)
    return out.getvalue()


def _gaps_text(gaps, machine_id: str, what: str) -> str:
    """One sentence on a machine's data gaps: a reader must never have to infer "none" from silence."""
    if not gaps:
        return f"Data gaps of {machine_id} during {what}: none recorded by its edge agent."
    lost = sum(1 for g in gaps if g.outcome != "recovered")
    return (f"Data gaps of {machine_id} during {what}: {len(gaps)}, of which {lost} with values lost "
            f"and {len(gaps) - lost} recovered in full.")


def _gaps_table(gaps) -> list:
    if not gaps:
        return []
    return [_table(["from", "to", "seconds", "outcome", "cause"], [
        [g.start, g.end, g.seconds, g.outcome.upper() if g.outcome != "recovered" else g.outcome, g.cause]
        for g in gaps], [35, 35, 18, 25, 67])]
