"""The delivery list as PDF: one block per device with its label data and its UDI as a GS1-128 barcode, and the
dispatch and acceptance signatures' manifestations (21 CFR 11.50), or a line to sign on when not yet accepted."""

from __future__ import annotations

import io
from typing import Any

from reportlab.graphics.barcode import createBarcodeDrawing
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, SimpleDocTemplate, Spacer

from server.history.schemas import SignatureManifest
from server.pdfkit import para, signature, table, text

FNC1 = "\xf1"  # reportlab's Code 128 writes FNC1 for this character
GS = "\x1d"


def gs1_128(element_string: str):
    """The UDI as a GS1-128 symbol: FNC1 first (that makes it GS1), FNC1 again where a variable-length field
    ends before another (the element string's GS)."""
    return createBarcodeDrawing("Code128", value=FNC1 + element_string.replace(GS, FNC1), barHeight=14 * mm,
                                barWidth=0.33 * mm, humanReadable=False, quiet=True)


def _manifest(m: Any) -> SignatureManifest | None:
    return None if m is None else SignatureManifest.model_validate(m)


def render_delivery_list_pdf(shipment: dict[str, Any]) -> bytes:
    """Render a delivery list (as service.view shows it) to PDF bytes."""
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                            bottomMargin=15 * mm, title=f"Delivery list {shipment['id']}", author="amtrace")
    story: list = [para(f"Delivery list {shipment['id']}", "Heading1"), table(["field", "value"], [
        ["to", f"{shipment['clinician']}, {shipment['institution']}"], ["state", shipment["state"]],
        ["dispatched", shipment["dispatched_at"] or "not yet"], ["note", shipment["note"] or "—"],
        ["list SHA-256", shipment["list_sha256"] or "fixed at dispatch"]], [35, 145])]
    for item in shipment["items"]:
        label = item["label"]
        block = [Spacer(1, 5 * mm), para(f"{label['device_code']}: {label['design']} (iteration "
                                       f"{label['design_iteration']})", "Heading3")]
        if label.get("udi_element_string"):
            block += [gs1_128(label["udi_element_string"]), para(label["udi_hri"])]
        else:
            block.append(para("No UDI: this device cannot be dispatched."))
        block.append(table(["label data", "value"], [
            ["", label["statement"]], ["intended use", label["intended_use"]],
            ["anatomical site", label["anatomical_site"]], ["imaging date", label["imaging_date"]],
            ["design completed", label["design_completed_on"]], ["material", label["material"]],
            ["surgery date", label["surgery_date"]],
            ["dispatched (performed)", signature(_manifest(item["dispatched"]))],
            ["received and accepted", signature(_manifest(item["accepted"])) if item["accepted"]
             else "signature: ______________________   date: ____________"]], [45, 135]))
        story.append(KeepTogether(block))
    story += [Spacer(1, 6 * mm), para(f"Printed {text(shipment.get('printed_at'))}. The electronic record is the "
                                    f"original; each signature above is an electronic signature in amtrace.")]
    doc.build(story)
    return out.getvalue()
