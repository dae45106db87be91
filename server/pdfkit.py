"""Building blocks of amtrace's printed records (DHR, delivery list): plain-text cells, tables, signatures."""

from __future__ import annotations

from datetime import datetime, timezone
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, Table, TableStyle

from server.history.schemas import SignatureManifest

STYLES = getSampleStyleSheet()


def text(value) -> str:
    """A value as printed: UTC times, 4 significant digits, a dash for none, yes/no, and mappings and lists in words
    (a printed record must never show Python's own notation: `None`, `{'x_mm': 40.0}`)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {text(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return "; ".join(text(v) for v in value) or "—"
    return str(value)


def signature(s: SignatureManifest | None) -> str:
    """A signature's manifestation in one line: printed name, role, meaning, time (21 CFR 11.50)."""
    return "—" if s is None else f"{s.printed_name} ({s.role}), {s.meaning}, {text(s.signed_at)}"


def para(words: str, style: str = "BodyText") -> Paragraph:
    """A paragraph of plain text (escaped)."""
    return Paragraph(escape(words), STYLES[style])


def table(header: list[str], rows: list[list], widths: list[float] | None = None) -> Table:
    """A gridded table with a shaded header row; widths in mm."""
    cell = STYLES["BodyText"].clone("cell", fontSize=7.5, leading=9)
    data = [[Paragraph(f"<b>{escape(h)}</b>", cell) for h in header]] + [
        [Paragraph(escape(text(v)), cell) for v in r] for r in rows]
    t = Table(data, colWidths=[w * mm for w in widths] if widths else None, repeatRows=1)
    t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
                           ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")),
                           ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return t
